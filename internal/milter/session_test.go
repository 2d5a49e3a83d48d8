package milter

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"dkimd/internal/signer"
	"dkimd/internal/signer/signertest"
)

// testServer is a Server with a real signer over signertest's keystore,
// for driving sessions without a socket.
func testServer(t testing.TB, f *signertest.Fixture, opts Options) *Server {
	t.Helper()
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	s, err := signer.New(signer.Options{Store: f.Store, Box: f.Svc.Box, Zone: signertest.Zone,
		Registerer: opts.Registerer})
	if err != nil {
		t.Fatal(err)
	}
	opts.Signer = s
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// postfixOffer is what Postfix 3.x offers (milter_protocol = 6): every
// SMFIP bit up to SMFIP_HDR_LEADSPC.
const postfixOffer ProtocolFlag = 0x1fffff

// conversation is one message as an MTA sends it, macros included.
func conversation(from string, body ...string) []byte {
	var b []byte
	b = append(b, packet(cmdMacro, "Mi\x00QID", from, "\x00")...)
	b = append(b, packet(cmdHeader, "From\x00Alice <alice@", from, ">\x00")...)
	b = append(b, packet(cmdHeader, "Subject\x00hello\x00")...)
	b = append(b, packet(cmdEOH)...)
	for _, c := range body {
		b = append(b, packet(cmdBody, c)...)
	}
	return append(b, packet(cmdEOM)...)
}

// run feeds a stream to a new session as its connection would, stopping at
// the first error or quit, and returns the replies as packets.
func run(t *testing.T, s *Server, stream []byte) (replies []reply, err error) {
	t.Helper()
	m := &session{s: s}
	defer m.abort()
	r := newPacketReader(bytes.NewReader(stream), nil)
	for {
		p, err := r.next()
		if err == io.EOF {
			return splitReplies(t, m.out), nil
		}
		if err != nil {
			return splitReplies(t, m.out), err
		}
		done, err := m.handle(p)
		if err != nil || done {
			return splitReplies(t, m.out), err
		}
	}
}

type reply struct {
	code byte
	data []byte
}

func splitReplies(t *testing.T, b []byte) []reply {
	t.Helper()
	var out []reply
	for len(b) > 0 {
		n := int(binary.BigEndian.Uint32(b))
		if n < 1 || len(b) < 4+n {
			t.Fatalf("malformed reply stream %q", b)
		}
		out = append(out, reply{b[4], b[5 : 4+n]})
		b = b[4+n:]
	}
	return out
}

func codes(rs []reply) string {
	var b strings.Builder
	for _, r := range rs {
		b.WriteByte(r.code)
	}
	return b.String()
}

// TestSession drives sessions without a socket; the cases share one
// keystore, which takes seconds to provision.
func TestSession(t *testing.T) {
	f := signertest.New(t)
	t.Run("replies where due", func(t *testing.T) { sessionRepliesWhereDue(t, f) })
	t.Run("negotiation", func(t *testing.T) { sessionNegotiation(t, f) })
	t.Run("refuses commands out of order", func(t *testing.T) { sessionRefusesCommandsOutOfOrder(t, f) })
	t.Run("on error", func(t *testing.T) { sessionOnError(t, f) })
	t.Run("keeps the queue id", func(t *testing.T) { sessionKeepsTheQueueID(t, f) })
}

// sessionRepliesWhereDue: the milter replies exactly where the agreed
// protocol has the MTA wait, never elsewhere: a reply not awaited would be
// read as the answer to the next event.
func sessionRepliesWhereDue(t *testing.T, f *signertest.Fixture) {
	s := testServer(t, f, Options{})
	envelope := func() []byte {
		var b []byte
		b = append(b, packet(cmdConnect, "client.example\x004\x00\x19192.0.2.1\x00")...)
		b = append(b, packet(cmdHelo, "client.example\x00")...)
		b = append(b, packet(cmdMail, "<alice@", signertest.AlignedRSA, ">\x00")...)
		b = append(b, packet(cmdRcpt, "<bob@example.net>\x00")...)
		b = append(b, packet(cmdData)...)
		b = append(b, packet(cmdUnknown, "XYZZY\x00")...)
		return b
	}
	for _, tc := range []struct {
		name    string
		offer   ProtocolFlag
		stream  []byte
		replies string
	}{
		{"postfix, message only", postfixOffer, conversation(signertest.AlignedRSA, "body\r\n"), "Oia"},
		{"postfix, two messages", postfixOffer, append(conversation(signertest.AlignedRSA, "a\r\n"),
			conversation(signertest.AlignedEd, "b\r\n")...), "Oiaiia"},
		// An MTA that sends the stages asked away anyway still gets
		// no reply where it agreed to wait for none.
		{"postfix, every stage sent", postfixOffer, append(envelope(), conversation(signertest.AlignedRSA, "x\r\n")...), "Oia"},
		{"no reply options", 0x7f | flagNoUnknown | flagNoData,
			append(envelope(), conversation(signertest.AlignedRSA, "a\r\n", "b\r\n")...), "Occcccccccccia"},
		{"version 2", 0x7f, conversation(signertest.AlignedRSA, "a\r\n"), "Occccia"},
		{"abort between", postfixOffer, append(append(packet(cmdHeader, "From\x00a@"+signertest.AlignedRSA+"\x00"),
			packet(cmdAbort)...), conversation(signertest.AlignedRSA, "a\r\n")...), "Oia"},
		// QUIT_NC: the connection is kept for a new session, which
		// negotiates afresh.
		{"quit, new connection", postfixOffer, append(append(conversation(signertest.AlignedRSA, "a\r\n"), packet(cmdQuitNC)...),
			append(optneg(6, 0x1ff, 0), conversation(signertest.AlignedRSA, "a\r\n")...)...), "OiaOccccia"},
		{"quit", postfixOffer, append(packet(cmdQuit), conversation(signertest.AlignedRSA, "a\r\n")...), "O"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := run(t, s, append(optneg(6, 0x1ff, tc.offer), tc.stream...))
			if err != nil {
				t.Fatal(err)
			}
			if got := codes(rs); got != tc.replies {
				t.Fatalf("replies %q, want %q", got, tc.replies)
			}
			for _, r := range rs {
				if r.code == replyInsHeader && !bytes.HasPrefix(r.data, []byte("\x00\x00\x00\x00DKIM-Signature\x00")) {
					t.Errorf("insert %q: want index 0 and DKIM-Signature", r.data)
				}
			}
		})
	}
}

