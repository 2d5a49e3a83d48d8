// Command dkimd-standin-resolver stands in for "public DNS" on a machine with
// no internet, so that the brand guide (docs/brand-guide.md) can be walked
// from start to end on one host (make demo). It is a tiny recursive
// resolver with two sources: names in dkimd's zone are forwarded to dkimd's
// own DNS server, and every other name is answered from a customers' zone
// file — the CNAMEs a customer creates in their DNS — that it reads again
// whenever the file changes. It is a demo and test tool, not a resolver for
// production: it caches nothing and knows no other name.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "dkimd-standin-resolver:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("dkimd-standin-resolver", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:5354", "address to answer on, UDP and TCP")
	forward := fs.String("forward", "127.0.0.1:5353", "dkimd's DNS server, asked for names in --zone")
	zone := fs.String("zone", "oxcloud.zone", "dkimd's zone")
	records := fs.String("records", "customer.zone", "zone file of the customers' records (master file syntax, absolute names); read again when it changes")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	r := &Resolver{Zone: *zone, Forward: *forward, Records: *records, Log: log}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := r.Listen(*listen)
	if err != nil {
		return err
	}
	log.Info("stand-in resolver up", slog.String("listen", *listen), slog.String("forward", *forward),
		slog.String("zone", *zone), slog.String("records", *records))
	<-ctx.Done()
	return srv.Close()
}
