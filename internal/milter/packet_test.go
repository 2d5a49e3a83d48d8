package milter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

// packet frames code and data as the MTA sends them.
func packet(code byte, data ...string) []byte {
	d := strings.Join(data, "")
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(d)+1)), append([]byte{code}, d...)...)
}

func optneg(version, actions uint32, protocol ProtocolFlag) []byte {
	b := binary.BigEndian.AppendUint32(nil, version)
	b = binary.BigEndian.AppendUint32(b, actions)
	b = binary.BigEndian.AppendUint32(b, uint32(protocol))
	return packet(cmdOptNeg, string(b))
}

// malformedPackets are every kind of bad packet the milter must turn into
// the end of one session, with the reason it is counted under. The
// end-to-end test in cmd/dkimd sends the same kinds to a running serve.
var malformedPackets = []struct {
	name   string
	wire   []byte // as sent, length prefix included
	reason string
}{
	{"zero length", []byte{0, 0, 0, 0}, reasonZeroLength},
	{"length over 1 MiB", []byte{0x00, 0x10, 0x00, 0x01, 'L'}, reasonTooLong},
	{"length 4 GiB", []byte{0xff, 0xff, 0xff, 0xff}, reasonTooLong},
	{"unknown command", packet('Z', "x"), reasonUnknown},
	{"reply code as a command", packet(replyAccept), reasonUnknown},
	{"option negotiation cut short", packet(cmdOptNeg, "\x00\x00\x00\x06\x00\x00"), reasonShort},
	{"connect without NUL", packet(cmdConnect, "client.example"), reasonMissingNUL},
	{"connect without family", packet(cmdConnect, "client.example\x00"), reasonShort},
	{"connect family without port", packet(cmdConnect, "client.example\x004\x00"), reasonShort},
	{"connect unknown family", packet(cmdConnect, "client.example\x00X\x00\x19192.0.2.1\x00"), reasonShort},
	{"connect address without NUL", packet(cmdConnect, "client.example\x004\x00\x19192.0.2.1"), reasonMissingNUL},
	{"connect address with trailing bytes", packet(cmdConnect, "client.example\x004\x00\x19192.0.2.1\x00junk"), reasonMissingNUL},
	{"helo without NUL", packet(cmdHelo, "client.example"), reasonMissingNUL},
	{"helo with two strings", packet(cmdHelo, "a\x00b\x00"), reasonMissingNUL},
	{"mail without NUL", packet(cmdMail, "<alice@example.com>"), reasonMissingNUL},
	{"mail empty", packet(cmdMail), reasonShort},
	{"rcpt without NUL", packet(cmdRcpt, "<bob@example.net>\x00SIZE=10"), reasonMissingNUL},
	{"header name without NUL", packet(cmdHeader, "Subject"), reasonMissingNUL},
	{"header value without NUL", packet(cmdHeader, "Subject\x00hello"), reasonMissingNUL},
	{"header with a third string", packet(cmdHeader, "Subject\x00hello\x00x\x00"), reasonMissingNUL},
	{"macro without stage", packet(cmdMacro), reasonShort},
	{"macro without NUL", packet(cmdMacro, "Ci\x00ABC"), reasonMissingNUL},
	{"macro name without value", packet(cmdMacro, "Ci\x00ABC\x00j\x00"), reasonMissingNUL},
	{"unknown SMTP command without NUL", packet(cmdUnknown, "XYZZY"), reasonMissingNUL},
}

func TestParsePacketRefusesMalformed(t *testing.T) {
	for _, tc := range malformedPackets {
		t.Run(tc.name, func(t *testing.T) {
			err := parseWire(tc.wire)
			var pe *protocolError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v, want a protocol error", err)
			}
			if pe.reason != tc.reason {
				t.Errorf("reason %q (%s), want %q", pe.reason, pe.detail, tc.reason)
			}
		})
	}
}

// parseWire frames and parses what a peer sent, as a session does.
func parseWire(wire []byte) error {
	if len(wire) < 4 {
		return errors.New("test case shorter than a length")
	}
	n, err := packetLength(wire)
	if err != nil {
		return err
	}
	if len(wire) < 4+n {
		return errTruncated
	}
	_, err = parsePacket(wire[4 : 4+n])
	return err
}

