package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"dkimd/internal/config"
	"dkimd/internal/domainname"
	"dkimd/internal/keystore"
	"dkimd/internal/provision"
)

// openService parses the flags and opens the store, migrated, with the KEK:
// what every store-level subcommand needs.
func openService(ctx context.Context, name string, args []string, getenv func(string) string, stderr io.Writer) (*provision.Service, *keystore.SQL, []string, error) {
	cfg, rest, err := config.Parse("dkimd "+name, args, getenv, stderr)
	if err != nil {
		return nil, nil, nil, err
	}
	logger := newLogger(cfg, stderr)
	store, err := openStore(ctx, cfg, logger)
	if err != nil {
		return nil, nil, nil, err
	}
	box, err := loadKEK(cfg, logger)
	if err != nil {
		store.Close()
		return nil, nil, nil, err
	}
	svc := &provision.Service{Store: store, Box: box, Keys: provision.DirectGenerator{}, Zone: cfg.Zone, Now: time.Now}
	return svc, store, rest, nil
}

func migrate(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, rest, err := config.Parse("dkimd migrate", args, getenv, stderr)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{"migrate takes no arguments"}
	}
	store, err := openStore(ctx, cfg, newLogger(cfg, stderr))
	if err != nil {
		return err
	}
	return store.Close()
}

var cliActor = provision.Actor{Name: "cli"}

func brandCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"brand: want create, list, delete or rotate-secret"}
	}
	verb := args[0]
	svc, store, rest, err := openService(ctx, "brand "+verb, args[1:], getenv, stderr)
	if err != nil {
		return err
	}
	defer store.Close()
	want := map[string]int{"create": 1, "list": 0, "delete": 1, "rotate-secret": 1}
	n, ok := want[verb]
	if !ok {
		return usageError{fmt.Sprintf("brand: unknown verb %q", verb)}
	}
	if len(rest) != n {
		return usageError{fmt.Sprintf("brand %s takes %d argument(s)", verb, n)}
	}
	switch verb {
	case "create":
		secret, err := svc.CreateBrand(ctx, rest[0], cliActor)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "created brand %s; its secret follows on stdout and is not shown again\n", rest[0])
		fmt.Fprintln(stdout, secret)
	case "rotate-secret":
		secret, err := svc.RotateSecret(ctx, rest[0], cliActor)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "new secret of brand %s follows on stdout; the old one no longer works\n", rest[0])
		fmt.Fprintln(stdout, secret)
	case "delete":
		if err := svc.DeleteBrand(ctx, rest[0], cliActor); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "deleted brand %s\n", rest[0])
	case "list":
		brands, err := store.Brands(ctx)
		if err != nil {
			return err
		}
		for _, b := range brands {
			n, err := store.CountDomains(ctx, b.Name)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s\t%d domains\tcreated %s\n", b.Name, n, b.CreatedAt.Format(time.RFC3339))
		}
	}
	return nil
}

func maildomainCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"maildomain: want add, remove or list"}
	}
	verb := args[0]
	svc, store, rest, err := openService(ctx, "maildomain "+verb, args[1:], getenv, stderr)
	if err != nil {
		return err
	}
	defer store.Close()
	want := map[string]int{"add": 2, "remove": 2, "list": 1}
	n, ok := want[verb]
	if !ok {
		return usageError{fmt.Sprintf("maildomain: unknown verb %q", verb)}
	}
	if len(rest) != n {
		return usageError{fmt.Sprintf("maildomain %s takes %d argument(s)", verb, n)}
	}
	if verb == "list" {
		domains, err := store.Maildomains(ctx, rest[0])
		if err != nil {
			return err
		}
		for _, d := range domains {
			fmt.Fprintln(stdout, d)
		}
		return nil
	}
	domain, err := domainname.Normalize(rest[1], svc.Zone)
	if err != nil {
		return fmt.Errorf("maildomain %s: %w", verb, err)
	}
	if verb == "add" {
		err = svc.AddMaildomain(ctx, rest[0], domain, cliActor)
	} else {
		err = svc.RemoveMaildomain(ctx, rest[0], domain, cliActor)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "maildomain %s %s for brand %s\n", domain, map[string]string{"add": "added", "remove": "removed"}[verb], rest[0])
	return nil
}
