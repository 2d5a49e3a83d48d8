package domainname_test

import (
	"testing"

	"dkimd/internal/domainname"
)

func TestNames(t *testing.T) {
	for _, c := range []struct{ name, got, want string }{
		{"TXT owner", domainname.TXTOwner(domainname.Selector1, "spamtrap.dk", "oxcloud.zone"), "selector1-spamtrap-dk._domainkey.oxcloud.zone"},
		{"Ed25519 TXT owner", domainname.TXTOwner(domainname.Selector2Ed25519, "a.b.example", "oxcloud.zone"), "selector2-ed25519-a-b-example._domainkey.oxcloud.zone"},
		{"brand TXT owner", domainname.BrandTXTOwner(domainname.Selector2, "acme", "oxcloud.zone"), "selector2._domainkey.acme.oxcloud.zone"},
		{"brand signing domain", domainname.BrandSigningDomain("acme", "oxcloud.zone"), "acme.oxcloud.zone"},
		{"CNAME name", domainname.CNAMEName(domainname.Selector1, "spamtrap.dk"), "selector1._domainkey.spamtrap.dk"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("got %q, want %q", c.got, c.want)
			}
		})
	}
}

func TestSelectorOrder(t *testing.T) {
	for i, s := range domainname.AllSelectors {
		if domainname.SelectorRank(s) != i {
			t.Errorf("rank of %s = %d, want %d", s, domainname.SelectorRank(s), i)
		}
	}
	if r := domainname.SelectorRank("selector3"); r != len(domainname.AllSelectors) {
		t.Errorf("unknown selector ranks %d", r)
	}
	if p := domainname.SelectorPair(false); p != [2]string{"selector1", "selector2"} {
		t.Errorf("RSA pair %v", p)
	}
	if p := domainname.SelectorPair(true); p != [2]string{"selector1-ed25519", "selector2-ed25519"} {
		t.Errorf("Ed25519 pair %v", p)
	}
	// The longest selector bounds the label (CheckLabelFits).
	if domainname.LongestSelector(true) != domainname.Selector2Ed25519 || domainname.LongestSelector(false) != domainname.Selector2 {
		t.Error("LongestSelector disagrees with the selector set")
	}
}
