package milter_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/milter/miltertest"
	"dkimd/internal/signer/signertest"
)

// mta is the MTA's end of a milter connection, packet by packet: it shows
// what the go-milter client hides, the version the milter answers with and
// whether it sends a reply where none is due.
type mta struct {
	t   *testing.T
	c   net.Conn
	r   *bufio.Reader
	out bytes.Buffer // packets not yet sent
}

func dialMTA(t *testing.T, addr string) *mta {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &mta{t: t, c: c, r: bufio.NewReader(c)}
}

// queue adds a packet to those the next flush sends.
func (m *mta) queue(code byte, data ...string) {
	n := 1
	for _, d := range data {
		n += len(d)
	}
	m.out.Write(binary.BigEndian.AppendUint32(nil, uint32(n)))
	m.out.WriteByte(code)
	for _, d := range data {
		m.out.WriteString(d)
	}
}

// flush sends the queued packets in one write, as an MTA that awaits no
// reply does.
func (m *mta) flush() {
	m.t.Helper()
	if err := m.c.SetWriteDeadline(time.Now().Add(10 * time.Second)); err != nil {
		m.t.Fatal(err)
	}
	if _, err := m.c.Write(m.out.Bytes()); err != nil {
		m.t.Fatal(err)
	}
	m.out.Reset()
}

func (m *mta) read() (code byte, data []byte) {
	m.t.Helper()
	if err := m.c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		m.t.Fatal(err)
	}
	var n uint32
	if err := binary.Read(m.r, binary.BigEndian, &n); err != nil {
		m.t.Fatalf("read reply: %v", err)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(m.r, p); err != nil {
		m.t.Fatalf("read reply: %v", err)
	}
	return p[0], p[1:]
}

// negotiate sends SMFIC_OPTNEG and returns the milter's answer.
func (m *mta) negotiate(version uint32, actions gomilter.OptAction, protocol gomilter.OptProtocol) (uint32, gomilter.OptAction, gomilter.OptProtocol) {
	m.t.Helper()
	m.queue('O', string(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil,
		version), uint32(actions)), uint32(protocol))))
	m.flush()
	code, data := m.read()
	if code != 'O' || len(data) < 12 {
		m.t.Fatalf("negotiation answered with %c %q", code, data)
	}
	return binary.BigEndian.Uint32(data), gomilter.OptAction(binary.BigEndian.Uint32(data[4:])),
		gomilter.OptProtocol(binary.BigEndian.Uint32(data[8:]))
}

// message sends one message as Postfix does. With replies, it waits for the
// milter's reply after each event, and a message accepted before its end
// ends there; without, it sends the whole message in one write, and a
// reply before the end of message's fails the test. It returns the fields
// the milter inserted.
func (m *mta) message(fields []field, body string, replies bool) []gomilter.ModifyAction {
	m.t.Helper()
	accepted := false
	event := func(code byte, data ...string) {
		m.t.Helper()
		m.queue(code, data...)
		if !replies {
			return
		}
		m.flush()
		switch c, d := m.read(); {
		case c == 'a' && code != 'L':
			accepted = true
		case c != 'c':
			m.t.Fatalf("reply %c %q to %c, want continue", c, d, code)
		}
	}
	m.queue('D', "L", "j\x00mta.example\x00")
	for _, f := range fields {
		event('L', f.name, "\x00", f.value, "\x00")
	}
	m.queue('D', "N", "i\x00ABC123\x00")
	if event('N'); accepted {
		return nil
	}
	for chunk := range strings.Lines(body) {
		if event('B', chunk); accepted {
			return nil
		}
	}
	m.queue('E')
	m.flush()
	var mods []gomilter.ModifyAction
	for {
		code, data := m.read()
		switch code {
		case 'a':
			return mods
		case 'i':
			name, value, _ := strings.Cut(strings.TrimSuffix(string(data[4:]), "\x00"), "\x00")
			mods = append(mods, gomilter.ModifyAction{Code: gomilter.ActInsertHeader,
				HeaderIndex: binary.BigEndian.Uint32(data), HeaderName: name, HeaderValue: value})
		default:
			m.t.Fatalf("reply %c %q before the end of message's", code, data)
		}
	}
}

func TestMilterNegotiation(t *testing.T) {
	f := signertest.New(t)
	addr := startMilter(t, f, prometheus.NewRegistry())
	const skipped = gomilter.OptNoConnect | gomilter.OptNoHelo | gomilter.OptNoMailFrom | gomilter.OptNoRcptTo
	noReplies := gomilter.OptNoConnReply | gomilter.OptNoHeloReply | gomilter.OptNoMailReply | gomilter.OptNoRcptReply |
		gomilter.OptNoDataReply | gomilter.OptNoUnknownReply | gomilter.OptNoHeaderReply | gomilter.OptNoEOHReply |
		gomilter.OptNoBodyReply
	for _, tc := range []struct {
		name         string
		version      uint32
		protocol     gomilter.OptProtocol
		wantVersion  uint32
		wantProtocol gomilter.OptProtocol
	}{
		{"postfix", 6, miltertest.PostfixProtocol, 6, skipped | gomilter.OptNoUnknown | gomilter.OptNoData | noReplies},
		{"version 6 without no-reply options", 6, 0x37f, 6, skipped | gomilter.OptNoUnknown | gomilter.OptNoData},
		{"version 2", 2, 0x7f, 2, skipped},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := dialMTA(t, addr)
			version, actions, protocol := m.negotiate(tc.version, miltertest.PostfixActions, tc.protocol)
			if version != tc.wantVersion || actions != gomilter.OptAddHeader || protocol != tc.wantProtocol {
				t.Fatalf("milter answered version %d, actions %#x, protocol %#x; want %d, %#x, %#x",
					version, actions, protocol, tc.wantVersion, gomilter.OptAddHeader, tc.wantProtocol)
			}
			// The milter must reply exactly where the protocol says: a
			// reply not due would be read as the answer to the next event.
			replies := protocol&gomilter.OptNoHeaderReply == 0
			body := strings.Repeat("a line of the body\r\n", 10)
			for i, fields := range [][]field{
				fieldsFor(signertest.AlignedRSA),
				fieldsFor(signertest.Unknown),
				// With SMFIP_HDR_LEADSPC, or a second space after the colon,
				// the value starts with a space.
				{{"From", " <alice@" + signertest.AlignedEd + ">"}, {"Subject", "  two spaces"}, {"To", "\tbob@example.net"}},
			} {
				mods := m.message(fields, body, replies)
				if i == 1 {
					if len(mods) != 0 {
						t.Fatalf("unsignable message got %+v", mods)
					}
					continue
				}
				if len(mods) == 0 {
					t.Fatalf("message %d: no signature inserted", i)
				}
				for _, v := range signertest.VerifyGo(t, f.DNS, assemble(t, mods, fields, body)) {
					if v.Err != nil {
						t.Errorf("message %d: d=%s: %v", i, v.Domain, v.Err)
					}
				}
			}
		})
	}
}
