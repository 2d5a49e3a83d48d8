// Package zone is dkimd's authoritative DNS server for the service's own zone:
// SOA and NS at the apex, a TXT record for every published DKIM key, zone
// transfer and NOTIFY to secondaries.
//
// Answers come from an immutable Snapshot of pre-rendered wire-format
// answers, so that a query is a map lookup plus copying the ID and the
// question. A new snapshot is swapped in with atomic.Pointer; readers never
// see one being built. The package reads the store (through the small Source
// interface) and never writes it.
//
// Decisions where the RFCs leave a choice:
//   - UDP answers are at most 1232 octets (DNS flag day 2020), 512 without
//     EDNS; what does not fit is sent with TC and an empty answer section.
//   - ANY (RFC 8482) gets one RRset: the TXT record at a selector, the SOA at
//     the apex; NODATA at an empty non-terminal.
//   - _domainkey.<zone> always exists (an empty non-terminal), also in a
//     zone without domains.
//   - UPDATE is REFUSED, other opcodes than QUERY and NOTIFY are NOTIMP,
//     NOTIFY is REFUSED (dkimd is the primary), classes other than IN are
//     REFUSED, a bad TSIG is NOTAUTH. Messages shorter than a header and
//     responses are dropped; other malformed queries get FORMERR.
//   - AXFR and IXFR only over TCP, only to --xfr-allow addresses with the
//     TSIG key. IXFR is answered from the deltas of the incremental updates
//     this process applied; a secondary further behind gets the whole zone.
package zone

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"

	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
)

// Params are the zone's fixed parts: apex records and TTLs.
type Params struct {
	Zone    string                  // e.g. oxcloud.zone, without the trailing dot
	NS      []string                // name servers, FQDN without the trailing dot
	NSAddrs map[string][]netip.Addr // glue for name servers inside the zone
	SOAMbox string                  // e.g. hostmaster.oxcloud.zone
	Refresh time.Duration
	Retry   time.Duration
	Expire  time.Duration
	Minimum time.Duration // SOA minimum: negative caching TTL (RFC 2308)
	TTL     time.Duration // TTL of every record, the SOA included
}

// Result is what Lookup found.
type Result int

// Lookup results; ServeDNS maps them to rcodes.
const (
	Success   Result = iota // answer holds the records
	NoData                  // the name exists without the type: NOERROR, SOA in authority
	NameError               // no such name: NXDOMAIN, SOA in authority
	NotAuth                 // outside the zone: REFUSED
)

const shardCount = 256

// answer is one pre-rendered response body: the answer, authority and
// additional counts (6 octets) followed by those sections, rendered for a
// question of exactly this name so that its compression pointers into the
// question (offset 12) stay valid when the question is echoed as asked.
type answer struct {
	qtype uint16
	body  []byte
}

// node is a name in the zone. An empty non-terminal has no answers.
// answers[0] is what ANY gets (RFC 8482: one RRset).
type node struct {
	answers []answer
}

// Snapshot is the zone at one serial. It is never modified once published.
type Snapshot struct {
	serial   uint32
	zoneWire []byte // lower-case wire form of the apex
	params   Params
	shards   [shardCount]map[string]*node // keyed by lower-case wire-format name
	negative []byte                       // SOA in authority with the negative TTL, uncompressed
	records  int                          // TXT records
}

// Serial is the SOA serial.
func (s *Snapshot) Serial() uint32 { return s.serial }

// Records is the number of TXT records in the zone.
func (s *Snapshot) Records() int { return s.records }

func fqdn(name string) string { return dns.Fqdn(strings.ToLower(name)) }

// wireName is the lower-case uncompressed wire form of a domain name.
func wireName(name string) ([]byte, error) {
	var buf [256]byte
	n, err := dns.PackDomainName(fqdn(name), buf[:], 0, nil, false)
	if err != nil {
		return nil, fmt.Errorf("zone: bad name %q: %w", name, err)
	}
	return append([]byte(nil), buf[:n]...), nil
}

// hashName is FNV-1a, the shard selector.
func hashName(b []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range b {
		h ^= uint32(c)
		h *= 16777619
	}
	return h
}

func (s *Snapshot) get(key []byte) *node {
	return s.shards[hashName(key)%shardCount][string(key)]
}

func ttl(d time.Duration) uint32 { return uint32(d / time.Second) }

