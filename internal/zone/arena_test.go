package zone

import (
	"bytes"
	"fmt"
	"testing"
	"unsafe"
)

// The arena hands out bytes that stay where they were written while it
// grows, through small chunks into huge-page-aligned ones, and honours the
// alignment asked for.
func TestArenaGrowth(t *testing.T) {
	var a arena
	type piece struct {
		r    ref
		want []byte
	}
	var pieces []piece
	for i := 0; a.size < 40<<20; i++ {
		n := 1 + (i*7919)%5000
		align := 1
		if i%3 == 0 {
			align = 64
		}
		r, b := a.alloc(n, align)
		if len(b) != n || cap(b) != n {
			t.Fatalf("alloc(%d) gave len %d cap %d", n, len(b), cap(b))
		}
		if r.offset()%align != 0 {
			t.Fatalf("alloc(%d, %d) at offset %d", n, align, r.offset())
		}
		for j := range b {
			b[j] = byte(i + j)
		}
		pieces = append(pieces, piece{r, bytes.Clone(b)})
	}
	for i, p := range pieces {
		if got := at(a.chunks, p.r)[:len(p.want)]; !bytes.Equal(got, p.want) {
			t.Fatalf("piece %d changed", i)
		}
	}
	huge := 0
	for _, c := range a.chunks {
		if len(c) >= hugeChunk {
			huge++
			if uintptr(unsafe.Pointer(&c[0]))%hugePage != 0 {
				t.Fatalf("a %d-byte chunk does not start on a huge page", len(c))
			}
		}
	}
	if huge == 0 {
		t.Fatal("no chunk reached the huge-page size")
	}
	// A request larger than the next chunk size gets a chunk of its own
	// size.
	var b arena
	r, buf := b.alloc(3*firstChunk, 1)
	if len(buf) != 3*firstChunk || r.chunk() != 0 {
		t.Fatalf("large first alloc: ref %x len %d", r, len(buf))
	}
}

// TestPresize: a full load sized by presize places every name without
// growing a table, and every name is found.
func TestPresize(t *testing.T) {
	const n = 50000
	b, err := newBuilder(testParams)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.begin(1, true); err != nil {
		t.Fatal(err)
	}
	b.presize(n)
	sized := b.next.shards[0].slots()
	if sized <= minSlots {
		t.Fatalf("presize(%d) left shard 0 at %d slots", n, sized)
	}
	name := func(i int) string { return fmt.Sprintf("selector1-d%06d-example-com._domainkey.oxcloud.zone", i) }
	for i := range n {
		if _, err := b.add(Record{Name: name(i), Value: "v=DKIM1; k=rsa; p=AAAA"}); err != nil {
			t.Fatal(err)
		}
	}
	snap := b.finish()
	for i := range snap.shards {
		if got := snap.shards[i].slots(); got != sized {
			t.Fatalf("shard %d has %d slots, presized to %d: it had to grow", i, got, sized)
		}
	}
	if snap.Records() != n {
		t.Fatalf("%d records, want %d", snap.Records(), n)
	}
	for i := 0; i < n; i += 997 {
		key, err := wireName(name(i))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := lookup(snap.chunks, snap.shards, key); !ok {
			t.Fatalf("%s not found", name(i))
		}
	}
}
