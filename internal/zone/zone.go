// Package zone is dkimd's authoritative DNS server for the service's own zone:
// SOA and NS at the apex, a TXT record for every published DKIM key, zone
// transfer and NOTIFY to secondaries.
//
// Answers come from an immutable Snapshot of pre-rendered wire-format
// answers, so that a query is one hash-table probe plus copying the ID and
// the question. Snapshots keep names and answers in large pointer-free byte
// arenas (arena.go, index.go) that successive snapshots share. A new
// snapshot is swapped in with atomic.Pointer; readers never see one being
// built. The package reads the store (through the small Source
// interface) and never writes it.
//
// The files follow the protocols: the snapshot and its answers (zone.go,
// wire.go, and builder*.go, arena.go, index.go that make and hold it); the
// server and its sockets (server.go); UDP serving with recvmmsg (udp*.go)
// and its response-rate limiting (rrl.go); TCP serving (tcp.go); zone
// transfers (xfr.go); NOTIFY (notify.go); TSIG keys (tsig.go); keeping the
// snapshot current (sync.go).
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
//   - UDP answers are rate-limited per answer and source prefix as NSD's
//     RRL does (rrl.go); TCP connections are capped and closed when idle
//     (tcp.go, RFC 7766).
package zone

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"dkimd/internal/dkimkey"
	"dkimd/internal/domainname"
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

// answer is one pre-rendered response body: the answer, authority and
// additional counts (6 octets) followed by those sections, rendered for a
// question of exactly this name so that its compression pointers into the
// question (offset 12) stay valid when the question is echoed as asked.
type answer struct {
	qtype uint16
	body  []byte
}

// Snapshot is the zone at one serial. It is never modified once published:
// its entries and index live in arena chunks that later builds only append
// to (arena.go, index.go).
type Snapshot struct {
	serial   uint32
	zoneWire []byte // lower-case wire form of the apex
	params   Params
	chunks   [][]byte           // the arena as it was when the snapshot was finished
	shards   *[shardCount]shard // the index; no pointers, so the collector skips it
	negative []byte             // SOA in authority with the negative TTL, uncompressed
	records  int                // TXT records
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

// get finds the node of a lower-case wire name.
func (s *Snapshot) get(key []byte) (node, bool) { return lookup(s.chunks, s.shards, key) }

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

// appendTXT is render for the one answer that matters for speed and
// memory, written by hand: a full load renders one per key. It appends to
// dst the answer whose TXT value is value, cut into strings of at most 255
// octets as dkimkey.SplitTXT cuts it. The owner name is a pointer to the
// question (offset 12); the value is written as it is, with no
// presentation-format escapes.
func appendTXT(dst []byte, ttl uint32, value []byte) ([]byte, error) {
	parts := len(value)/255 + 1
	if len(value) > 0 && len(value)%255 == 0 {
		parts-- // no empty string after a last full one
	}
	rdlen := len(value) + parts
	if rdlen > 65535-12-6-255-4 {
		return nil, fmt.Errorf("TXT value of %d octets does not fit a message", rdlen)
	}
	dst = append(dst, 0, 1, 0, 0, 0, 0, // one answer
		0xC0, 12, byte(dns.TypeTXT>>8), byte(dns.TypeTXT), 0, byte(dns.ClassINET))
	dst = binary.BigEndian.AppendUint32(dst, ttl)
	dst = binary.BigEndian.AppendUint16(dst, uint16(rdlen))
	for i := range parts {
		part := value[i*255 : min((i+1)*255, len(value))]
		dst = append(dst, byte(len(part)))
		dst = append(dst, part...)
	}
	return dst, nil
}

// unrender turns a body back into records, for zone transfers.
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
	name, ok := recordName(r, zone)
	if !ok {
		return Record{}, false
	}
	return Record{Name: name, Value: dkimkey.TXTValue(r.Algorithm, publishedKey(r))}, true
}

// recordName is the owner name of a published key, or false for a domain
// key whose domain is gone.
func recordName(r keystore.ZoneRecord, zone string) (string, bool) {
	switch r.Kind {
	case keystore.OwnerDomain:
		if r.Label == "" {
			return "", false
		}
		return domainname.LabelTXTOwner(r.Selector, r.Label, zone), true
	case keystore.OwnerBrand:
		return domainname.BrandTXTOwner(r.Selector, r.Owner, zone), true
	}
	return "", false
}

// publishedKey is the p= of a key's record.
func publishedKey(r keystore.ZoneRecord) []byte {
	if r.State == keystore.StateRevoked {
		return nil // RFC 6376 §3.6.1: a revoked key publishes an empty p=
	}
	return r.PublicKey
}

// keyRenderer renders the TXT answers of keys into buffers it reuses: the
// bytes add renders from RecordOf, without the allocations of about 400
// bytes each (value string, base64 string, answer) that path makes per
// record, which at a million-domain full load were most of its malloc time.
type keyRenderer struct {
	value, body []byte
}

// render returns the answer body for r, valid until the next call.
func (k *keyRenderer) render(ttl uint32, r keystore.ZoneRecord) ([]byte, error) {
	k.value = dkimkey.AppendTXTValue(k.value[:0], r.Algorithm, publishedKey(r))
	var err error
	k.body, err = appendTXT(k.body[:0], ttl, k.value)
	return k.body, err
}
