package zone

import "unsafe"

// An arena holds the bytes of snapshots: every name's entry and every
// shard's slot table. It only grows: a builder appends what it writes and
// never changes bytes that a published snapshot can reach, so readers and
// the builder share the chunks without locks, and successive snapshots share
// everything they did not change.
//
// Why not maps and slices: a million-domain zone as Go maps is millions of
// heap objects with pointers, which the collector marks on every cycle, and
// a lookup follows four or five pointers through a 1.5 GB heap, each a cache
// and TLB miss. Arena chunks hold no pointers (the collector does not scan
// them), a lookup touches one slot and one entry, and the large chunks are
// backed by huge pages where the kernel allows (adviseHugePages), so the TLB
// covers the whole zone.
type arena struct {
	chunks [][]byte // each at its full length; the last one is being filled
	used   int      // bytes used of the last chunk
	size   int64    // bytes handed out over the arena's life
}

// A ref is a position in an arena: chunk index and offset.
type ref uint64

const (
	offsetBits   = 26 // a chunk is at most 64 MiB
	chunkIdxBits = 14
	refBits      = offsetBits + chunkIdxBits
	maxChunk     = 1 << offsetBits
	firstChunk   = 64 << 10
	hugeChunk    = 8 << 20 // from here on chunks are advised to use huge pages
	hugePage     = 2 << 20
)

func (r ref) chunk() int  { return int(r >> offsetBits) }
func (r ref) offset() int { return int(r & (maxChunk - 1)) }

// at is the arena from r to the end of its chunk.
func at(chunks [][]byte, r ref) []byte { return chunks[r.chunk()][r.offset():] }

// alloc returns n fresh bytes aligned to align (a power of two) and their
// ref. n must not exceed maxChunk.
func (a *arena) alloc(n, align int) (ref, []byte) {
	pad := 0
	if len(a.chunks) > 0 {
		pad = -a.used & (align - 1)
	}
	if len(a.chunks) == 0 || a.used+pad+n > len(a.chunks[len(a.chunks)-1]) {
		a.grow(n)
		pad = 0
	}
	last := len(a.chunks) - 1
	off := a.used + pad
	a.used = off + n
	a.size += int64(pad + n)
	return ref(last)<<offsetBits | ref(off), a.chunks[last][off : off+n : off+n]
}

// grow starts a new chunk, twice the size of the last (up to maxChunk) and
// large enough for n bytes.
func (a *arena) grow(n int) {
	size := firstChunk
	if len(a.chunks) > 0 {
		size = min(2*len(a.chunks[len(a.chunks)-1]), maxChunk)
	}
	for size < n {
		size *= 2
	}
	if len(a.chunks) == 1<<chunkIdxBits-1 {
		// Beyond 16,383 chunks of 64 MiB (a terabyte): refs would not fit.
		panic("zone: arena full")
	}
	var c []byte
	if size >= hugeChunk {
		// Over-allocate by a huge page so that the chunk can start on a
		// huge-page boundary; the advice is per whole huge page.
		buf := make([]byte, size+hugePage)
		skip := int(-uintptr(unsafe.Pointer(&buf[0])) & (hugePage - 1))
		c = buf[skip : skip+size : skip+size]
		adviseHugePages(c)
	} else {
		c = make([]byte, size)
	}
	a.chunks = append(a.chunks, c)
	a.used = 0
}
