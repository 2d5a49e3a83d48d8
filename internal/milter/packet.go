package milter

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// A milter packet is a 4-byte big-endian length, then that many bytes: a
// command (or reply) code and its data. The codes and flags below are
// libmilter's (mfdef.h), as Postfix and Sendmail send them.

// Commands, MTA to milter.
const (
	cmdAbort   = 'A' // SMFIC_ABORT: forget the message; no reply
	cmdBody    = 'B' // SMFIC_BODY: a body chunk
	cmdConnect = 'C' // SMFIC_CONNECT: host\0 family [port(2) address\0]
	cmdMacro   = 'D' // SMFIC_MACRO: stage, then name\0value\0 pairs; no reply
	cmdEOM     = 'E' // SMFIC_BODYEOB: end of message, maybe with a last chunk
	cmdHelo    = 'H' // SMFIC_HELO: name\0
	cmdQuitNC  = 'K' // SMFIC_QUIT_NC: the session ends, the connection is reused
	cmdHeader  = 'L' // SMFIC_HEADER: name\0value\0
	cmdMail    = 'M' // SMFIC_MAIL: args\0...
	cmdEOH     = 'N' // SMFIC_EOH: end of the header
	cmdOptNeg  = 'O' // SMFIC_OPTNEG: version, actions, protocol (uint32 each)
	cmdQuit    = 'Q' // SMFIC_QUIT: close; no reply
	cmdRcpt    = 'R' // SMFIC_RCPT: args\0...
	cmdData    = 'T' // SMFIC_DATA
	cmdUnknown = 'U' // SMFIC_UNKNOWN: an SMTP command the MTA did not know, \0
)

// Replies, milter to MTA.
const (
	replyAccept    = 'a' // SMFIR_ACCEPT: the message passes, send no more of it
	replyContinue  = 'c' // SMFIR_CONTINUE
	replyInsHeader = 'i' // SMFIR_INSHEADER: index(4) name\0 value\0
	replyOptNeg    = 'O' // SMFIC_OPTNEG's answer
	replyTempfail  = 't' // SMFIR_TEMPFAIL: the MTA answers 4xx and retries later
)

// Actions the milter asks to perform (SMFIF_*): inserting a header field
// (SMFIR_INSHEADER) comes under SMFIF_ADDHDRS.
const actionAddHeaders uint32 = 0x01

// ProtocolFlag is a set of SMFIP_* bits: stages the MTA need not send and
// stages it need not wait a reply for.
type ProtocolFlag uint32

// The SMFIP_* bits.
const (
	flagNoConnect      ProtocolFlag = 0x01       // SMFIP_NOCONNECT
	flagNoHelo         ProtocolFlag = 0x02       // SMFIP_NOHELO
	flagNoMail         ProtocolFlag = 0x04       // SMFIP_NOMAIL
	flagNoRcpt         ProtocolFlag = 0x08       // SMFIP_NORCPT
	flagNoBody         ProtocolFlag = 0x10       // SMFIP_NOBODY
	flagNoHeaders      ProtocolFlag = 0x20       // SMFIP_NOHDRS
	flagNoEOH          ProtocolFlag = 0x40       // SMFIP_NOEOH
	flagNoReplyHeader  ProtocolFlag = 0x80       // SMFIP_NR_HDR
	flagNoUnknown      ProtocolFlag = 0x100      // SMFIP_NOUNKNOWN
	flagNoData         ProtocolFlag = 0x200      // SMFIP_NODATA
	flagSkip           ProtocolFlag = 0x400      // SMFIP_SKIP
	flagRcptRejected   ProtocolFlag = 0x800      // SMFIP_RCPT_REJ
	flagNoReplyConnect ProtocolFlag = 0x1000     // SMFIP_NR_CONN
	flagNoReplyHelo    ProtocolFlag = 0x2000     // SMFIP_NR_HELO
	flagNoReplyMail    ProtocolFlag = 0x4000     // SMFIP_NR_MAIL
	flagNoReplyRcpt    ProtocolFlag = 0x8000     // SMFIP_NR_RCPT
	flagNoReplyData    ProtocolFlag = 0x10000    // SMFIP_NR_DATA
	flagNoReplyUnknown ProtocolFlag = 0x20000    // SMFIP_NR_UNKN
	flagNoReplyEOH     ProtocolFlag = 0x40000    // SMFIP_NR_EOH
	flagNoReplyBody    ProtocolFlag = 0x80000    // SMFIP_NR_BODY
	flagHeaderLeadSpc  ProtocolFlag = 0x100000   // SMFIP_HDR_LEADSPC
	flagMaxData256K    ProtocolFlag = 0x10000000 // SMFIP_MDS_256K
	flagMaxData1M      ProtocolFlag = 0x20000000 // SMFIP_MDS_1M
)

