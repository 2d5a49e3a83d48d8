// Command dkimd is the DKIM key service: `dkimd serve` runs every listener;
// the other subcommands act directly on the configured store (SPEC.md
// "Command line", a fixed contract).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `usage: dkimd COMMAND [flags]

commands:
  serve                                  run all listeners
  migrate                                apply database migrations and exit
  brand create BRAND                     create a brand; prints its secret once on stdout
  brand list | delete BRAND | rotate-secret BRAND
  maildomain add BRAND DOMAIN | remove BRAND DOMAIN | list BRAND
  version

Every command takes the same flags; run "dkimd serve --help" to list them.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "dkimd:", err)
		}
		os.Exit(exitCode(err))
	}
}

// usageError marks a command line that was not understood (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

// run is main without the process: tests call it directly.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{"no command given"}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return serve(ctx, rest, getenv, stderr)
	case "migrate":
		return migrate(ctx, rest, getenv, stderr)
	case "brand":
		return brandCmd(ctx, rest, getenv, stdout, stderr)
	case "maildomain":
		return maildomainCmd(ctx, rest, getenv, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "dkimd", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}
