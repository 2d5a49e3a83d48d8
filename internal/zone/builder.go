package zone

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/miekg/dns"

	"dkimd/internal/domainname"
	"dkimd/internal/keystore"
)

// builder makes snapshots: a full one from scratch, or the next one from
// the current by writing only what changes into the shared arena. It also
// keeps what a reader never needs: how many names lie below each empty
// non-terminal and which names the apex owns. It is used by one goroutine
// at a time.
type builder struct {
	params   Params
	zoneWire []byte
	cur      *Snapshot

	arena *arena
	// garbage counts the arena's bytes that the current snapshot no longer
	// reaches (replaced entries and tables); beyond compactAt, and half the
	// arena, the next incremental build starts from a compacted copy. The
	// floor is small: a small zone compacts cheaply, and every build leaves
	// some garbage (the apex's SOA changes each time).
	garbage   int64
	compactAt int64

	children map[string]int  // fqdn -> names with records at or below it (for ENTs)
	apex     map[string]bool // names the apex records own (NS glue): never removed

	next  *Snapshot
	owned [shardCount]bool // tables this build has copied: it may change them in place

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
	return &builder{params: p, zoneWire: zw, compactAt: 4 << 20}, nil
}

// begin starts the next snapshot. full drops every record.
func (b *builder) begin(serial uint32, full bool) error {
	next := &Snapshot{serial: serial, zoneWire: b.zoneWire, params: b.params}
	b.owned = [shardCount]bool{}
	switch {
	case full || b.cur == nil:
		b.arena, b.garbage = &arena{}, 0
		next.shards = new([shardCount]shard)
		b.ownAll()
		b.children = map[string]int{}
		b.apex = map[string]bool{}
	case b.garbage > b.compactAt && 2*b.garbage > b.arena.size:
		next.shards = b.compact(b.cur)
		next.records = b.cur.records
		b.ownAll()
	default:
		shards := *b.cur.shards
		next.shards = &shards
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

// presize gives every shard a table for its share of about names entries,
// so that a full load does not grow each of them by doubling: every
// doubling rehashes the shard's entries from the arena, 9% of a
// million-domain start-up. A low estimate only leaves some doublings. The
// margin of 5 standard deviations covers the spread of names across shards
// (binomial: the square root of a shard's share).
func (b *builder) presize(names int) {
	per := names / shardCount
	if per <= 0 {
		return
	}
	most := per + 5*int(math.Sqrt(float64(per))) + 1
	want := most*4/3 + 1 // put keeps a table at most 3/4 full
	slots := minSlots
	for slots < want {
		slots *= 2
	}
	for i := range b.next.shards {
		if sh := &b.next.shards[i]; sh.slots() < slots {
			b.own(i)
			b.resize(sh, slots)
		}
	}
}

func (b *builder) ownAll() {
	for i := range b.owned {
		b.owned[i] = true
	}
}

// compact copies what from reaches into a fresh arena, table by table with
// the same layout (the hash seed is the process's), and returns the copied
// index. from itself is untouched: readers may still hold it.
func (b *builder) compact(from *Snapshot) *[shardCount]shard {
	a := &arena{}
	shards := new([shardCount]shard)
	for i, sh := range from.shards {
		if sh.mask == 0 {
			continue
		}
		n := 8 * sh.slots()
		r, table := a.alloc(n, 64)
		old := at(from.chunks, sh.table)
		for j := 0; j < n; j += 8 {
			v := binary.LittleEndian.Uint64(old[j:])
			if v == 0 {
				continue
			}
			e := at(from.chunks, slotRef(v))
			er, dst := a.alloc(entrySize(e), 1)
			copy(dst, e)
			binary.LittleEndian.PutUint64(table[j:], slotValue(v>>refBits, er))
		}
		shards[i] = shard{table: r, mask: sh.mask, count: sh.count}
	}
	b.arena, b.garbage = a, 0
	return shards
}

func slotRef(v uint64) ref               { return ref(v&(1<<refBits-1)) - 1 }
func slotValue(tag uint64, r ref) uint64 { return tag<<refBits | uint64(r+1) }

// own makes shard i's table this build's: a copy in the arena, so that the
// published snapshots keep theirs.
func (b *builder) own(i int) {
	if b.owned[i] {
		return
	}
	b.owned[i] = true
	sh := &b.next.shards[i]
	if sh.mask == 0 {
		return
	}
	n := 8 * sh.slots()
	r, table := b.arena.alloc(n, 64)
	copy(table, at(b.arena.chunks, sh.table)[:n])
	b.garbage += int64(n)
	sh.table = r
}

// resize moves shard sh to a table of the given number of slots.
func (b *builder) resize(sh *shard, slots int) {
	r, table := b.arena.alloc(8*slots, 64)
	mask := uint32(slots - 1)
	if sh.mask != 0 {
		old := at(b.arena.chunks, sh.table)[:8*sh.slots()]
		for j := 0; j < len(old); j += 8 {
			v := binary.LittleEndian.Uint64(old[j:])
			if v == 0 {
				continue
			}
			k := uint32(hashKey(b.keyOf(v))) & mask
			for binary.LittleEndian.Uint64(table[8*k:]) != 0 {
				k = (k + 1) & mask
			}
			binary.LittleEndian.PutUint64(table[8*k:], v)
		}
		b.garbage += int64(len(old))
	}
	sh.table, sh.mask = r, mask
}

// keyOf is the key of the entry a slot points to.
func (b *builder) keyOf(v uint64) []byte {
	e := at(b.arena.chunks, slotRef(v))
	return e[1 : 1+e[0]]
}

// slot finds key's slot in its shard: the shard, the slot's index and
// whether the key is there (else the index is the empty slot that ends the
// probe). The shard must have a table.
func (b *builder) slot(key []byte, h uint64) (*shard, uint32, bool) {
	sh := &b.next.shards[shardOf(h)]
	table := at(b.arena.chunks, sh.table)
	tag := tagOf(h)
	for i := uint32(h) & sh.mask; ; i = (i + 1) & sh.mask {
		v := binary.LittleEndian.Uint64(table[8*i:])
		if v == 0 {
			return sh, i, false
		}
		if v>>refBits == tag && bytes.Equal(b.keyOf(v), key) {
			return sh, i, true
		}
	}
}

// put writes the entry of name key with these answers (none: an empty
// non-terminal) and points the index at it. It returns the entry it
// replaced, nil if the name is new.
func (b *builder) put(key []byte, answers []answer) (replaced node, err error) {
	size := 2 + len(key)
	for _, a := range answers {
		if len(a.body) > 0xFFFF {
			return nil, fmt.Errorf("zone: answer of %d octets is too large", len(a.body))
		}
		size += 4 + len(a.body)
	}
	if len(answers) > 0xFF || len(key) > 255 {
		return nil, fmt.Errorf("zone: %d answers for one name", len(answers))
	}
	r, e := b.arena.alloc(size, 1)
	e[0] = byte(len(key))
	off := 1 + copy(e[1:], key)
	e[off] = byte(len(answers))
	off++
	for _, a := range answers {
		binary.BigEndian.PutUint16(e[off:], a.qtype)
		binary.BigEndian.PutUint16(e[off+2:], uint16(len(a.body)))
		off += 4 + copy(e[off+4:], a.body)
	}

	h := hashKey(key)
	b.own(shardOf(h))
	sh := &b.next.shards[shardOf(h)]
	if sh.mask == 0 || 4*(sh.count+1) > 3*uint32(sh.slots()) {
		b.resize(sh, max(minSlots, 2*sh.slots()))
	}
	sh, i, found := b.slot(key, h)
	table := at(b.arena.chunks, sh.table)
	if found {
		e := at(b.arena.chunks, slotRef(binary.LittleEndian.Uint64(table[8*i:])))
		b.garbage += int64(entrySize(e))
		replaced = node(e[1+e[0]:])
	} else {
		sh.count++
	}
	binary.LittleEndian.PutUint64(table[8*i:], slotValue(tagOf(h), r))
	return replaced, nil
}

// remove takes name key out of the index, shifting the entries after it
// back (linear probing without tombstones).
func (b *builder) remove(key []byte) {
	h := hashKey(key)
	if b.next.shards[shardOf(h)].mask == 0 {
		return
	}
	b.own(shardOf(h))
	sh, i, found := b.slot(key, h)
	if !found {
		return
	}
	table := at(b.arena.chunks, sh.table)
	b.garbage += int64(entrySize(at(b.arena.chunks, slotRef(binary.LittleEndian.Uint64(table[8*i:])))))
	sh.count--
	for {
		binary.LittleEndian.PutUint64(table[8*i:], 0)
		j := i
		for {
			j = (j + 1) & sh.mask
			v := binary.LittleEndian.Uint64(table[8*j:])
			if v == 0 {
				return
			}
			// v may fill the hole at i unless its home slot lies
			// cyclically in (i, j].
			home := uint32(hashKey(b.keyOf(v))) & sh.mask
			if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
				binary.LittleEndian.PutUint64(table[8*i:], v)
				i = j
				break
			}
		}
	}
}

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

func (b *builder) get(key []byte) (node, bool) {
	return lookup(b.arena.chunks, b.next.shards, key)
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

// selectors are every selector a key may have (SPEC.md "Names"): the names
// an owner can hold follow from them, so the builder needs no index of
// which names each owner has (a million owners' worth of heap pointers).
var selectors = []string{"selector1", "selector2", "selector1-ed25519", "selector2-ed25519"}

// ownerNames are the names (fqdn) where owner's records can be.
func ownerNames(owner keystore.ZoneChange, zone string) []string {
	z := fqdn(zone)
	names := make([]string, 0, len(selectors))
	for _, sel := range selectors {
		switch owner.Kind {
		case keystore.OwnerDomain:
			names = append(names, sel+"-"+domainname.Label(owner.Owner)+"._domainkey."+z)
		case keystore.OwnerBrand:
			names = append(names, sel+"._domainkey."+owner.Owner+"."+z)
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

// finish returns the built snapshot, which becomes the current one.
func (b *builder) finish() *Snapshot {
	s := b.next
	s.chunks = b.arena.chunks
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
		if _, err := b.add(r); err != nil {
			return nil, err
		}
	}
	return b.finish(), nil
}
