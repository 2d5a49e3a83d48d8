package keystore_test

import (
	"context"
	"slices"
	"testing"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
)

func TestMaildomainBrands(t *testing.T) {
	keystoretest.ForEach(t, func(t *testing.T, s *keystore.SQL) {
		ctx := context.Background()
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
		for _, tc := range []struct {
			domain string
			want   []string
		}{
			{"shared.example", []string{"acme", "zeta"}},
			{"acme.example", []string{"acme"}},
			{"unknown.example", nil},
			{"ACME.example", nil}, // callers pass normalised names; no case folding here
		} {
			t.Run(tc.domain, func(t *testing.T) {
				got, err := s.MaildomainBrands(ctx, tc.domain)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, tc.want) {
					t.Fatalf("MaildomainBrands(%q) = %q, want %q", tc.domain, got, tc.want)
				}
			})
		}
	})
}
