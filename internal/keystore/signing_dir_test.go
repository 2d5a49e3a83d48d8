package keystore_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
)

func TestEachMaildomain(t *testing.T) {
	keystoretest.ForEach(t, func(t *testing.T, s *keystore.SQL) {
		ctx := context.Background()
		each := func() ([][2]string, error) {
			var got [][2]string
			err := s.EachMaildomain(ctx, func(domain, brand string) error {
				got = append(got, [2]string{domain, brand})
				return nil
			})
			slices.SortFunc(got, func(a, b [2]string) int { return slices.Compare(a[:], b[:]) })
			return got, err
		}
		if got, err := each(); err != nil || len(got) != 0 {
			t.Fatalf("empty store: %q, %v", got, err)
		}
		seedBrand(t, s, "zeta")
		seedBrand(t, s, "acme")
		mustUpdate(t, s, func(tx keystore.Tx) error {
			for _, m := range [][2]string{{"zeta", "shared.example"}, {"acme", "shared.example"}, {"acme", "acme.example"}} {
				if err := tx.AddMaildomain(ctx, m[0], m[1]); err != nil {
					return err
				}
			}
			return nil
		})
		got, err := each()
		if err != nil {
			t.Fatal(err)
		}
		want := [][2]string{{"acme.example", "acme"}, {"shared.example", "acme"}, {"shared.example", "zeta"}}
		if !slices.Equal(got, want) {
			t.Fatalf("EachMaildomain = %q, want %q", got, want)
		}

		// fn's error stops the scan and comes back as it is.
		stop := errors.New("stop")
		n := 0
		err = s.EachMaildomain(ctx, func(string, string) error { n++; return stop })
		if err != stop || n != 1 {
			t.Fatalf("after fn failed: err %v after %d calls, want %v after 1", err, n, stop)
		}

		// A store that is gone says so.
		s.Close()
		err = s.EachMaildomain(ctx, func(string, string) error { return nil })
		if err == nil {
			t.Fatal("closed store: no error")
		}
	})
}
