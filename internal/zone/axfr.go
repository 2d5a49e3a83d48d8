package zone

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// A full zone transfer is written here from the snapshot's rendered
// answers: a TXT record is its owner's wire name followed by its body as
// the UDP path sends it, copied into one message buffer that is reused for
// every message, signed with TSIG here and written to the connection with
// its length prefix. Through miekg/dns every record had to become a dns.RR,
// and every 16 KB message was packed, copied for TSIG and copied again for
// the length prefix: at a million domains, gigabytes of garbage for one
// first transfer (docs/performance.md, "DNS (session 5)"). IXFR, a few
// records, keeps miekg/dns's path.

const (
	axfrMsgTarget = 16000 // a message is sent once it holds this much
	axfrMsgMax    = 65535 // what the 2-octet TCP length prefix allows
	tsigFudge     = 300
)

// tsigHash is the HMAC hash of a TSIG algorithm name (lower case, FQDN).
func tsigHash(alg string) func() hash.Hash {
	switch strings.ToLower(alg) {
	case dns.HmacSHA1:
		return sha1.New
	case dns.HmacSHA224:
		return sha256.New224
	case dns.HmacSHA256:
		return sha256.New
	case dns.HmacSHA384:
		return sha512.New384
	case dns.HmacSHA512:
		return sha512.New
	}
	return nil
}

// tsigChain signs the messages of one response stream (RFC 8945 §5.3.1):
// the first over the request's MAC, the message and all TSIG variables, each
// later one over the previous MAC, the message and the timers only.
type tsigChain struct {
	keyName, alg []byte // canonical (lower-case) wire names
	mac          hash.Hash
	prev         []byte // the request's MAC, then each message's
	later        bool
}

func newTSIGChain(key *TSIGKey, req *dns.TSIG) (*tsigChain, error) {
	newHash := tsigHash(req.Algorithm)
	if newHash == nil {
		return nil, errors.New("zone: unknown TSIG algorithm " + req.Algorithm)
	}
	secret, err := base64.StdEncoding.DecodeString(key.Secret)
	if err != nil {
		return nil, err
	}
	reqMAC, err := hex.DecodeString(req.MAC)
	if err != nil {
		return nil, err
	}
	keyName, err := wireName(strings.ToLower(req.Hdr.Name))
	if err != nil {
		return nil, err
	}
	alg, err := wireName(strings.ToLower(req.Algorithm))
	if err != nil {
		return nil, err
	}
	return &tsigChain{keyName: keyName, alg: alg, mac: hmac.New(newHash, secret), prev: reqMAC}, nil
}

var (
	tsigClassTTL = []byte{0, 255, 0, 0, 0, 0} // class ANY, TTL 0
	tsigNoError  = []byte{0, 0, 0, 0}         // error, other length
)

// sign appends the TSIG record to the message msg (its ID the original
// one) and counts it in ARCOUNT.
func (c *tsigChain) sign(msg []byte, now time.Time) []byte {
	var timers [8]byte // time signed (48 bits) and fudge
	t := uint64(now.Unix())
	binary.BigEndian.PutUint16(timers[0:], uint16(t>>32))
	binary.BigEndian.PutUint32(timers[2:], uint32(t))
	binary.BigEndian.PutUint16(timers[6:], tsigFudge)

	c.mac.Reset()
	var l [2]byte
	binary.BigEndian.PutUint16(l[:], uint16(len(c.prev)))
	c.mac.Write(l[:])
	c.mac.Write(c.prev)
	c.mac.Write(msg)
	if c.later {
		c.mac.Write(timers[:])
	} else {
		c.mac.Write(c.keyName)
		c.mac.Write(tsigClassTTL)
		c.mac.Write(c.alg)
		c.mac.Write(timers[:])
		c.mac.Write(tsigNoError)
		c.later = true
	}
	c.prev = c.mac.Sum(c.prev[:0])

	id := binary.BigEndian.Uint16(msg[0:])
	msg = append(msg, c.keyName...)
	msg = append(msg, 0, byte(dns.TypeTSIG), 0, 255, 0, 0, 0, 0) // type, class ANY, TTL 0
	rdlen := len(c.alg) + 8 + 2 + len(c.prev) + 6
	msg = append(msg, byte(rdlen>>8), byte(rdlen))
	msg = append(msg, c.alg...)
	msg = append(msg, timers[:]...)
	msg = append(msg, byte(len(c.prev)>>8), byte(len(c.prev)))
	msg = append(msg, c.prev...)
	msg = append(msg, byte(id>>8), byte(id), 0, 0, 0, 0) // original ID, error, other length
	binary.BigEndian.PutUint16(msg[10:], binary.BigEndian.Uint16(msg[10:])+1)
	return msg
}