func TestParsePacket(t *testing.T) {
	for _, tc := range []struct {
		name        string
		wire        []byte
		code        byte
		name_, val  string
		data        string
		wantVersion uint32
	}{
		{"negotiation", optneg(6, 0x1ff, 0x1fffff), cmdOptNeg, "", "", "", 6},
		{"negotiation with more words", append(optneg(6, 1, 0), 0, 0, 0, 0), 0, "", "", "", 0},
		{"connect inet", packet(cmdConnect, "client.example\x004\x00\x19192.0.2.1\x00"), cmdConnect, "client.example", "192.0.2.1", "", 0},
		{"connect unix", packet(cmdConnect, "localhost\x00L\x00\x00/run/s\x00"), cmdConnect, "localhost", "/run/s", "", 0},
		{"connect unknown family", packet(cmdConnect, "localhost\x00U"), cmdConnect, "localhost", "", "", 0},
		{"helo", packet(cmdHelo, "client.example\x00"), cmdHelo, "", "", "", 0},
		{"mail with args", packet(cmdMail, "<a@example.com>\x00SIZE=10\x00"), cmdMail, "", "", "", 0},
		{"header", packet(cmdHeader, "Subject\x00 hello\n\tworld\x00"), cmdHeader, "Subject", " hello\n\tworld", "", 0},
		{"header empty value", packet(cmdHeader, "X\x00\x00"), cmdHeader, "X", "", "", 0},
		{"macro", packet(cmdMacro, "Ni\x00ABC123\x00{daemon_name}\x00smtpd\x00"), cmdMacro, "N", "", "i\x00ABC123\x00{daemon_name}\x00smtpd\x00", 0},
		{"macro with no pairs", packet(cmdMacro, "C"), cmdMacro, "C", "", "", 0},
		{"body", packet(cmdBody, "line\r\n\x00binary"), cmdBody, "", "", "line\r\n\x00binary", 0},
		{"empty body chunk", packet(cmdBody), cmdBody, "", "", "", 0},
		{"end of message with a last chunk", packet(cmdEOM, "last\r\n"), cmdEOM, "", "", "last\r\n", 0},
		{"end of header", packet(cmdEOH), cmdEOH, "", "", "", 0},
		{"abort", packet(cmdAbort), cmdAbort, "", "", "", 0},
		{"quit", packet(cmdQuit), cmdQuit, "", "", "", 0},
		{"quit, new connection", packet(cmdQuitNC), cmdQuitNC, "", "", "", 0},
		{"data", packet(cmdData), cmdData, "", "", "", 0},
		{"unknown SMTP command", packet(cmdUnknown, "XYZZY\x00"), cmdUnknown, "", "", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := packetLength(tc.wire)
			if err != nil {
				t.Fatal(err)
			}
			c, err := parsePacket(tc.wire[4 : 4+n])
			if err != nil {
				t.Fatal(err)
			}
			if tc.code == 0 {
				return
			}
			if c.code != tc.code || string(c.name) != tc.name_ || string(c.value) != tc.val {
				t.Errorf("got %q %q %q, want %q %q %q", c.code, c.name, c.value, tc.code, tc.name_, tc.val)
			}
			if (tc.code == cmdBody || tc.code == cmdEOM || tc.code == cmdMacro) && string(c.data) != tc.data {
				t.Errorf("data %q, want %q", c.data, tc.data)
			}
			if c.version != tc.wantVersion {
				t.Errorf("version %d, want %d", c.version, tc.wantVersion)
			}
		})
	}
}

// TestReaderChecksTheLengthFirst: a length prefix alone makes the reader
// neither wait for nor allocate the packet it announces.
func TestReaderChecksTheLengthFirst(t *testing.T) {
	for _, tc := range malformedPackets[:3] {
		t.Run(tc.name, func(t *testing.T) {
			// The stream would block after the prefix: the reader must
			// not try to read the packet.
			r := newPacketReader(io.MultiReader(bytes.NewReader(tc.wire[:4]), blockingReader{t}), nil)
			_, err := r.next()
			var pe *protocolError
			if !errors.As(err, &pe) || pe.reason != tc.reason {
				t.Fatalf("error %v, want %s", err, tc.reason)
			}
			if cap(r.buf) != 0 {
				t.Errorf("the reader allocated %d bytes", cap(r.buf))
			}
		})
	}
}

type blockingReader struct{ t *testing.T }

func (b blockingReader) Read([]byte) (int, error) {
	b.t.Error("the reader read past the length prefix")
	return 0, io.EOF
}

// TestReaderGrowsWithTheData: a packet announced at 1 MiB whose bytes do
// not come costs what came, not 1 MiB; one that comes whole is read whole.
func TestReaderGrowsWithTheData(t *testing.T) {
	prefix := binary.BigEndian.AppendUint32(nil, maxPacket)
	r := newPacketReader(io.MultiReader(bytes.NewReader(prefix), bytes.NewReader([]byte("Lx"))), nil)
	if _, err := r.next(); !errors.Is(err, errTruncated) {
		t.Fatalf("error %v, want truncated", err)
	}
	if cap(r.buf) > readBuffer {
		t.Errorf("two bytes of a 1 MiB packet made the reader hold %d bytes", cap(r.buf))
	}
	big := append(prefix, cmdBody)
	big = append(big, bytes.Repeat([]byte("x"), maxPacket-1)...)
	r = newPacketReader(io.MultiReader(bytes.NewReader(big), bytes.NewReader(packet(cmdQuit))), nil)
	p, err := r.next()
	if err != nil || len(p) != maxPacket || p[0] != cmdBody {
		t.Fatalf("1 MiB packet: %d bytes, %v", len(p), err)
	}
	if p, err := r.next(); err != nil || p[0] != cmdQuit {
		t.Fatalf("after it: %q %v", p, err)
	}
	if cap(r.buf) != 0 {
		t.Errorf("the 1 MiB buffer is kept after the packet")
	}
	if _, err := r.next(); err != io.EOF {
		t.Errorf("end of stream between packets: %v, want io.EOF", err)
	}
}

func TestProtocolFlagString(t *testing.T) {
	if got, want := (flagNoConnect | flagNoReplyBody | 0x40000000).String(), "NOCONNECT|NR_BODY|0x40000000"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	if got := ProtocolFlag(0).String(); got != "0x0" {
		t.Errorf("zero: %q", got)
	}
}