var flagNames = []struct {
	f    ProtocolFlag
	name string
}{
	{flagNoConnect, "NOCONNECT"}, {flagNoHelo, "NOHELO"}, {flagNoMail, "NOMAIL"}, {flagNoRcpt, "NORCPT"},
	{flagNoBody, "NOBODY"}, {flagNoHeaders, "NOHDRS"}, {flagNoEOH, "NOEOH"}, {flagNoReplyHeader, "NR_HDR"},
	{flagNoUnknown, "NOUNKNOWN"}, {flagNoData, "NODATA"}, {flagSkip, "SKIP"}, {flagRcptRejected, "RCPT_REJ"},
	{flagNoReplyConnect, "NR_CONN"}, {flagNoReplyHelo, "NR_HELO"}, {flagNoReplyMail, "NR_MAIL"},
	{flagNoReplyRcpt, "NR_RCPT"}, {flagNoReplyData, "NR_DATA"}, {flagNoReplyUnknown, "NR_UNKN"},
	{flagNoReplyEOH, "NR_EOH"}, {flagNoReplyBody, "NR_BODY"}, {flagHeaderLeadSpc, "HDR_LEADSPC"},
	{flagMaxData256K, "MDS_256K"}, {flagMaxData1M, "MDS_1M"},
}

// String names the bits as libmilter does, without the SMFIP_ prefix.
func (p ProtocolFlag) String() string {
	var b []byte
	for _, n := range flagNames {
		if p&n.f == 0 {
			continue
		}
		if len(b) > 0 {
			b = append(b, '|')
		}
		b = append(b, n.name...)
		p &^= n.f
	}
	if p != 0 || len(b) == 0 {
		if len(b) > 0 {
			b = append(b, '|')
		}
		b = fmt.Appendf(b, "%#x", uint32(p))
	}
	return string(b)
}

// maxPacket is the largest packet accepted: 1 MiB, the largest data size
// the protocol negotiates (SMFIP_MDS_1M). The milter asks for none, so an
// MTA sends body chunks of at most 64 KiB; a header field is one packet and
// may be longer, never this long (Postfix's header_size_limit is 100 KiB).
const maxPacket = 1 << 20

// protocolError ends a session: the MTA sent what the protocol does not
// allow. Reason is the label of dkimd_milter_protocol_errors_total.
type protocolError struct {
	reason string
	detail string
}

func (e *protocolError) Error() string { return "milter: " + e.reason + ": " + e.detail }

func malformed(reason, format string, args ...any) *protocolError {
	return &protocolError{reason: reason, detail: fmt.Sprintf(format, args...)}
}

// Reasons a session ends on a protocol error, the labels of
// dkimd_milter_protocol_errors_total.
const (
	reasonZeroLength  = "zero-length"        // a packet length of 0: not even a command code
	reasonTooLong     = "too-long"           // a packet length over maxPacket
	reasonMissingNUL  = "missing-nul"        // a string field without its terminating NUL
	reasonShort       = "short"              // a field cut short (address family, port, option words)
	reasonUnknown     = "unknown-command"    // a command code the protocol does not have
	reasonOutOfOrder  = "unexpected-command" // a command where the session's state does not allow it
	reasonTruncated   = "truncated"          // the connection ended inside a packet
	reasonNegotiation = "negotiation"        // an MTA that cannot take what the milter does
)

var protocolReasons = []string{reasonZeroLength, reasonTooLong, reasonMissingNUL, reasonShort, reasonUnknown,
	reasonOutOfOrder, reasonTruncated, reasonNegotiation}

// packetLength checks a packet's 4-byte length prefix, before anything is
// read or allocated for the packet.
func packetLength(prefix []byte) (int, error) {
	n := binary.BigEndian.Uint32(prefix)
	switch {
	case n == 0:
		return 0, malformed(reasonZeroLength, "packet length 0")
	case n > maxPacket:
		return 0, malformed(reasonTooLong, "packet length %d over the %d limit", n, maxPacket)
	}
	return int(n), nil
}