// axfrBufs are the message buffers of transfers, 64 KB each.
var axfrBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2+axfrMsgMax); return &b }}

// axfrWriter builds the messages of one transfer.
type axfrWriter struct {
	w        io.Writer // the connection: messages go out with their length prefix
	conn     net.Conn  // when known, for a write deadline per message
	tsig     *tsigChain
	head     []byte // header and question of every message
	buf      []byte // 2-octet length, then the message being filled
	count    int    // records in it
	rrBuf    []byte // for records packed by miekg/dns
	messages int
}

func newAXFRWriter(w io.Writer, req *dns.Msg, tsig *tsigChain) (*axfrWriter, error) {
	head := make([]byte, 12, 12+len(req.Question[0].Name)+6)
	binary.BigEndian.PutUint16(head[0:], req.Id)
	head[2] = 0x80 | 0x04 // QR, opcode QUERY, AA
	if req.RecursionDesired {
		head[2] |= 0x01
	}
	if req.CheckingDisabled {
		head[3] = 0x10
	}
	head[5] = 1 // QDCOUNT: every message repeats the question, as miekg/dns's did
	q, err := wireName(req.Question[0].Name)
	if err != nil {
		return nil, err
	}
	head = append(head, q...)
	head = binary.BigEndian.AppendUint16(head, req.Question[0].Qtype)
	head = binary.BigEndian.AppendUint16(head, req.Question[0].Qclass)
	bp := axfrBufs.Get().(*[]byte)
	a := &axfrWriter{w: w, tsig: tsig, head: head, buf: *bp}
	if c, ok := w.(net.Conn); ok {
		a.conn = c
	}
	a.reset()
	return a, nil
}

// release gives the buffer back; the writer is not used again.
func (a *axfrWriter) release() {
	b := a.buf[:0]
	axfrBufs.Put(&b)
	a.buf = nil
}

func (a *axfrWriter) reset() {
	a.buf = append(a.buf[:2], a.head...)
	a.count = 0
}

// add appends one record in wire form, sending the message first when the
// record would take it past axfrMsgTarget.
func (a *axfrWriter) add(parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if a.count > 0 && len(a.buf)-2+n > axfrMsgTarget {
		if err := a.flush(); err != nil {
			return err
		}
	}
	// Room for the record and the TSIG record (key and algorithm names of
	// at most 255 octets, a MAC of at most 64).
	if len(a.buf)-2+n > axfrMsgMax-600 {
		return errors.New("zone: a record does not fit in a transfer message")
	}
	for _, p := range parts {
		a.buf = append(a.buf, p...)
	}
	a.count++
	return nil
}

// addRR packs rr (no name compression) and adds it.
func (a *axfrWriter) addRR(rr dns.RR) error {
	if cap(a.rrBuf) < axfrMsgMax {
		a.rrBuf = make([]byte, axfrMsgMax)
	}
	end, err := dns.PackRR(rr, a.rrBuf[:axfrMsgMax], 0, nil, false)
	if err != nil {
		return err
	}
	return a.add(a.rrBuf[:end])
}