func (p Params) soa(serial uint32) *dns.SOA {
	z := fqdn(p.Zone)
	mname := z
	if len(p.NS) > 0 {
		mname = fqdn(p.NS[0])
	}
	return &dns.SOA{
		Hdr: dns.RR_Header{Name: z, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl(p.TTL)},
		Ns:  mname, Mbox: fqdn(p.SOAMbox), Serial: serial,
		Refresh: ttl(p.Refresh), Retry: ttl(p.Retry), Expire: ttl(p.Expire), Minttl: ttl(p.Minimum),
	}
}

// negativeSOA is the SOA for the authority section of NXDOMAIN and NODATA:
// its TTL is min(SOA TTL, SOA minimum), RFC 2308 §5.
func (p Params) negativeSOA(serial uint32) *dns.SOA {
	soa := p.soa(serial)
	soa.Hdr.Ttl = min(soa.Hdr.Ttl, soa.Minttl)
	return soa
}

// render packs a response to (name, qtype) and keeps what follows the
// question.
func render(name string, qtype uint16, compress bool, ans, ns, extra []dns.RR) ([]byte, error) {
	m := &dns.Msg{Question: []dns.Question{{Name: name, Qtype: qtype, Qclass: dns.ClassINET}}, Answer: ans, Ns: ns, Extra: extra}
	m.Compress = compress
	b, err := m.Pack()
	if err != nil {
		return nil, fmt.Errorf("zone: render %s: %w", name, err)
	}
	qlen, err := wireName(name)
	if err != nil {
		return nil, err
	}
	off := 12 + len(qlen) + 4
	body := make([]byte, 0, 6+len(b)-off)
	body = append(body, b[6:12]...)
	return append(body, b[off:]...), nil
}

// renderTXT is render for the one answer that matters for speed and
// memory, written by hand: a full load renders one per key. The owner name
// is a pointer to the question (offset 12); values are written as they are,
// with no presentation-format escapes.
func renderTXT(ttl uint32, parts []string) ([]byte, error) {
	rdlen := 0
	for _, p := range parts {
		rdlen += 1 + len(p)
	}
	if rdlen > 65535-12-6-255-4 {
		return nil, fmt.Errorf("TXT value of %d octets does not fit a message", rdlen)
	}
	body := make([]byte, 0, 6+12+rdlen)
	body = append(body, 0, 1, 0, 0, 0, 0, // one answer
		0xC0, 12, byte(dns.TypeTXT>>8), byte(dns.TypeTXT), 0, byte(dns.ClassINET))
	body = binary.BigEndian.AppendUint32(body, ttl)
	body = binary.BigEndian.AppendUint16(body, uint16(rdlen))
	for _, p := range parts {
		body = append(body, byte(len(p)))
		body = append(body, p...)
	}
	return body, nil
}

// unrender turns a body back into records, for Lookup and zone transfers.
func unrender(name string, qtype uint16, body []byte) (ans, ns, extra []dns.RR, err error) {
	q, err := wireName(name)
	if err != nil {
		return nil, nil, nil, err
	}
	msg := make([]byte, 12, 12+len(q)+4+len(body))
	binary.BigEndian.PutUint16(msg[4:], 1)
	copy(msg[6:12], body[:6])
	msg = append(msg, q...)
	msg = binary.BigEndian.AppendUint16(msg, qtype)
	msg = binary.BigEndian.AppendUint16(msg, dns.ClassINET)
	msg = append(msg, body[6:]...)
	m := new(dns.Msg)
	if err := m.Unpack(msg); err != nil {
		return nil, nil, nil, fmt.Errorf("zone: unpack %s: %w", name, err)
	}
	return m.Answer, m.Ns, m.Extra, nil
}

// Lookup answers (name, qtype) from the snapshot. It is a pure function of
// the snapshot and its arguments.
func (s *Snapshot) Lookup(name string, qtype uint16) (ans, ns, extra []dns.RR, res Result) {
	key, err := wireName(name)
	if err != nil || !inZone(key, s.zoneWire) {
		return nil, nil, nil, NotAuth
	}
	n := s.get(key)
	if n == nil {
		return nil, []dns.RR{s.params.negativeSOA(s.serial)}, nil, NameError
	}
	if a := n.find(qtype); a != nil {
		ans, ns, extra, err := unrender(fqdn(name), a.qtype, a.body)
		if err != nil {
			// Bodies are rendered by this package; one that does not
			// unpack is a bug, and NotAuth is the safest thing to say.
			return nil, nil, nil, NotAuth
		}
		return ans, ns, extra, Success
	}
	return nil, []dns.RR{s.params.negativeSOA(s.serial)}, nil, NoData
}

