package zone

import (
	"encoding/binary"
	"unsafe"

	"github.com/miekg/dns"
)

// Sizes a response must fit in.
const (
	minUDPSize = 512  // RFC 1035 without EDNS
	maxUDPSize = 1232 // what we send at most over UDP and advertise (DNS flag day 2020)
	maxTCPSize = 65535
)

// Disposition says what the wire path did with a message.
type Disposition uint8

const (
	Answered Disposition = iota // resp holds the response
	Dropped                     // no response: not a query, or too short to answer
	Special                     // zone transfer, TSIG or NOTIFY: needs the full message path
)

// query is what respond needs from a parsed query.
type query struct {
	qtype   uint16
	qclass  uint16
	qend    int // offset just after the question
	edns    bool
	do      bool
	badVers bool
	udpSize int
	nameKey [255]byte
	nameLen int
	hash    uint64 // of nameKey, when hashed
	hashed  bool
}

// Stat is what a response was, for metrics.
type Stat struct {
	Qtype uint16
	Rcode int
	// ident tells answers apart for response-rate limiting (rrl.go): the
	// address of the rendered body, one per name and type, so that no name
	// is hashed again; identNXDomain, or identError plus the rcode.
	ident uint64
}

// respond writes the response to the DNS message q into dst (which must
// have room for maxTCPSize octets) and returns it. It never allocates and
// never panics on any input: FuzzServeDNS holds it to that.
func (s *Snapshot) respond(dst, q []byte, tcp bool) ([]byte, Disposition, Stat) {
	var p query
	return s.respondTo(dst, q, tcp, &p)
}

// prepare parses the question of q into p and hashes its name, for
// respondTo, when q is a query with one question; else it leaves p for
// respondTo to parse (and refuse).
func (p *query) prepare(q []byte) {
	p.qend, p.hashed = 0, false
	if len(q) < 12 || q[2]&0x80 != 0 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return
	}
	if _, ok := p.parseQuestion(q); ok {
		p.hash, p.hashed = hashKey(p.nameKey[:p.nameLen]), true
	}
}

// respondTo is respond with the question already in p when prepare parsed
// it (p.qend set); p is otherwise scratch.
func (s *Snapshot) respondTo(dst, q []byte, tcp bool, p *query) ([]byte, Disposition, Stat) {
	if len(q) < 12 || q[2]&0x80 != 0 {
		// Too short to carry an ID, or a response: answering could loop
		// or amplify.
		return nil, Dropped, Stat{}
	}
	opcode := int(q[2]>>3) & 0xF
	qd := binary.BigEndian.Uint16(q[4:])
	an := binary.BigEndian.Uint16(q[6:])
	ns := binary.BigEndian.Uint16(q[8:])
	ar := binary.BigEndian.Uint16(q[10:])

	p.edns, p.do, p.badVers, p.udpSize = false, false, false, 0
	if qd != 1 {
		return header(dst, q, dns.RcodeFormatError), Answered, Stat{Rcode: dns.RcodeFormatError}
	}
	off, ok := p.qend, p.qend != 0
	if !ok {
		p.hashed = false
		off, ok = p.parseQuestion(q)
	}
	if !ok {
		return header(dst, q, dns.RcodeFormatError), Answered, Stat{Rcode: dns.RcodeFormatError}
	}
	st := Stat{Qtype: p.qtype}
	switch opcode {
	case dns.OpcodeQuery:
	case dns.OpcodeNotify:
		// We are the primary: nobody notifies us; answered on the full
		// path only so that a signed NOTIFY gets a signed refusal.
		return nil, Special, st
	case dns.OpcodeUpdate:
		st.Rcode = dns.RcodeRefused
		return s.errorWithQuestion(dst, q, p, st.Rcode), Answered, st
	default:
		st.Rcode = dns.RcodeNotImplemented
		return s.errorWithQuestion(dst, q, p, st.Rcode), Answered, st
	}
	if p.qtype == dns.TypeAXFR || p.qtype == dns.TypeIXFR {
		return nil, Special, st
	}
	if an != 0 || ns != 0 {
		st.Rcode = dns.RcodeFormatError
		return header(dst, q, st.Rcode), Answered, st
	}
	// Additional section: EDNS(0) OPT, and TSIG which needs the full path.
	seenOPT := false
	for i := 0; i < int(ar); i++ {
		nameEnd, ok := skipName(q, off)
		if !ok || nameEnd+10 > len(q) {
			st.Rcode = dns.RcodeFormatError
			return header(dst, q, st.Rcode), Answered, st
		}
		rtype := binary.BigEndian.Uint16(q[nameEnd:])
		rdlen := int(binary.BigEndian.Uint16(q[nameEnd+8:]))
		end := nameEnd + 10 + rdlen
		if end > len(q) {
			st.Rcode = dns.RcodeFormatError
			return header(dst, q, st.Rcode), Answered, st
		}
		switch rtype {
		case dns.TypeOPT:
			if seenOPT || nameEnd != off+1 { // RFC 6891: one OPT, owned by the root
				st.Rcode = dns.RcodeFormatError
				return header(dst, q, st.Rcode), Answered, st
			}
			seenOPT = true
			p.edns = true
			p.udpSize = int(binary.BigEndian.Uint16(q[nameEnd+2:]))
			p.badVers = q[nameEnd+5] != 0
			p.do = q[nameEnd+6]&0x80 != 0
		case dns.TypeTSIG:
			return nil, Special, st
		}
		off = end
	}
	limit := maxTCPSize
	if !tcp {
		limit = minUDPSize
		if p.edns {
			limit = min(max(p.udpSize, minUDPSize), maxUDPSize)
		}
	}
	if p.badVers {
		// RFC 6891 §6.1.3: BADVERS (16) is carried in the OPT's extended
		// rcode; the header says NOERROR.
		st.Rcode = dns.RcodeBadVers
		out := s.begin(dst, q, p, 0, false)
		return appendOPT(out, 1, p.do), Answered, st
	}
	switch p.qtype {
	case dns.TypeOPT, dns.TypeTSIG, dns.TypeTKEY:
		st.Rcode = dns.RcodeFormatError
		return s.errorWithQuestion(dst, q, p, st.Rcode), Answered, st
	case dns.TypeMAILA, dns.TypeMAILB:
		st.Rcode = dns.RcodeNotImplemented
		return s.errorWithQuestion(dst, q, p, st.Rcode), Answered, st
	}
	key := p.nameKey[:p.nameLen]
	if p.qclass != dns.ClassINET || !inZone(key, s.zoneWire) {
		st.Rcode = dns.RcodeRefused
		return s.errorWithQuestion(dst, q, p, st.Rcode), Answered, st
	}
	body := s.negative
	rcode := dns.RcodeSuccess
	if !p.hashed {
		p.hash = hashKey(key)
	}
	if n, ok := lookupHash(s.chunks, s.shards, key, p.hash); !ok {
		rcode = dns.RcodeNameError
	} else if b := n.find(p.qtype); b != nil {
		body = b
	}
	st.Rcode = rcode
	if rcode == dns.RcodeNameError {
		st.ident = identNXDomain
	} else {
		st.ident = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(body))))
	}
	out := s.begin(dst, q, p, rcode, true)
	size := len(out) + len(body) - 6
	if p.edns {
		size += 11
	}
	if size > limit {
		out[2] |= 0x02 // TC: the client retries over TCP
	} else {
		copy(out[6:12], body[:6])
		out = append(out, body[6:]...)
	}
	if p.edns {
		out = appendOPT(out, 0, p.do)
	}
	return out, Answered, st
}