// flush sends the message filled so far, if it holds a record.
func (a *axfrWriter) flush() error {
	if a.count == 0 {
		return nil
	}
	msg := a.buf[2:]
	binary.BigEndian.PutUint16(msg[6:], uint16(a.count))
	now := time.Now()
	if a.tsig != nil {
		msg = a.tsig.sign(msg, now)
	}
	a.buf = a.buf[:2+len(msg)]
	binary.BigEndian.PutUint16(a.buf[0:], uint16(len(msg)))
	if a.conn != nil {
		_ = a.conn.SetWriteDeadline(now.Add(10 * time.Second))
		defer a.conn.SetWriteDeadline(time.Time{})
	}
	if _, err := a.w.Write(a.buf); err != nil {
		return err
	}
	a.messages++
	a.reset()
	return nil
}

// writeAXFR writes the whole zone, the SOA first and last.
func (s *Snapshot) writeAXFR(a *axfrWriter) error {
	soa := s.params.soa(s.serial)
	if err := a.addRR(soa); err != nil {
		return err
	}
	var fail error
	emit := func(key []byte, n node) bool {
		for an := range n.all {
			if an.qtype == dns.TypeSOA {
				continue
			}
			if rr, ok := txtRR(an.body); ok {
				fail = a.add(key, rr)
			} else {
				fail = s.addUnrendered(a, key, an)
			}
			if fail != nil {
				return false
			}
		}
		return true
	}
	if n, ok := s.get(s.zoneWire); ok && !emit(s.zoneWire, n) {
		return fail
	}
	if !eachEntry(s.chunks, s.shards, func(key []byte, n node) bool {
		return string(key) == string(s.zoneWire) || emit(key, n)
	}) {
		return fail
	}
	if err := a.addRR(soa); err != nil {
		return err
	}
	return a.flush()
}

// addUnrendered adds the records of a body that is not one plain TXT
// record (the apex's NS, glue) through miekg/dns: a handful per zone.
func (s *Snapshot) addUnrendered(a *axfrWriter, key []byte, an answer) error {
	name, _, err := dns.UnpackDomainName(key, 0)
	if err != nil {
		return nil
	}
	ans, _, _, err := unrender(name, an.qtype, an.body)
	if err != nil {
		return nil
	}
	for _, rr := range ans {
		if err := a.addRR(rr); err != nil {
			return err
		}
	}
	return nil
}

// txtRR is the record of a rendered body that holds exactly one TXT record
// (appendTXT's layout: counts, a pointer to the question's name, then type,
// class, TTL, length and data) without its owner name.
func txtRR(body []byte) ([]byte, bool) {
	if len(body) < 18 || string(body[:8]) != "\x00\x01\x00\x00\x00\x00\xC0\x0C" ||
		binary.BigEndian.Uint16(body[8:]) != dns.TypeTXT ||
		int(binary.BigEndian.Uint16(body[16:])) != len(body)-18 {
		return nil, false
	}
	return body[8:], true
}

// writeAXFR sends snap by AXFR on w's connection: straight to the
// connection when the listener knows it (no copy per message), else
// through w.
func (s *Server) writeAXFR(w dns.ResponseWriter, req *dns.Msg, snap *Snapshot) error {
	chain, err := newTSIGChain(s.opts.TSIG, req.IsTsig())
	if err != nil {
		return err
	}
	var out io.Writer = unframed{w}
	if c, ok := s.conns.Load(w.RemoteAddr().String()); ok {
		out = c.(*cappedConn)
	}
	a, err := newAXFRWriter(out, req, chain)
	if err != nil {
		return err
	}
	defer a.release()
	return snap.writeAXFR(a)
}

// unframed writes a length-prefixed message through a ResponseWriter,
// which adds the prefix itself.
type unframed struct{ w dns.ResponseWriter }

func (u unframed) Write(b []byte) (int, error) {
	n, err := u.w.Write(b[2:])
	return n + 2, err
}
