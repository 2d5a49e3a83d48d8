package zone

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
)

// Response-rate limiting (RRL) of UDP answers, as NSD and BIND do it: a
// forged source address cannot turn dkimd into an amplifier (a 4096-bit
// key's TXT answer is eleven times the query), because one answer to one
// source prefix goes out at most rate times a second. Of the answers over
// the limit every slip-th is sent empty with TC set, so a real resolver
// behind that prefix retries over TCP, which cannot be forged; the rest
// are dropped (docs/reliability.md, "Hostile input: DNS").
//
// The limiter sits on the path of every UDP query, so it allocates
// nothing, takes no lock and holds a fixed amount of memory whatever the
// flood: one table of rrlBuckets 64-bit words shared by every socket's
// worker (the kernel spreads one source over all SO_REUSEPORT sockets, so
// tables per socket would multiply the limit) and updated by
// compare-and-swap. A bucket holds the tag of the (prefix, answer) pair it
// counts, the second it counts in and the count. A pair that hashes to a
// bucket held by another pair takes it over and starts from zero: under a
// flood of random sources the table stays the same size, and the cost is
// that a limited pair may now and then get a few answers more.
//
// The window is the calendar second of the serving clock, read once per
// recvmmsg batch, so "at most rate a second" holds exactly for every
// second, and a burst across a second's edge gets at most twice the rate.
type rrl struct {
	rate   uint64 // answers per second per pair; above rrlMaxCount: unlimited
	slip   uint64 // every slip-th limited answer is truncated; 0 drops all
	exempt []netip.Prefix
	seed   uint64
	table  []atomic.Uint64
}

// rrlBuckets is the size of the table: 8 MiB, touched only as far as
// sources arrive. NSD's rrl-size is a million buckets too.
const rrlBuckets = 1 << 20

// A bucket is tag<<40 | second<<24 | count.
const (
	rrlCountBits = 24
	rrlSecBits   = 16
	rrlMaxCount  = 1<<rrlCountBits - 1
	rrlSecMask   = 1<<rrlSecBits - 1
)

// rrlAction is what the limiter says about one answer.
type rrlAction uint8

const (
	rrlPass rrlAction = iota
	rrlDrop
	rrlSlip
)

// newRRL is a limiter of rate answers a second, or nil when rate is 0.
func newRRL(rate, slip int, exempt []netip.Prefix) *rrl {
	if rate <= 0 {
		return nil
	}
	// The seed keeps a sender from choosing sources that share a bucket.
	return &rrl{rate: uint64(rate), slip: uint64(max(slip, 0)), exempt: exempt,
		seed: rand.Uint64(), table: make([]atomic.Uint64, rrlBuckets)}
}

// Identities of answers that carry no rendered body of their own (see
// Stat.ident); real bodies are told apart by their address, which is never
// this small.
const (
	identNXDomain = 1 // every NXDOMAIN of the zone is one answer, as NSD counts it
	identError    = 2 // identError + rcode: errors are grouped by rcode
)

// exempted says whether from is in one of the --dns-rrl-exempt prefixes.
func (l *rrl) exempted(from netip.Addr) bool {
	for _, p := range l.exempt {
		if p.Contains(from) {
			return true
		}
	}
	return false
}

// prefixOf is from's /24 (IPv4) or /56 (IPv6), with the family in the top
// bits so that the two never coincide.
func prefixOf(from netip.Addr) uint64 {
	if from.Is4() {
		a := from.As4()
		return 4<<60 | uint64(a[0])<<16 | uint64(a[1])<<8 | uint64(a[2])
	}
	a := from.As16()
	return 6<<60 ^ binary.BigEndian.Uint64(a[:8])>>8
}

// mix64 is the finaliser of MurmurHash3: every input bit moves every
// output bit, so the bucket index and the tag are independent.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// check counts one answer with identity ident to from in second sec and
// says whether it may go out.
func (l *rrl) check(from netip.Addr, ident uint64, sec uint64) rrlAction {
	if len(l.exempt) > 0 && l.exempted(from) {
		return rrlPass
	}
	h := mix64(mix64(prefixOf(from)^l.seed) ^ ident)
	b := &l.table[h&(rrlBuckets-1)]
	tag := h >> (rrlSecBits + rrlCountBits)
	sec &= rrlSecMask
	var n uint64
	for {
		old := b.Load()
		n = 1
		if old>>(rrlSecBits+rrlCountBits) == tag && (old>>rrlCountBits)&rrlSecMask == sec {
			n = min(old&rrlMaxCount+1, rrlMaxCount)
		}
		if b.CompareAndSwap(old, tag<<(rrlSecBits+rrlCountBits)|sec<<rrlCountBits|n) {
			break
		}
	}
	if n <= l.rate || l.rate >= rrlMaxCount {
		return rrlPass
	}
	if l.slip > 0 && (n-l.rate)%l.slip == 0 {
		return rrlSlip
	}
	return rrlDrop
}

// slipped cuts a UDP response down to its header and question and sets
// TC: the client learns nothing but to ask again over TCP, and the
// response is no larger than the query was.
func slipped(resp []byte) []byte {
	end := 12
	if binary.BigEndian.Uint16(resp[4:]) == 1 {
		if e, ok := skipName(resp, 12); ok && e+4 <= len(resp) {
			end = e + 4
		} else {
			binary.BigEndian.PutUint16(resp[4:], 0)
		}
	}
	resp = resp[:end]
	resp[2] |= 0x02
	clear(resp[6:12])
	return resp
}
