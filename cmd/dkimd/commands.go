package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"dkimd/internal/config"
	"dkimd/internal/domainname"
	"dkimd/internal/keystore"
)

// command is one subcommand: what it is called, which arguments and flag
// groups it takes, and what it does. Each reads only the flags of its groups,
// so its --help lists only those, and it opens only what it uses.
type command struct {
	name  string   // "serve", "brand create"
	args  []string // names of the positional arguments
	about string
	flags config.Group
	// own declares the command's own flags (maildomain remove --force) on
	// fs, bound to inv.
	own func(fs *flag.FlagSet, inv *invocation)
	do  func(ctx context.Context, inv *invocation) error
	// rawErrors passes the command's errors through as they are: serve's
	// name the flag or subsystem that failed, and it logs the rest.
	rawErrors bool
}

// invocation is one run of a command.
type invocation struct {
	cfg            config.Config
	args           []string
	force          bool
	getenv         func(string) string
	stdout, stderr io.Writer
	log            *slog.Logger
}

// commands is the command line of docs/operator-guide.md, "Configure": scripts rely on the names.
var commands = []command{
	{name: "serve", about: "run all listeners", flags: config.AllFlags, do: serve, rawErrors: true},
	{name: "migrate", about: "apply database migrations and exit", flags: config.StoreFlags, do: migrate},
	{name: "brand create", args: []string{"BRAND"}, about: "create a brand; prints its secret once on stdout",
		flags: config.StoreFlags | config.KEKFlags, do: brandCreate},
	{name: "brand list", about: "list the brands", flags: config.StoreFlags, do: brandList},
	{name: "brand delete", args: []string{"BRAND"}, about: "delete a brand that holds no DKIM domains",
		flags: config.StoreFlags, do: brandDelete},
	{name: "brand rotate-secret", args: []string{"BRAND"}, about: "issue a brand a new secret; prints it once on stdout",
		flags: config.StoreFlags, do: brandRotateSecret},
	{name: "maildomain add", args: []string{"BRAND", "DOMAIN"}, about: "register a maildomain of a brand",
		flags: config.StoreFlags | config.ZoneFlags, do: maildomainAdd},
	{name: "maildomain remove", args: []string{"BRAND", "DOMAIN"}, about: "unregister a maildomain (--force: delete its DKIM keys first)",
		flags: config.StoreFlags | config.ZoneFlags, do: maildomainRemove,
		own: func(fs *flag.FlagSet, inv *invocation) {
			fs.BoolVar(&inv.force, "force", false, "delete the domain's DKIM keys first, as DELETE /cloudapi/v2/mail/dkim/{brand}/{domain} does")
		}},
	{name: "maildomain list", args: []string{"BRAND"}, about: "list a brand's maildomains", flags: config.StoreFlags, do: maildomainList},
}

func (c *command) synopsis() string {
	return strings.TrimSpace(c.name + " " + strings.Join(c.args, " "))
}

// flagSet declares the command's flags on a fresh FlagSet. The flag package
// prints nothing itself: help goes to stdout and errors through main, once.
//
// With accepting, serve's other flags are declared too, bound to nothing,
// neither read from the environment nor validated: one command line of flags
// still serves every subcommand (docs/operator-guide.md, "Configure"), while a command
// reads, checks and lists only its own.
func (c *command) flagSet(getenv func(string) string, inv *invocation, accepting bool) (*flag.FlagSet, func() error) {
	fs := flag.NewFlagSet("dkimd "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var cfg config.Config
	finish := cfg.Flags(fs, c.flags, getenv)
	// Declared after the config flags, so that no environment variable
	// sets them: DKIMD_FORCE must not make every remove forced.
	if c.own != nil {
		c.own(fs, inv)
	}
	if other := config.AllFlags &^ c.flags; accepting && other != 0 {
		var ignored config.Config
		_ = ignored.Flags(fs, other, func(string) string { return "" })
	}
	return fs, func() error {
		err := finish()
		inv.cfg = cfg
		return err
	}
}

// printHelp writes the command's synopsis and its flags. It declares the
// flags with an empty environment, so help shows the built-in defaults and
// reads nothing.
func (c *command) printHelp(w io.Writer) {
	fs, _ := c.flagSet(func(string) string { return "" }, &invocation{}, false)
	fmt.Fprintf(w, "usage: dkimd %s [flags]\n\n%s\n\nflags:\n", c.synopsis(), c.about)
	config.PrintFlags(w, fs)
}

// run parses args, checks the positional arguments, and does the command.
// Failures come back as one human line; the cause is logged at debug level.
func (c *command) run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	inv := &invocation{getenv: getenv, stdout: stdout, stderr: stderr}
	fs, finish := c.flagSet(getenv, inv, true)
	rest, err := config.ParseArgs(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		c.printHelp(stdout)
		return nil
	}
	if err != nil {
		return usageError{fmt.Sprintf("%s: %v (see dkimd %s --help)", c.name, err, c.name)}
	}
	if err := finish(); err != nil {
		return usageError{err.Error()}
	}
	if len(rest) != len(c.args) {
		return usageError{fmt.Sprintf("usage: dkimd %s [flags]", c.synopsis())}
	}
	inv.args = rest
	inv.log = newLogger(inv.cfg, stderr)
	err = c.do(ctx, inv)
	if err == nil {
		return nil
	}
	inv.log.Debug("command failed", slog.String("command", c.name), slog.String("err", causeText(err)))
	if c.rawErrors {
		return err
	}
	return humanError(err)
}

// failure is an error whose message is meant for the operator, one line,
// with its cause kept for the debug log.
type failure struct {
	msg   string
	cause error
}

func (f failure) Error() string { return f.msg }
func (f failure) Unwrap() error { return f.cause }

// causeText is the whole chain of err, the human line and its cause.
func causeText(err error) string {
	var f failure
	if errors.As(err, &f) && f.cause != nil {
		return f.msg + ": " + f.cause.Error()
	}
	return err.Error()
}

func fail(cause error, format string, args ...any) error {
	return failure{msg: fmt.Sprintf(format, args...), cause: cause}
}

// humanError keeps errors already meant for the operator and turns anything
// else into a line that names no SQL or driver detail.
func humanError(err error) error {
	var f failure
	var u usageError
	switch {
	case errors.As(err, &f):
		return f
	case errors.As(err, &u):
		return u
	case errors.Is(err, context.Canceled):
		return errors.New("interrupted")
	case errors.Is(err, keystore.ErrUnavailable):
		return errors.New("the database is unavailable (--log-level debug shows why)")
	}
	var bad *domainname.Invalid
	if errors.As(err, &bad) {
		return bad
	}
	return errors.New("failed (--log-level debug shows why)")
}