func (n *node) find(qtype uint16) *answer {
	if qtype == dns.TypeANY {
		if len(n.answers) == 0 {
			return nil
		}
		return &n.answers[0]
	}
	for i := range n.answers {
		if n.answers[i].qtype == qtype {
			return &n.answers[i]
		}
	}
	return nil
}

// inZone reports whether the wire name key is the apex or below it.
func inZone(key, zone []byte) bool {
	if len(key) < len(zone) || string(key[len(key)-len(zone):]) != string(zone) {
		return false
	}
	// The suffix must start at a label boundary.
	cut := len(key) - len(zone)
	for off := 0; off < cut; off += int(key[off]) + 1 {
		if off+int(key[off])+1 == cut {
			return true
		}
	}
	return cut == 0
}

// Record is one TXT record of the zone, named by its owner.
type Record struct {
	Name  string // owner name, lower case, without trailing dot
	Value string // the TXT value, joined
}

// RecordOf names a store record in the zone and renders its TXT value; a
// domain key whose domain row is gone (ok false) is not published.
func RecordOf(r keystore.ZoneRecord, zone string) (Record, bool) {
	p := r.PublicKey
	if r.State == keystore.StateRevoked {
		p = nil // RFC 6376 §3.6.1: a revoked key publishes an empty p=
	}
	v := dkimkey.TXTValue(r.Algorithm, p)
	switch r.Kind {
	case keystore.OwnerDomain:
		if r.Label == "" {
			return Record{}, false
		}
		return Record{Name: r.Selector + "-" + r.Label + "._domainkey." + zone, Value: v}, true
	case keystore.OwnerBrand:
		return Record{Name: r.Selector + "._domainkey." + r.Owner + "." + zone, Value: v}, true
	}
	return Record{}, false
}

// builder makes snapshots: a full one from scratch, or the next one from
// the current by copying only the shards that change. It also keeps what a
// reader never needs: which names each owner has and how many names lie
// below each empty non-terminal. It is used by one goroutine at a time.
type builder struct {
	params   Params
	zoneWire []byte
	cur      *Snapshot

	owners   map[keystore.ZoneChange][]string // fqdn names of each owner's records
	children map[string]int                   // fqdn -> names with records at or below it (for ENTs)
	apex     map[string]bool                  // names the apex records own (NS glue): never removed

	next  *Snapshot
	owned [shardCount]bool

	// The TXT records an incremental build removed and added: the delta
	// that IXFR sends.
	removed, added []txtRecord
}

// txtRecord is a TXT record as its owner name and rendered body.
type txtRecord struct {
	name string // fqdn
	body []byte
}

func newBuilder(p Params) (*builder, error) {
	zw, err := wireName(p.Zone)
	if err != nil {
		return nil, err
	}
	return &builder{params: p, zoneWire: zw}, nil
}

// begin starts the next snapshot. full drops every record.
func (b *builder) begin(serial uint32, full bool) error {
	next := &Snapshot{serial: serial, zoneWire: b.zoneWire, params: b.params}
	b.owned = [shardCount]bool{}
	if full || b.cur == nil {
		for i := range next.shards {
			next.shards[i] = map[string]*node{}
			b.owned[i] = true
		}
		b.owners = map[keystore.ZoneChange][]string{}
		b.children = map[string]int{}
		b.apex = map[string]bool{}
	} else {
		next.shards = b.cur.shards
		next.records = b.cur.records
	}
	b.next = next
	b.removed, b.added = nil, nil
	var err error
	if next.negative, err = render(fqdn(b.params.Zone), dns.TypeSOA, false, nil,
		[]dns.RR{b.params.negativeSOA(serial)}, nil); err != nil {
		return err
	}
	return b.putApex()
}

func (b *builder) shard(key []byte) map[string]*node {
	i := hashName(key) % shardCount
	if !b.owned[i] {
		m := make(map[string]*node, len(b.next.shards[i])+1)
		for k, v := range b.next.shards[i] {
			m[k] = v
		}
		b.next.shards[i] = m
		b.owned[i] = true
	}
	return b.next.shards[i]
}

func (b *builder) set(name string, n *node) error {
	key, err := wireName(name)
	if err != nil {
		return err
	}
	if n == nil {
		delete(b.shard(key), string(key))
	} else {
		b.shard(key)[string(key)] = n
	}
	return nil
}

