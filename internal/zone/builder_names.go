package zone

// The builder's side of the zone's names: the apex and its glue, the empty
// non-terminals above every record, and the records of one owner (a
// domain or a brand) put, replaced and removed.

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"dkimd/internal/domainname"
	"dkimd/internal/keystore"

	"github.com/miekg/dns"
)

func (b *builder) set(name string, answers []answer) error {
	key, err := wireName(name)
	if err != nil {
		return err
	}
	_, err = b.put(key, answers)
	return err
}

func (b *builder) del(name string) error {
	key, err := wireName(name)
	if err != nil {
		return err
	}
	b.remove(key)
	return nil
}

func (b *builder) lookupNode(name string) (node, bool) {
	key, err := wireName(name)
	if err != nil {
		return nil, false
	}
	return b.get(key)
}

// putApex renders SOA and NS at the apex (the serial changes every time)
// and the glue addresses of in-zone name servers.
func (b *builder) putApex() error {
	p := b.params
	z := fqdn(p.Zone)
	soa := p.soa(b.next.serial)
	var nsRRs, glue []dns.RR
	for _, name := range p.NS {
		nsRRs = append(nsRRs, &dns.NS{Hdr: dns.RR_Header{Name: z, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: ttl(p.TTL)}, Ns: fqdn(name)})
	}
	glueNames := make([]string, 0, len(p.NSAddrs))
	for name := range p.NSAddrs {
		glueNames = append(glueNames, name)
	}
	sort.Strings(glueNames)
	for _, name := range glueNames {
		var as, aaaas []dns.RR
		for _, a := range p.NSAddrs[name] {
			hdr := dns.RR_Header{Name: fqdn(name), Class: dns.ClassINET, Ttl: ttl(p.TTL)}
			if a.Is4() {
				hdr.Rrtype = dns.TypeA
				as = append(as, &dns.A{Hdr: hdr, A: a.AsSlice()})
			} else {
				hdr.Rrtype = dns.TypeAAAA
				aaaas = append(aaaas, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
			}
		}
		glue = append(glue, as...)
		glue = append(glue, aaaas...)
		var answers []answer
		for _, set := range [][]dns.RR{as, aaaas} {
			if len(set) == 0 {
				continue
			}
			body, err := render(fqdn(name), set[0].Header().Rrtype, true, set, nil, nil)
			if err != nil {
				return err
			}
			answers = append(answers, answer{set[0].Header().Rrtype, body})
		}
		if !b.apex[fqdn(name)] {
			b.apex[fqdn(name)] = true
			if err := b.addAncestors(fqdn(name)); err != nil {
				return err
			}
		}
		if err := b.set(name, answers); err != nil {
			return err
		}
	}
	var apex []answer
	for _, a := range []struct {
		qtype      uint16
		ans, extra []dns.RR
	}{
		{dns.TypeSOA, []dns.RR{soa}, nil},
		{dns.TypeNS, nsRRs, glue},
	} {
		if len(a.ans) == 0 {
			continue
		}
		body, err := render(z, a.qtype, true, a.ans, nil, a.extra)
		if err != nil {
			return err
		}
		apex = append(apex, answer{a.qtype, body})
	}
	// _domainkey.<zone> is where every domain key lives: always an empty
	// non-terminal, also in an empty zone.
	if _, ok := b.lookupNode("_domainkey." + z); !ok {
		if err := b.set("_domainkey."+z, nil); err != nil {
			return err
		}
	}
	return b.set(z, apex)
}

// addAncestors counts a new name under each of its ancestors below the
// apex, creating empty non-terminals where no node exists yet.
func (b *builder) addAncestors(name string) error {
	z := fqdn(b.params.Zone)
	for p := parent(name); p != z && p != ""; p = parent(p) {
		b.children[p]++
		if b.children[p] > 1 {
			// Already there. At a full load every record but the first
			// shares _domainkey: looking it up again for each was most
			// of this function's cost.
			continue
		}
		if _, ok := b.lookupNode(p); !ok {
			if err := b.set(p, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// removeAncestors undoes addAncestors, deleting empty non-terminals that no
// longer have anything below them.
func (b *builder) removeAncestors(name string) error {
	z := fqdn(b.params.Zone)
	for p := parent(name); p != z && p != ""; p = parent(p) {
		b.children[p]--
		if b.children[p] > 0 {
			continue
		}
		delete(b.children, p)
		if n, ok := b.lookupNode(p); ok && n.count() == 0 && p != "_domainkey."+z {
			if err := b.del(p); err != nil {
				return err
			}
		}
	}
	return nil
}

func parent(name string) string {
	_, rest, ok := strings.Cut(name, ".")
	if !ok || rest == "" {
		return ""
	}
	return rest
}

// ownerNames are the names (fqdn) where owner's records can be: they follow
// from the selectors a key may have, so the builder needs no index of which
// names each owner has (a million owners' worth of heap pointers).
func ownerNames(owner keystore.ZoneChange, zone string) []string {
	z := fqdn(zone)
	names := make([]string, 0, len(domainname.AllSelectors))
	for _, sel := range domainname.AllSelectors {
		switch owner.Kind {
		case keystore.OwnerDomain:
			names = append(names, domainname.TXTOwner(sel, owner.Owner, z))
		case keystore.OwnerBrand:
			names = append(names, domainname.BrandTXTOwner(sel, owner.Owner, z))
		}
	}
	return names
}

// removeOwner takes every record of owner out of the zone.
func (b *builder) removeOwner(owner keystore.ZoneChange) error {
	for _, name := range ownerNames(owner, b.params.Zone) {
		if err := b.unpublish(name); err != nil {
			return err
		}
	}
	return nil
}

// unpublish removes the record at name, if there is one, keeping the name
// as an empty non-terminal while something lives below it.
func (b *builder) unpublish(name string) error {
	n, ok := b.lookupNode(name)
	if !ok || n.count() == 0 || b.apex[name] {
		return nil
	}
	b.next.records--
	if body := n.find(dns.TypeTXT); body != nil {
		b.removed = append(b.removed, txtRecord{name, bytes.Clone(body)})
	}
	if err := b.removeAncestors(name); err != nil {
		return err
	}
	if b.children[name] > 0 {
		return b.set(name, nil)
	}
	return b.del(name)
}

// publish adds records, noting them for IXFR.
func (b *builder) publish(recs []Record) error {
	for _, r := range recs {
		name := fqdn(r.Name)
		// A name that is already published (another owner's record
		// under the same label, in the same batch) is replaced, not
		// counted twice.
		if err := b.unpublish(name); err != nil {
			return err
		}
		body, err := b.add(r)
		if err != nil {
			return err
		}
		b.added = append(b.added, txtRecord{name, body})
	}
	return nil
}

// replace sets the records of one owner, removing those it had before.
func (b *builder) replace(owner keystore.ZoneChange, recs []Record) error {
	if err := b.removeOwner(owner); err != nil {
		return err
	}
	return b.publish(recs)
}

// add publishes one TXT record and returns its rendered answer (what IXFR
// sends). A name holds one record: the store's primary key guarantees that
// a selector has one key.
func (b *builder) add(r Record) ([]byte, error) {
	name, key, err := b.ownerKey(r.Name)
	if err != nil {
		return nil, err
	}
	body, err := appendTXT(nil, ttl(b.params.TTL), []byte(r.Value))
	if err != nil {
		return nil, fmt.Errorf("zone: record %s: %w", r.Name, err)
	}
	// place copies body into the arena: the caller may keep it.
	return body, b.place(name, key, body)
}

// addKey is add for a published key as the store holds it, with its answer
// rendered by kr: the full load's path, which makes no garbage per record
// for the answer. It skips a domain key whose domain is gone, as RecordOf
// does.
func (b *builder) addKey(kr *keyRenderer, r keystore.ZoneRecord) error {
	n, ok := recordName(r, b.params.Zone)
	if !ok {
		return nil
	}
	name, key, err := b.ownerKey(n)
	if err != nil {
		return err
	}
	body, err := kr.render(ttl(b.params.TTL), r)
	if err != nil {
		return fmt.Errorf("zone: record %s: %w", n, err)
	}
	return b.place(name, key, body)
}

// ownerKey is a record's name made absolute and its wire form, which must
// be below the apex.
func (b *builder) ownerKey(recordName string) (name string, key []byte, err error) {
	name = fqdn(recordName)
	key, err = wireName(name)
	if err != nil {
		return "", nil, err
	}
	if !inZone(key, b.zoneWire) || string(key) == string(b.zoneWire) {
		return "", nil, fmt.Errorf("zone: record %s is not below %s", recordName, b.params.Zone)
	}
	return name, key, nil
}

// place puts a TXT answer at name (wire form key), counting the name if it
// is new and creating its empty non-terminal ancestors.
func (b *builder) place(name string, key, body []byte) error {
	old, err := b.put(key, []answer{{dns.TypeTXT, body}})
	if err != nil {
		return err
	}
	if old == nil || old.count() == 0 {
		b.next.records++
	}
	return b.addAncestors(name)
}
