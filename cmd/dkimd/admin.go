package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"dkimd/internal/domainname"
	"dkimd/internal/keystore"
	"dkimd/internal/provision"
)

// cliActor is who the audit log names for a change made with the CLI.
var cliActor = provision.Actor{Name: "cli"}

// service is what a store-level subcommand acts through: the provisioning
// rules on the existing store. Only brand create seals a key, so only it
// loads the KEK (withKEK).
func service(ctx context.Context, inv *invocation, withKEK bool) (*provision.Service, *keystore.SQL, error) {
	store, err := openExistingStore(ctx, inv.cfg, inv.log)
	if err != nil {
		return nil, nil, err
	}
	svc := &provision.Service{Store: store, Keys: provision.DirectGenerator{}, Zone: inv.cfg.Zone, Now: time.Now}
	if withKEK {
		if svc.Box, err = loadKEK(ctx, inv.cfg, store); err != nil {
			store.Close()
			return nil, nil, err
		}
	}
	return svc, store, nil
}

func migrate(ctx context.Context, inv *invocation) error {
	store, err := openStore(ctx, inv.cfg, inv.log)
	if err != nil {
		return err
	}
	if err := migrateStore(ctx, store, inv.log); err != nil {
		store.Close()
		return err
	}
	return store.Close()
}

func brandCreate(ctx context.Context, inv *invocation) error {
	name := inv.args[0]
	if err := domainname.ValidBrand(name); err != nil {
		return fail(err, "brand %q: %v", name, err)
	}
	svc, store, err := service(ctx, inv, true)
	if err != nil {
		return err
	}
	defer store.Close()
	secret, err := svc.CreateBrand(ctx, name, cliActor)
	if errors.Is(err, keystore.ErrConflict) {
		return fail(err, "brand %q already exists", name)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(inv.stderr, "created brand %s; its secret follows on stdout and is not shown again\n", name)
	fmt.Fprintln(inv.stdout, secret)
	return nil
}

func brandRotateSecret(ctx context.Context, inv *invocation) error {
	name := inv.args[0]
	svc, store, err := service(ctx, inv, false)
	if err != nil {
		return err
	}
	defer store.Close()
	secret, err := svc.RotateSecret(ctx, name, cliActor)
	if errors.Is(err, keystore.ErrNotFound) {
		return noSuchBrand(err, name)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(inv.stderr, "new secret of brand %s follows on stdout; the old one no longer works\n", name)
	fmt.Fprintln(inv.stdout, secret)
	return nil
}

func brandDelete(ctx context.Context, inv *invocation) error {
	name := inv.args[0]
	svc, store, err := service(ctx, inv, false)
	if err != nil {
		return err
	}
	defer store.Close()
	err = svc.DeleteBrand(ctx, name, cliActor)
	switch {
	case errors.Is(err, keystore.ErrNotFound):
		return noSuchBrand(err, name)
	case errors.Is(err, keystore.ErrConflict):
		n, cerr := store.CountDomains(ctx, name)
		if cerr != nil {
			return fail(err, "brand %q still holds DKIM domains: delete them first", name)
		}
		return fail(err, "brand %q still holds %d DKIM domain(s): delete them first", name, n)
	case err != nil:
		return err
	}
	fmt.Fprintf(inv.stderr, "deleted brand %s\n", name)
	return nil
}

func brandList(ctx context.Context, inv *invocation) error {
	store, err := openExistingStore(ctx, inv.cfg, inv.log)
	if err != nil {
		return err
	}
	defer store.Close()
	brands, err := store.Brands(ctx)
	if err != nil {
		return err
	}
	if len(brands) == 0 {
		fmt.Fprintln(inv.stderr, "no brands")
		return nil
	}
	for _, b := range brands {
		n, err := store.CountDomains(ctx, b.Name)
		if err != nil {
			return err
		}
		fmt.Fprintf(inv.stdout, "%s\t%d domains\tcreated %s\n", b.Name, n, b.CreatedAt.Format(time.RFC3339))
	}
	return nil
}

func maildomainList(ctx context.Context, inv *invocation) error {
	brand := inv.args[0]
	store, err := openExistingStore(ctx, inv.cfg, inv.log)
	if err != nil {
		return err
	}
	defer store.Close()
	if _, err := store.Brand(ctx, brand); errors.Is(err, keystore.ErrNotFound) {
		return noSuchBrand(err, brand)
	} else if err != nil {
		return err
	}
	domains, err := store.Maildomains(ctx, brand)
	if err != nil {
		return err
	}
	if len(domains) == 0 {
		fmt.Fprintf(inv.stderr, "no maildomains for brand %s\n", brand)
		return nil
	}
	for _, d := range domains {
		fmt.Fprintln(inv.stdout, d)
	}
	return nil
}

// maildomainArgs normalises DOMAIN and checks that BRAND exists.
func maildomainArgs(ctx context.Context, inv *invocation, store keystore.Reader) (brand, domain string, err error) {
	brand = inv.args[0]
	domain, err = domainname.Normalize(inv.args[1], inv.cfg.Zone)
	if err != nil {
		return "", "", fail(err, "maildomain %q: %v", inv.args[1], err)
	}
	if _, err := store.Brand(ctx, brand); errors.Is(err, keystore.ErrNotFound) {
		return "", "", noSuchBrand(err, brand)
	} else if err != nil {
		return "", "", err
	}
	return brand, domain, nil
}

func maildomainAdd(ctx context.Context, inv *invocation) error {
	svc, store, err := service(ctx, inv, false)
	if err != nil {
		return err
	}
	defer store.Close()
	brand, domain, err := maildomainArgs(ctx, inv, store)
	if err != nil {
		return err
	}
	err = svc.AddMaildomain(ctx, brand, domain, cliActor)
	if errors.Is(err, keystore.ErrConflict) {
		return fail(err, "maildomain %s is already registered for brand %s", domain, brand)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(inv.stderr, "maildomain %s added for brand %s\n", domain, brand)
	return nil
}

// maildomainRemove refuses while the brand holds DKIM keys for the domain:
// they would stay published and every message from the domain would be
// refused for signing (docs/operator-guide.md, the CLI). With --force the
// same transaction first deletes them as the brand API's DELETE does.
func maildomainRemove(ctx context.Context, inv *invocation) error {
	svc, store, err := service(ctx, inv, false)
	if err != nil {
		return err
	}
	defer store.Close()
	brand, domain, err := maildomainArgs(ctx, inv, store)
	if err != nil {
		return err
	}
	if ok, err := store.IsMaildomain(ctx, brand, domain); err != nil {
		return err
	} else if !ok {
		return fail(nil, "%s is not a maildomain of brand %s", domain, brand)
	}
	err = svc.RemoveMaildomain(ctx, brand, domain, inv.force, cliActor)
	var hasKeys *provision.HasKeysError
	switch {
	case errors.As(err, &hasKeys):
		return fail(nil, "maildomain %s of brand %s holds DKIM keys (%s): delete them first (DELETE /cloudapi/v2/mail/dkim/%s/%s) or use --force",
			domain, brand, strings.Join(hasKeys.Selectors, ", "), brand, domain)
	case errors.Is(err, keystore.ErrNotFound):
		return fail(err, "%s is not a maildomain of brand %s", domain, brand)
	case err != nil:
		return err
	}
	fmt.Fprintf(inv.stderr, "maildomain %s removed for brand %s\n", domain, brand)
	return nil
}

func noSuchBrand(cause error, name string) error {
	return fail(cause, "no such brand %q", name)
}
