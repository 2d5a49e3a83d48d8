package signer_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
	"dkimd/internal/provision"
	"dkimd/internal/provision/provisiontest"
	"dkimd/internal/signer"
)

// TestWatchSeesOtherReplicas: two stores on one Postgres stand for two
// replicas. A rotation committed through the other one reaches this
// signer through the store's Watch (NOTIFY), long before its MaxAge.
func TestWatchSeesOtherReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := keystoretest.PostgresURL(t)
	here, other := keystoretest.OpenPostgres(t, url), keystoretest.OpenPostgres(t, url)
	svc := provisiontest.Service(t, other, "oxcloud.zone", nil)
	actor := provision.Actor{Name: "test"}
	if _, err := svc.CreateBrand(ctx, "acme", actor); err != nil {
		t.Fatal(err)
	}
	if err := svc.AddMaildomain(ctx, "acme", "example.com", actor); err != nil {
		t.Fatal(err)
	}
	s, err := signer.New(signer.Options{Store: here, Box: svc.Box, Zone: "oxcloud.zone", MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	here.Watch(ctx, s.Invalidate)

	msg := "From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n"
	selector := func() string {
		t.Helper()
		res, err := s.Sign(ctx, strings.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		return res.Selectors()[0]
	}
	if got := selector(); got != provision.Selector1 {
		t.Fatalf("signed with %s, want selector1", got)
	}
	// The other replica rotates the brand key: selector2 active.
	err = other.Update(ctx, func(tx keystore.Tx) error {
		keys, err := tx.Keys(ctx, keystore.OwnerBrand, "acme")
		if err != nil {
			return err
		}
		for _, k := range keys {
			if k.Selector == provision.Selector1 {
				k.State = keystore.StateRetiring
			} else {
				k.State = keystore.StateActive
			}
			if err := tx.PutKey(ctx, k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if selector() == provision.Selector2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the other replica's rotation did not reach the signer within 10 s")
		}
	}
}