// command is a parsed packet. Its slices point into the packet, which is
// valid only until the next packet is read: whatever outlives the packet
// is copied.
type command struct {
	code byte
	// data is the packet after the code: a body chunk, or the pairs of a
	// macro packet (validated: each name and value ends with NUL).
	data []byte
	// name and value of a header field; stage of a macro packet in name.
	name, value []byte
	// the words of SMFIC_OPTNEG
	version, actions uint32
	protocol         ProtocolFlag
}

// parsePacket checks one packet (its code and data, the length prefix
// removed) against the layout of its command. It allocates nothing and
// never reads past p.
func parsePacket(p []byte) (command, error) {
	if len(p) == 0 {
		return command{}, malformed(reasonZeroLength, "empty packet")
	}
	c := command{code: p[0]}
	data := p[1:]
	switch c.code {
	case cmdOptNeg:
		if len(data) < 12 {
			return c, malformed(reasonShort, "option negotiation of %d bytes, want 12", len(data))
		}
		c.version = binary.BigEndian.Uint32(data)
		c.actions = binary.BigEndian.Uint32(data[4:])
		c.protocol = ProtocolFlag(binary.BigEndian.Uint32(data[8:]))
	case cmdMacro:
		if len(data) == 0 {
			return c, malformed(reasonShort, "macro packet without its stage")
		}
		c.name, c.data = data[:1], data[1:]
		if err := checkStrings(c.data, "macro"); err != nil {
			return c, err
		}
		if bytes.Count(c.data, []byte{0})%2 != 0 {
			return c, malformed(reasonMissingNUL, "macro %q without a value", lastString(c.data))
		}
	case cmdConnect:
		host, rest, ok := cstring(data)
		if !ok {
			return c, malformed(reasonMissingNUL, "connect host name without NUL")
		}
		c.name = host
		if len(rest) == 0 {
			return c, malformed(reasonShort, "connect without an address family")
		}
		switch family := rest[0]; family {
		case 'U': // unknown: no port, no address
		case 'L', '4', '6':
			if len(rest) < 3 {
				return c, malformed(reasonShort, "connect family %q without a port", family)
			}
			addr, tail, ok := cstring(rest[3:])
			if !ok || len(tail) > 0 {
				return c, malformed(reasonMissingNUL, "connect address without NUL")
			}
			c.value = addr
		default:
			return c, malformed(reasonShort, "connect address family %q unknown", family)
		}
	case cmdHelo, cmdUnknown:
		if err := checkString(data, c.code); err != nil {
			return c, err
		}
	case cmdMail, cmdRcpt:
		if len(data) == 0 {
			return c, malformed(reasonShort, "%c without an address", c.code)
		}
		if err := checkStrings(data, string(c.code)); err != nil {
			return c, err
		}
	case cmdHeader:
		name, rest, ok := cstring(data)
		if !ok {
			return c, malformed(reasonMissingNUL, "header field name without NUL")
		}
		value, tail, ok := cstring(rest)
		if !ok || len(tail) > 0 {
			return c, malformed(reasonMissingNUL, "header field %q: value without NUL", name)
		}
		c.name, c.value = name, value
	case cmdBody, cmdEOM:
		c.data = data // EOM may carry the last body chunk (libmilter's st_bodyend)
	case cmdAbort, cmdEOH, cmdQuit, cmdQuitNC, cmdData:
		// no data; anything after the code is ignored, as libmilter does
	default:
		return c, malformed(reasonUnknown, "command code %q", c.code)
	}
	return c, nil
}

// cstring splits b after its first NUL.
func cstring(b []byte) (s, rest []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}

// checkString checks that b is exactly one NUL-terminated string.
func checkString(b []byte, code byte) error {
	if i := bytes.IndexByte(b, 0); i != len(b)-1 {
		return malformed(reasonMissingNUL, "%c: not one NUL-terminated string", code)
	}
	return nil
}

// checkStrings checks that b is NUL-terminated strings, end to end.
func checkStrings(b []byte, what string) error {
	if len(b) > 0 && b[len(b)-1] != 0 {
		return malformed(reasonMissingNUL, "%s: last string without NUL", what)
	}
	return nil
}

func lastString(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte{0})
	if i := bytes.LastIndexByte(b, 0); i >= 0 {
		b = b[i+1:]
	}
	return b
}