// sessionNegotiation: the milter takes the part of its Protocol that
// the MTA offers and answers with the lower version.
func sessionNegotiation(t *testing.T, f *signertest.Fixture) {
	s := testServer(t, f, Options{})
	for _, tc := range []struct {
		name             string
		version, actions uint32
		offer            ProtocolFlag
		wantVersion      uint32
		wantProtocol     ProtocolFlag
		reason           string
	}{
		{"postfix", 6, 0x1ff, postfixOffer, 6, Protocol, ""},
		{"a later version", 7, 0x1ff, postfixOffer, 6, Protocol, ""},
		{"nothing spared", 6, 0x1ff, 0, 6, 0, ""},
		{"version 2", 2, 0x3f, 0x7f, 2, flagNoConnect | flagNoHelo | flagNoMail | flagNoRcpt, ""},
		{"version 1", 1, 0x3f, 0x7f, 0, 0, reasonNegotiation},
		{"no header actions", 6, 0x1fe, postfixOffer, 0, 0, reasonNegotiation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := run(t, s, optneg(tc.version, tc.actions, tc.offer))
			if tc.reason != "" {
				var pe *protocolError
				if !errors.As(err, &pe) || pe.reason != tc.reason || len(rs) != 0 {
					t.Fatalf("%v, replies %q; want %s and no reply", err, codes(rs), tc.reason)
				}
				return
			}
			if err != nil || len(rs) != 1 || rs[0].code != replyOptNeg || len(rs[0].data) != 12 {
				t.Fatalf("%v, replies %q", err, codes(rs))
			}
			d := rs[0].data
			v, a, p := binary.BigEndian.Uint32(d), binary.BigEndian.Uint32(d[4:]), ProtocolFlag(binary.BigEndian.Uint32(d[8:]))
			if v != tc.wantVersion || a != actionAddHeaders || p != tc.wantProtocol {
				t.Errorf("version %d actions %#x protocol %s; want %d %#x %s", v, a, p, tc.wantVersion, actionAddHeaders, tc.wantProtocol)
			}
		})
	}
}

