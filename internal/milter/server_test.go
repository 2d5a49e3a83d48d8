package milter

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"dkimd/internal/milter/miltertest"
	"dkimd/internal/signer/signertest"
)

// listen serves s on a loopback port until the test ends.
func listen(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer waits for the server to close c, reading and dropping
// whatever it sends first.
func closedByServer(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("the server did not close the connection: %v", err)
	}
}

// signs runs one message through a new session with the go-milter client,
// an independent implementation of the MTA's side, and checks that it was
// signed and verifies.
func signs(t *testing.T, f *signertest.Fixture, addr string) {
	t.Helper()
	c := gomilter.NewClientWithOptions("tcp", addr, gomilter.ClientOptions{
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		ActionMask: miltertest.PostfixActions, ProtocolMask: miltertest.PostfixProtocol,
	})
	sess, err := c.Session()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	hdr := "From: <alice@" + signertest.AlignedRSA + ">\r\nSubject: after\r\n"
	for _, fl := range [][2]string{{"From", "<alice@" + signertest.AlignedRSA + ">"}, {"Subject", "after"}} {
		if _, err := sess.HeaderField(fl[0], fl[1]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sess.HeaderEnd(); err != nil {
		t.Fatal(err)
	}
	mods, act, err := sess.BodyReadFrom(strings.NewReader("body\r\n"))
	if err != nil || act.Code != gomilter.ActAccept || len(mods) != 1 {
		t.Fatalf("%+v %+v %v, want one signature and accept", mods, act, err)
	}
	msg := mods[0].HeaderName + ": " + strings.ReplaceAll(mods[0].HeaderValue, "\n", "\r\n") + "\r\n" + hdr + "\r\nbody\r\n"
	for _, v := range signertest.VerifyGo(t, f.DNS, []byte(msg)) {
		if v.Err != nil {
			t.Errorf("verify: %v", v.Err)
		}
	}
}

// TestServer runs the listener's bounds against real sockets; the cases
// share one keystore.
func TestServer(t *testing.T) {
	f := signertest.New(t)
	t.Run("malformed packets end one session", func(t *testing.T) { serverMalformed(t, f) })
	t.Run("idle timeout", func(t *testing.T) { serverIdleTimeout(t, f) })
	t.Run("max conns", func(t *testing.T) { serverMaxConns(t, f) })
	t.Run("one write per reply", func(t *testing.T) { serverOneWritePerReply(t, f) })
}

// serverMalformed: each malformed packet, before and after negotiation,
// closes its session and is counted under its reason; the next session
// signs.
func serverMalformed(t *testing.T, f *signertest.Fixture) {
	s := testServer(t, f, Options{})
	addr := listen(t, s)
	for _, tc := range malformedPackets {
		for _, negotiated := range []bool{false, true} {
			name := tc.name
			if negotiated {
				name += " after negotiation"
			}
			t.Run(name, func(t *testing.T) {
				before := testutil.ToFloat64(s.metrics.protocolErrors.WithLabelValues(tc.reason))
				c := dial(t, addr)
				wire := tc.wire
				if negotiated {
					wire = append(optneg(6, 0x1ff, postfixOffer), wire...)
				}
				if _, err := c.Write(wire); err != nil {
					t.Fatal(err)
				}
				closedByServer(t, c)
				want := tc.reason // the layout is checked before the state
				// The session counts before it closes the connection.
				if got := testutil.ToFloat64(s.metrics.protocolErrors.WithLabelValues(want)); got != before+1 {
					t.Errorf("protocol errors{%s} %v, want %v", want, got, before+1)
				}
			})
		}
	}
	signs(t, f, addr)
}

// serverIdleTimeout: a session that sends nothing, or stops inside a
// packet, is closed after IdleTimeout; one that keeps talking is not.
func serverIdleTimeout(t *testing.T, f *signertest.Fixture) {
	s := testServer(t, f, Options{IdleTimeout: 200 * time.Millisecond})
	addr := listen(t, s)
	for _, tc := range []struct {
		name string
		sent []byte
	}{
		{"silent", nil},
		{"after negotiation", optneg(6, 0x1ff, postfixOffer)},
		{"inside a packet", append(optneg(6, 0x1ff, postfixOffer), packet(cmdHeader, "Subject\x00x\x00")[:7]...)},
		{"a length prefix alone", []byte{0, 0, 0x10, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(s.metrics.timeouts)
			c := dial(t, addr)
			if _, err := c.Write(tc.sent); err != nil {
				t.Fatal(err)
			}
			closedByServer(t, c) // after the count
			if got := testutil.ToFloat64(s.metrics.timeouts); got != before+1 {
				t.Errorf("idle timeouts %v, want %v", got, before+1)
			}
		})
	}
	// Each packet resets the clock: a session that sends one every 100
	// ms, three times the timeout in all, stays open.
	c := dial(t, addr)
	stream := append(optneg(6, 0x1ff, postfixOffer), conversation(signertest.AlignedRSA, "a\r\n", "b\r\n", "c\r\n", "d\r\n", "e\r\n")...)
	for p := range packets(stream) {
		time.Sleep(100 * time.Millisecond)
		if _, err := c.Write(p); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(io.LimitReader(c, 17)) // the negotiation's answer
	if err != nil || len(got) != 17 || got[4] != replyOptNeg {
		t.Fatalf("negotiation answer %q %v", got, err)
	}
	b := make([]byte, 4096)
	n, err := io.ReadAtLeast(c, b, 5)
	if err != nil || !bytes.Contains(b[:n], []byte("DKIM-Signature")) {
		t.Fatalf("a slow but steady session got %q %v, want its signature", b[:n], err)
	}
}

// packets splits a stream into its packets.
func packets(b []byte) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(b) > 0 {
			n := 4 + int(binary.BigEndian.Uint32(b))
			if !yield(b[:n]) {
				return
			}
			b = b[n:]
		}
	}
}

// serverMaxConns: beyond MaxConns a connection is closed at once and
// counted; a slot freed is taken again.
func serverMaxConns(t *testing.T, f *signertest.Fixture) {
	s := testServer(t, f, Options{MaxConns: 2})
	addr := listen(t, s)
	var held []net.Conn
	for range 2 {
		c := dial(t, addr)
		// An answered negotiation proves that the session holds a slot.
		if _, err := c.Write(optneg(6, 0x1ff, postfixOffer)); err != nil {
			t.Fatal(err)
		}
		if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 17)); err != nil {
			t.Fatalf("session within the cap: %v", err)
		}
		held = append(held, c)
	}
	over := dial(t, addr)
	closedByServer(t, over)
	if got := testutil.ToFloat64(s.metrics.refused); got != 1 {
		t.Errorf("refused %v, want 1", got)
	}
	held[0].Close()
	// The slot comes back when the server has seen the close.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c := dial(t, addr)
		if _, err := c.Write(optneg(6, 0x1ff, postfixOffer)); err == nil {
			if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, make([]byte, 17)); err == nil {
				break
			}
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("no session after one of two closed")
		}
	}
}

// serverOneWritePerReply: the end of message's reply, the inserted fields
// and the accept, reaches the MTA in one write: over net.Pipe each write is
// one read at the other end.
func serverOneWritePerReply(t *testing.T, f *signertest.Fixture) {
	s := testServer(t, f, Options{})
	server, client := net.Pipe()
	defer client.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.serveConn(server)
	}()
	if err := client.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	write := func(b []byte) {
		go func() { _, _ = client.Write(b) }() // net.Pipe's Write waits for the reads
	}
	buf := make([]byte, 64<<10)
	write(optneg(6, 0x1ff, postfixOffer))
	if n, err := client.Read(buf); err != nil || n != 17 {
		t.Fatalf("negotiation: %d bytes, %v", n, err)
	}
	write(conversation(signertest.AlignedEd, "body\r\n"))
	n, err := client.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := codes(splitReplies(t, buf[:n])); got != "iia" {
		t.Fatalf("first read %q: replies %q, want both signatures and accept", buf[:n], got)
	}
	client.Close()
	<-done
}
