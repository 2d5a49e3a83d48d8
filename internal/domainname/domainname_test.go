package domainname

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{in: "spamtrap.dk", want: "spamtrap.dk"},
		{in: "SpamTrap.DK.", want: "spamtrap.dk"},
		{in: "  mail.example.com ", want: "mail.example.com"},
		{in: "bücher.de", want: "xn--bcher-kva.de"},
		{in: "xn--bcher-kva.de", want: "xn--bcher-kva.de"},
		{in: "a-b.dk", want: "a-b.dk"},
		{in: "", bad: true},
		{in: ".", bad: true},
		{in: "localhost", bad: true},
		{in: "*.example.com", bad: true},
		{in: "192.0.2.1", bad: true},
		{in: "[2001:db8::1]", bad: true},
		{in: "2001:db8::1", bad: true},
		{in: "exa_mple.com", bad: true},
		{in: "-bad.com", bad: true},
		{in: "bad-.com", bad: true},
		{in: "a..b.com", bad: true},
		{in: "foo.oxcloud.zone", bad: true},
		{in: "oxcloud.zone", bad: true},
		{in: "ex ample.com", bad: true},
		{in: "example.123", bad: true},
		{in: strings.Repeat("a", 64) + ".com", bad: true},
		{in: strings.Repeat("abcdefghi.", 26) + "com", bad: true},
		{in: "héllo\x00.com", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Normalize(tc.in, "oxcloud.zone")
			if tc.bad {
				var inv *Invalid
				if !errors.As(err, &inv) {
					t.Fatalf("Normalize(%q) = %q, %v; want *Invalid", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Normalize(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestLabelAndLength(t *testing.T) {
	if got := Label("spamtrap.dk"); got != "spamtrap-dk" {
		t.Fatalf("Label = %q", got)
	}
	l53 := strings.Repeat("a", 53)
	if err := CheckLabelFits(l53, false); err != nil {
		t.Fatalf("53 octets refused: %v", err)
	}
	if err := CheckLabelFits(l53+"a", false); !errors.Is(err, ErrLabelTooLong) {
		t.Fatalf("54 octets: %v", err)
	}
	if err := CheckLabelFits(strings.Repeat("a", 45), true); err != nil {
		t.Fatalf("45 octets with ed25519 refused: %v", err)
	}
	if err := CheckLabelFits(strings.Repeat("a", 46), true); !errors.Is(err, ErrLabelTooLong) {
		t.Fatalf("46 octets with ed25519: %v", err)
	}
}

func TestValidBrand(t *testing.T) {
	for name, ok := range map[string]bool{"acme": true, "acme-2": true, "a": true, "": false, "Acme": false, "-a": false, "a-": false, "a.b": false, strings.Repeat("a", 64): false} {
		if err := ValidBrand(name); (err == nil) != ok {
			t.Errorf("ValidBrand(%q) = %v", name, err)
		}
	}
}
