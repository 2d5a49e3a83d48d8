package zone

import (
	"encoding/binary"
	"hash/maphash"

	"github.com/miekg/dns"
)

// The index finds a name's entry in the arena. A name's hash picks one of
// shardCount shards (its top bits); a shard is an open-addressing table of
// 8-byte slots with linear probing, itself in the arena. A slot holds
// tag<<refBits | (entry ref + 1), 0 when empty: the tag, 24 more bits of the
// hash, lets a probe pass over other names without reading their entries.
//
// Shards exist so that an incremental build copies only the tables it
// changes (a few KB each), not the index of the whole zone.
//
// An entry is: key length (1 octet), the key (the lower-case wire name), the
// number of answers (1 octet), then per answer its type (2 octets), the
// length of its body (2 octets) and the body.

const (
	shardBits  = 12
	shardCount = 1 << shardBits
	tagBits    = 64 - refBits
	tagMask    = 1<<tagBits - 1
	minSlots   = 8
)

// hashSeed is per process: snapshots never leave it.
var hashSeed = maphash.MakeSeed()

func hashKey(key []byte) uint64 { return maphash.Bytes(hashSeed, key) }

func shardOf(h uint64) int { return int(h >> (64 - shardBits)) }

// tagOf takes bits that neither the shard nor, below 2^28 slots, the slot
// index uses.
func tagOf(h uint64) uint64 { return (h >> 28) & tagMask }

// shard is one table: where it is, its size and how many names it holds.
type shard struct {
	table ref
	mask  uint32 // slots - 1; 0 when the shard has no table yet
	count uint32
}

func (sh shard) slots() int { return int(sh.mask) + 1 }

// node is a name's answers as its entry holds them, from the answer count
// on. An empty non-terminal has none.
type node []byte

func (n node) count() int { return int(n[0]) }

// find returns the body of the answer of type qtype (for ANY: the first,
// RFC 8482), or nil.
func (n node) find(qtype uint16) []byte {
	off := 1
	for i := 0; i < int(n[0]); i++ {
		t := binary.BigEndian.Uint16(n[off:])
		l := int(binary.BigEndian.Uint16(n[off+2:]))
		if t == qtype || qtype == dns.TypeANY {
			return n[off+4 : off+4+l : off+4+l]
		}
		off += 4 + l
	}
	return nil
}

// all yields the node's answers, their bodies read in place: a zone
// transfer walks every name with it and allocates nothing per name.
func (n node) all(yield func(answer) bool) {
	off := 1
	for i := 0; i < int(n[0]); i++ {
		t := binary.BigEndian.Uint16(n[off:])
		l := int(binary.BigEndian.Uint16(n[off+2:]))
		if !yield(answer{t, n[off+4 : off+4+l : off+4+l]}) {
			return
		}
		off += 4 + l
	}
}

// entrySize is the length of the entry that starts e.
func entrySize(e []byte) int {
	off := 1 + int(e[0])
	n := int(e[off])
	off++
	for range n {
		off += 4 + int(binary.BigEndian.Uint16(e[off+2:]))
	}
	return off
}

// lookup finds key in the index that chunks and shards make up.
func lookup(chunks [][]byte, shards *[shardCount]shard, key []byte) (node, bool) {
	return lookupHash(chunks, shards, key, hashKey(key))
}

// lookupHash is lookup of a key whose hashKey is h.
func lookupHash(chunks [][]byte, shards *[shardCount]shard, key []byte, h uint64) (node, bool) {
	sh := shards[shardOf(h)]
	if sh.mask == 0 {
		return nil, false
	}
	table := at(chunks, sh.table)
	tag := tagOf(h)
	for i := uint32(h) & sh.mask; ; i = (i + 1) & sh.mask {
		v := binary.LittleEndian.Uint64(table[8*i:])
		if v == 0 {
			return nil, false
		}
		if v>>refBits != tag {
			continue
		}
		e := at(chunks, ref(v&(1<<refBits-1))-1)
		if int(e[0]) == len(key) && string(e[1:1+len(key)]) == string(key) {
			return node(e[1+len(key):]), true
		}
	}
}

// eachEntry calls fn with every entry of the index, shard by shard.
func eachEntry(chunks [][]byte, shards *[shardCount]shard, fn func(key []byte, n node) bool) bool {
	for _, sh := range shards {
		if sh.mask == 0 {
			continue
		}
		table := at(chunks, sh.table)
		for i := range sh.slots() {
			v := binary.LittleEndian.Uint64(table[8*i:])
			if v == 0 {
				continue
			}
			e := at(chunks, ref(v&(1<<refBits-1))-1)
			if !fn(e[1:1+e[0]], node(e[1+e[0]:])) {
				return false
			}
		}
	}
	return true
}

// warm reads, for the hashed queries of a batch, the first index slot and
// the entry their lookups will read, one stage for all queries after the
// other. The loads of different queries do not depend on each other, so
// the CPU overlaps their cache misses, where answering the queries one after
// the other waits for each query's dependent misses (slot, then entry) in
// turn: at a million domains both miss every cache. It returns a value made
// from what it read, for the caller to keep, so that the loads stay.
func warm(chunks [][]byte, shards *[shardCount]shard, qs []query) uint64 {
	var slots [batchSize]uint64
	for i := range qs[:min(len(qs), batchSize)] {
		slots[i] = 0
		if !qs[i].hashed {
			continue
		}
		h := qs[i].hash
		sh := &shards[shardOf(h)]
		if sh.mask == 0 {
			continue
		}
		slots[i] = binary.LittleEndian.Uint64(at(chunks, sh.table)[8*(uint32(h)&sh.mask):])
	}
	var sum uint64
	for _, v := range slots[:min(len(qs), batchSize)] {
		if v == 0 {
			continue
		}
		e := at(chunks, ref(v&(1<<refBits-1))-1)
		// The key and the start of the answer, then the body's next lines,
		// which the copy into the response reads.
		sum += uint64(e[0])
		for off := 64; off < min(len(e), 512); off += 64 {
			sum += uint64(e[off])
		}
	}
	return sum
}