// sessionRefusesCommandsOutOfOrder: a command the session's state does
// not allow ends the session.
func sessionRefusesCommandsOutOfOrder(t *testing.T, f *signertest.Fixture) {
	s := testServer(t, f, Options{})
	neg := optneg(6, 0x1ff, postfixOffer)
	hdr := packet(cmdHeader, "From\x00a@"+signertest.AlignedRSA+"\x00")
	for _, tc := range []struct {
		name   string
		stream []byte
	}{
		{"header before negotiation", hdr},
		{"macro before negotiation", packet(cmdMacro, "Ci\x00x\x00")},
		{"body before the end of header", append(neg, append(hdr, packet(cmdBody, "x")...)...)},
		{"end of message before the end of header", append(neg, append(hdr, packet(cmdEOM)...)...)},
		{"header after the end of header", append(neg, append(append(hdr, packet(cmdEOH)...), hdr...)...)},
		{"second end of header", append(neg, append(packet(cmdEOH), packet(cmdEOH)...)...)},
		{"header after quit, new connection", append(neg, append(packet(cmdQuitNC), hdr...)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := run(t, s, tc.stream)
			var pe *protocolError
			if !errors.As(err, &pe) || pe.reason != reasonOutOfOrder {
				t.Fatalf("error %v, want %s", err, reasonOutOfOrder)
			}
		})
	}
}

// sessionOnError: a message that is not signed is answered per
// OnError, at the first reply the MTA waits for, and counted.
func sessionOnError(t *testing.T, f *signertest.Fixture) {
	from := packet(cmdHeader, "From\x00a@"+signertest.AlignedRSA+"\x00")
	// A header block over the 1 MiB cap: a field that fits, and one more.
	overBlock := append(append(from, packet(cmdHeader, "X-Big\x00", strings.Repeat("p", maxHeaderBlock-100), "\x00")...),
		packet(cmdHeader, "X-More\x00", strings.Repeat("p", 100), "\x00")...)
	var overFields []byte
	overFields = append(overFields, from...)
	for range maxHeaderFields {
		overFields = append(overFields, packet(cmdHeader, "X\x00y\x00")...)
	}
	rest := append(append(packet(cmdEOH), packet(cmdBody, "x\r\n")...), packet(cmdEOM)...)
	unknown := conversation(signertest.Unknown)
	unknown = unknown[:len(unknown)-len(packet(cmdEOM))]
	for _, onError := range []string{"accept", "tempfail"} {
		answer := "a"
		if onError == "tempfail" {
			answer = "t"
		}
		for _, tc := range []struct {
			name    string
			offer   ProtocolFlag
			stream  []byte
			reason  string
			replies string
		}{
			{"unknown domain, postfix", postfixOffer, conversation(signertest.Unknown, "x\r\n"), signer.CodeUnknownDomain, "O" + answer},
			// Answered at the end of header: the body is never sent.
			{"unknown domain, a reply per event", 0, unknown, signer.CodeUnknownDomain, "Occ" + answer},
			{"no From, postfix", postfixOffer, append(packet(cmdEOH), packet(cmdEOM)...), signer.CodeNoFrom, "O" + answer},
			{"header over 1 MiB, postfix", postfixOffer, append(overBlock, rest...), signer.CodeHeaderTooLarge, "O" + answer},
			// Answered at the first header field past the cap.
			{"header over 1 MiB, a reply per event", 0, overBlock, signer.CodeHeaderTooLarge, "Occ" + answer},
			{"too many fields, postfix", postfixOffer, append(overFields, rest...), signer.CodeHeaderTooLarge, "O" + answer},
		} {
			t.Run(onError+"/"+tc.name, func(t *testing.T) {
				reg := prometheus.NewRegistry()
				s := testServer(t, f, Options{Registerer: reg, OnError: onError})
				// The next message on the session is signed: the refused
				// one left nothing behind.
				stream := append(append(optneg(6, 0x1ff, tc.offer), tc.stream...), conversation(signertest.AlignedRSA, "ok\r\n")...)
				rs, err := run(t, s, stream)
				if err != nil {
					t.Fatal(err)
				}
				want := tc.replies
				if tc.offer == 0 {
					want += "ccccia"
				} else {
					want += "ia"
				}
				if got := codes(rs); got != want {
					t.Fatalf("replies %.40q…, want %.40q…", got, want)
				}
				unsigned := testutil.ToFloat64(s.metrics.unsigned.WithLabelValues(tc.reason))
				tempfailed := testutil.ToFloat64(s.metrics.messages.WithLabelValues(outcomeTempfail))
				if onError == "accept" && (unsigned != 1 || tempfailed != 0) || onError == "tempfail" && (unsigned != 0 || tempfailed != 1) {
					t.Errorf("unsigned{%s} %v, tempfailed %v", tc.reason, unsigned, tempfailed)
				}
				if got := testutil.ToFloat64(s.metrics.messages.WithLabelValues(outcomeSigned)); got != 1 {
					t.Errorf("signed %v, want 1", got)
				}
			})
		}
	}
}

