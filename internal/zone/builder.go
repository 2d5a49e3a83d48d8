package zone

import (
	"math"

	"github.com/miekg/dns"
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
