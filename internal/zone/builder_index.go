package zone

// The builder's side of the index (index.go): shards copied on first
// write, names put and removed, tables resized, and the compaction that
// copies what is live into a fresh arena.

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

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

func (b *builder) get(key []byte) (node, bool) {
	return lookup(b.arena.chunks, b.next.shards, key)
}