// sessionKeepsTheQueueID: the {i} macro names the message in the log.
func sessionKeepsTheQueueID(t *testing.T, f *signertest.Fixture) {
	s := testServer(t, f, Options{})
	m := &session{s: s}
	r := newPacketReader(bytes.NewReader(append(optneg(6, 1, postfixOffer),
		packet(cmdMacro, "N{daemon_name}\x00smtpd\x00i\x004A1B2C\x00")...)), nil)
	for range 2 {
		p, err := r.next()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.handle(p); err != nil {
			t.Fatal(err)
		}
	}
	if m.queueID != "4A1B2C" {
		t.Errorf("queue id %q", m.queueID)
	}
}

// TestLookupContext: the key lookup's context reads as context.WithTimeout's
// would: its deadline from the start, done at the deadline with
// DeadlineExceeded, cancelled by release, whether or not anything looked
// at it first; and contexts made from it follow it.
func TestLookupContext(t *testing.T) {
	t.Run("deadline", func(t *testing.T) {
		before := time.Now()
		c := newLookupContext(time.Minute)
		defer c.release()
		d, ok := c.Deadline()
		if !ok || d.Before(before.Add(time.Minute)) || d.After(time.Now().Add(time.Minute)) {
			t.Fatalf("deadline %v %v, want a minute from now", d, ok)
		}
		if err := c.Err(); err != nil {
			t.Fatalf("Err before the deadline: %v", err)
		}
		select {
		case <-c.Done():
			t.Fatal("done before the deadline")
		default:
		}
	})
	t.Run("expires", func(t *testing.T) {
		c := newLookupContext(20 * time.Millisecond)
		defer c.release()
		child, cancel := context.WithTimeout(c, time.Hour)
		defer cancel()
		select {
		case <-child.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("a context made from it did not end at its deadline")
		}
		if !errors.Is(c.Err(), context.DeadlineExceeded) || !errors.Is(child.Err(), context.DeadlineExceeded) {
			t.Fatalf("Err %v, child %v: want the deadline exceeded", c.Err(), child.Err())
		}
	})
	t.Run("expired before the first look", func(t *testing.T) {
		c := newLookupContext(time.Millisecond)
		defer c.release()
		time.Sleep(5 * time.Millisecond)
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Fatalf("Err %v: want the deadline exceeded", c.Err())
		}
	})
	t.Run("released after a look", func(t *testing.T) {
		c := newLookupContext(time.Hour)
		done := c.Done()
		c.release()
		<-done
		if !errors.Is(c.Err(), context.Canceled) {
			t.Fatalf("Err %v: want cancelled", c.Err())
		}
	})
	t.Run("released unseen", func(t *testing.T) {
		c := newLookupContext(time.Hour)
		c.release()
		<-c.Done()
		if !errors.Is(c.Err(), context.Canceled) {
			t.Fatalf("Err %v: want cancelled", c.Err())
		}
	})
}
