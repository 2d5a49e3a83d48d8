package zone

import (
	"bytes"
	"slices"
	"testing"

	"github.com/miekg/dns"

	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
)

// TestKeyRendererMatchesRecordOf: the full load renders keys with
// keyRenderer and addKey, incremental updates with RecordOf and add. Both
// must give the same names and the same answer bytes, for every kind of key
// record, including values that end exactly on a 255-octet string boundary.
func TestKeyRendererMatchesRecordOf(t *testing.T) {
	key := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*31 + n)
		}
		return b
	}
	recs := []keystore.ZoneRecord{
		{Kind: keystore.OwnerDomain, Owner: "example.com", Label: "example-com", Selector: "selector1", State: keystore.StateActive, Algorithm: dkimkey.RSA, PublicKey: key(294)},
		{Kind: keystore.OwnerDomain, Owner: "example.com", Label: "example-com", Selector: "selector2", State: keystore.StateNext, Algorithm: dkimkey.RSA, PublicKey: key(550)},
		{Kind: keystore.OwnerDomain, Owner: "example.com", Label: "example-com", Selector: "selector1-ed25519", State: keystore.StateActive, Algorithm: dkimkey.Ed25519, PublicKey: key(32)},
		{Kind: keystore.OwnerDomain, Owner: "b.example", Label: "b-example", Selector: "selector1", State: keystore.StateRevoked, Algorithm: dkimkey.RSA, PublicKey: key(294)},
		// "v=DKIM1; k=rsa; p=" and 492 base64 characters: exactly two strings.
		{Kind: keystore.OwnerDomain, Owner: "c.example", Label: "c-example", Selector: "selector1", State: keystore.StateActive, Algorithm: dkimkey.RSA, PublicKey: key(369)},
		{Kind: keystore.OwnerBrand, Owner: "acme", Selector: "selector1", State: keystore.StateActive, Algorithm: dkimkey.RSA, PublicKey: key(294)},
		{Kind: keystore.OwnerBrand, Owner: "acme", Selector: "selector2", State: keystore.StateRevoked, Algorithm: dkimkey.RSA},
		{Kind: keystore.OwnerDomain, Owner: "gone.example", Selector: "selector1", State: keystore.StateActive, Algorithm: dkimkey.RSA, PublicKey: key(294)},
	}
	viaRecord, err := newBuilder(testParams)
	if err != nil {
		t.Fatal(err)
	}
	viaKey, err := newBuilder(testParams)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []*builder{viaRecord, viaKey} {
		if err := b.begin(1, true); err != nil {
			t.Fatal(err)
		}
	}
	var kr keyRenderer
	var names []string
	for _, r := range recs {
		rec, ok := RecordOf(r, testParams.Zone)
		name, nameOK := recordName(r, testParams.Zone)
		if ok != nameOK || rec.Name != name {
			t.Fatalf("%+v: RecordOf names %q (%v), recordName %q (%v)", r, rec.Name, ok, name, nameOK)
		}
		if ok {
			got, err := kr.render(ttl(testParams.TTL), r)
			if err != nil {
				t.Fatal(err)
			}
			// Read back by miekg/dns: one TXT record whose strings are
			// SplitTXT's cut of the value RecordOf gives.
			ans, _, _, err := unrender(name, dns.TypeTXT, got)
			if err != nil {
				t.Fatal(err)
			}
			if len(ans) != 1 || ans[0].(*dns.TXT).Hdr.Ttl != ttl(testParams.TTL) ||
				!slices.Equal(ans[0].(*dns.TXT).Txt, dkimkey.SplitTXT(rec.Value)) {
				t.Errorf("%s: keyRenderer's answer reads back as %v, want the strings %q", name, ans, dkimkey.SplitTXT(rec.Value))
			}
			want, err := viaRecord.add(rec)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s: keyRenderer gives\n%x\nadd renders\n%x", name, got, want)
			}
			names = append(names, name)
		}
		if err := viaKey.addKey(&kr, r); err != nil {
			t.Fatal(err)
		}
	}
	a, b := viaRecord.finish(), viaKey.finish()
	if a.Records() != b.Records() || a.Records() != len(names) {
		t.Fatalf("records: %d via RecordOf, %d via addKey, want %d", a.Records(), b.Records(), len(names))
	}
	for _, name := range append(names, "_domainkey."+testParams.Zone, "_domainkey.acme."+testParams.Zone) {
		w, err := wireName(name)
		if err != nil {
			t.Fatal(err)
		}
		na, okA := lookup(a.chunks, a.shards, w)
		nb, okB := lookup(b.chunks, b.shards, w)
		if okA != okB || !bytes.Equal(na, nb) {
			t.Errorf("%s: %v %x via RecordOf, %v %x via addKey", name, okA, []byte(na), okB, []byte(nb))
		}
		if !okA {
			t.Errorf("%s is missing", name)
		}
	}
}