// parseQuestion reads the one question, lower-casing its name into
// p.nameKey, and returns the offset after it.
func (p *query) parseQuestion(q []byte) (int, bool) {
	off := 12
	n := 0
	for {
		if off >= len(q) {
			return 0, false
		}
		l := int(q[off])
		if l == 0 {
			p.nameKey[n] = 0
			n++
			off++
			break
		}
		// A compression pointer in the first name of a message can only
		// point into the header; labels are at most 63 octets.
		if l > 63 || off+1+l > len(q) || n+1+l+1 > 255 {
			return 0, false
		}
		p.nameKey[n] = byte(l)
		for i := 1; i <= l; i++ {
			c := q[off+i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			p.nameKey[n+i] = c
		}
		n += 1 + l
		off += 1 + l
	}
	if off+4 > len(q) {
		return 0, false
	}
	p.nameLen = n
	p.qtype = binary.BigEndian.Uint16(q[off:])
	p.qclass = binary.BigEndian.Uint16(q[off+2:])
	p.qend = off + 4
	return p.qend, true
}

// skipName steps over a possibly compressed name.
func skipName(q []byte, off int) (int, bool) {
	for {
		if off >= len(q) {
			return 0, false
		}
		l := int(q[off])
		switch {
		case l == 0:
			return off + 1, true
		case l&0xC0 == 0xC0:
			if off+2 > len(q) {
				return 0, false
			}
			return off + 2, true
		case l > 63:
			return 0, false
		}
		off += 1 + l
	}
}

// header is a bare error response: the ID, opcode and RD of the query.
func header(dst, q []byte, rcode int) []byte {
	out := dst[:12]
	copy(out, q[:2])
	out[2] = 0x80 | q[2]&0x79 // QR, opcode, RD
	out[3] = byte(rcode & 0xF)
	clear(out[4:12])
	return out
}

// begin writes the header and echoes the question exactly as asked.
func (s *Snapshot) begin(dst, q []byte, p *query, rcode int, aa bool) []byte {
	out := dst[:12]
	copy(out, q[:2])
	out[2] = 0x80 | q[2]&0x79 // QR, opcode, RD
	if aa {
		out[2] |= 0x04
	}
	out[3] = q[3]&0x10 | byte(rcode&0xF) // CD copied
	clear(out[4:12])
	out[5] = 1
	return append(out, q[12:p.qend]...)
}

func (s *Snapshot) errorWithQuestion(dst, q []byte, p *query, rcode int) []byte {
	out := s.begin(dst, q, p, rcode, false)
	if p.edns && !p.badVers {
		out = appendOPT(out, 0, p.do)
	}
	return out
}

// appendOPT adds our OPT record and counts it in ARCOUNT.
func appendOPT(out []byte, extRcode byte, do bool) []byte {
	binary.BigEndian.PutUint16(out[10:], binary.BigEndian.Uint16(out[10:])+1)
	var flags byte
	if do {
		flags = 0x80
	}
	return append(out, 0, // root
		byte(dns.TypeOPT>>8), byte(dns.TypeOPT),
		byte(maxUDPSize>>8), byte(maxUDPSize&0xFF),
		extRcode, 0, flags, 0, // extended rcode, version 0, DO, Z
		0, 0) // no options
}
