// Command dkimd is the DKIM key service: `dkimd serve` runs every listener;
// the other subcommands act directly on the configured store (the
// command line of docs/operator-guide.md, a fixed contract).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usageHead = `usage: dkimd COMMAND [flags]

commands:
`

const usageTail = `  version                                print the version
  help [COMMAND]                         this text, or a command's flags

"dkimd COMMAND --help" lists the flags a command reads; every command also
accepts serve's flags and ignores those it does not use.
Exit status: 0 done, 1 failed, 2 usage error.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dkimd:", err)
		os.Exit(exitCode(err))
	}
}

// usageError marks a command line that was not understood (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// Exit codes (documented in the usage text and docs/operator-guide.md).
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

func exitCode(err error) int {
	var u usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &u):
		return exitUsage
	}
	return exitFailed
}

// run is main without the process: tests call it directly. A request for
// help is answered on stdout and is no error.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		printUsage(stderr)
		return usageError{"no command given"}
	}
	switch args[0] {
	case "version":
		fmt.Fprintln(stdout, "dkimd", version)
		return nil
	case "help", "-h", "-help", "--help":
		return help(args[1:], stdout)
	}
	if len(args) > 1 && isHelpFlag(args[1]) {
		return help(args[:1], stdout)
	}
	cmd, rest, err := findCommand(args)
	if err != nil {
		if !printGroup(stderr, args[0]) {
			printUsage(stderr)
		}
		return err
	}
	return cmd.run(ctx, rest, getenv, stdout, stderr)
}

// findCommand picks the command named by the first one or two words of args
// and returns the rest of args.
func findCommand(args []string) (*command, []string, error) {
	name := args[0]
	var verbs []string
	for i := range commands {
		c := &commands[i]
		group, verb, grouped := strings.Cut(c.name, " ")
		switch {
		case !grouped && c.name == name:
			return c, args[1:], nil
		case grouped && group == name:
			if len(args) > 1 && args[1] == verb {
				return c, args[2:], nil
			}
			verbs = append(verbs, verb)
		}
	}
	if len(verbs) == 0 {
		return nil, nil, usageError{fmt.Sprintf("unknown command %q", name)}
	}
	if len(args) > 1 && !isHelpFlag(args[1]) {
		return nil, nil, usageError{fmt.Sprintf("%s: unknown verb %q; want %s", name, args[1], strings.Join(verbs, ", "))}
	}
	return nil, nil, usageError{fmt.Sprintf("%s: want %s", name, strings.Join(verbs, ", "))}
}

func isHelpFlag(s string) bool {
	switch s {
	case "-h", "-help", "--help":
		return true
	}
	return false
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, usageHead)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-38s %s\n", c.synopsis(), c.about)
	}
	fmt.Fprint(w, usageTail)
}

// help answers `dkimd help [COMMAND…]`: the overview, or one command's
// flags. It reads and writes nothing but w.
func help(args []string, w io.Writer) error {
	if len(args) == 0 {
		printUsage(w)
		return nil
	}
	if args[0] == "version" || args[0] == "help" {
		printUsage(w)
		return nil
	}
	cmd, _, err := findCommand(args)
	if err != nil {
		// "dkimd help brand": every brand verb.
		if printGroup(w, args[0]) {
			return nil
		}
		return err
	}
	cmd.printHelp(w)
	return nil
}

// printGroup lists the verbs of a command group such as brand, and reports
// whether group is one.
func printGroup(w io.Writer, group string) bool {
	found := false
	for _, c := range commands {
		if g, _, ok := strings.Cut(c.name, " "); ok && g == group {
			if !found {
				fmt.Fprintf(w, "usage: dkimd %s VERB [flags]\n\n", group)
			}
			found = true
			fmt.Fprintf(w, "  %-38s %s\n", c.synopsis(), c.about)
		}
	}
	return found
}