func (b *builder) lookupNode(name string) *node {
	key, err := wireName(name)
	if err != nil {
		return nil
	}
	return b.next.get(key)
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
		n := &node{}
		for _, set := range [][]dns.RR{as, aaaas} {
			if len(set) == 0 {
				continue
			}
			body, err := render(fqdn(name), set[0].Header().Rrtype, true, set, nil, nil)
			if err != nil {
				return err
			}
			n.answers = append(n.answers, answer{set[0].Header().Rrtype, body})
		}
		if !b.apex[fqdn(name)] {
			b.apex[fqdn(name)] = true
			if err := b.addAncestors(fqdn(name)); err != nil {
				return err
			}
		}
		if err := b.set(name, n); err != nil {
			return err
		}
	}
	apex := &node{}
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
		apex.answers = append(apex.answers, answer{a.qtype, body})
	}
	// _domainkey.<zone> is where every domain key lives: always an empty
	// non-terminal, also in an empty zone.
	if n := b.lookupNode("_domainkey." + z); n == nil {
		if err := b.set("_domainkey."+z, &node{}); err != nil {
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
		if b.children[p] == 1 && b.lookupNode(p) == nil {
			if err := b.set(p, &node{}); err != nil {
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
		if n := b.lookupNode(p); n != nil && len(n.answers) == 0 && p != "_domainkey."+z {
			if err := b.set(p, nil); err != nil {
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

// replace sets the records of one owner, removing those it had before.
func (b *builder) replace(owner keystore.ZoneChange, recs []Record) error {
	for _, name := range b.owners[owner] {
		if n := b.lookupNode(name); n != nil && len(n.answers) > 0 {
			b.next.records--
			if a := n.find(dns.TypeTXT); a != nil {
				b.removed = append(b.removed, txtRecord{name, a.body})
			}
		}
		if err := b.removeAncestors(name); err != nil {
			return err
		}
		if b.children[name] > 0 || b.apex[name] {
			// Something still lives below (or the apex owns it): keep the name.
			if err := b.set(name, &node{}); err != nil {
				return err
			}
		} else if err := b.set(name, nil); err != nil {
			return err
		}
	}
	delete(b.owners, owner)
	names := make([]string, 0, len(recs))
	for _, r := range recs {
		if err := b.add(r); err != nil {
			return err
		}
		names = append(names, fqdn(r.Name))
		if n := b.lookupNode(r.Name); n != nil && len(n.answers) > 0 {
			b.added = append(b.added, txtRecord{fqdn(r.Name), n.answers[0].body})
		}
	}
	if len(names) > 0 {
		b.owners[owner] = names
	}
	return nil
}

// add publishes one TXT record. A name holds one record: the store's
// primary key guarantees that a selector has one key.
func (b *builder) add(r Record) error {
	name := fqdn(r.Name)
	key, err := wireName(name)
	if err != nil {
		return err
	}
	if !inZone(key, b.zoneWire) || string(key) == string(b.zoneWire) {
		return fmt.Errorf("zone: record %s is not below %s", r.Name, b.params.Zone)
	}
	body, err := renderTXT(ttl(b.params.TTL), dkimkey.SplitTXT(r.Value))
	if err != nil {
		return fmt.Errorf("zone: record %s: %w", r.Name, err)
	}
	if old := b.next.get(key); old == nil || len(old.answers) == 0 {
		b.next.records++
	}
	if err := b.addAncestors(name); err != nil {
		return err
	}
	// The node and its one answer in one allocation, on one cache line: a
	// lookup in a large zone touches the key, this line and the body.
	na := &struct {
		n node
		a [1]answer
	}{a: [1]answer{{dns.TypeTXT, body}}}
	na.n.answers = na.a[:]
	b.shard(key)[string(key)] = &na.n
	return nil
}

// finish returns the built snapshot, which becomes the current one.
func (b *builder) finish() *Snapshot {
	s := b.next
	b.cur, b.next = s, nil
	return s
}

// Build makes a snapshot from a list of records, for tests and tools.
func Build(p Params, serial uint32, recs []Record) (*Snapshot, error) {
	b, err := newBuilder(p)
	if err != nil {
		return nil, err
	}
	if err := b.begin(serial, true); err != nil {
		return nil, err
	}
	for _, r := range recs {
		if err := b.add(r); err != nil {
			return nil, err
		}
	}
	return b.finish(), nil
}

func ownerKey(kind, owner string) keystore.ZoneChange {
	return keystore.ZoneChange{Kind: keystore.OwnerKind(kind), Owner: owner}
}
