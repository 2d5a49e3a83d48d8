package milter_test

import (
	"bytes"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/milter"
	"dkimd/internal/milter/miltertest"
	"dkimd/internal/signer"
	"dkimd/internal/signer/signertest"
)

// startMilter serves the milter on a loopback port.
func startMilter(t *testing.T, f *signertest.Fixture, reg *prometheus.Registry) string {
	t.Helper()
	return startMilterTB(t, f, reg)
}

func startMilterTB(t testing.TB, f *signertest.Fixture, reg *prometheus.Registry) string {
	t.Helper()
	return startMilterLog(t, f, reg, slog.New(slog.DiscardHandler))
}

func startMilterLog(t testing.TB, f *signertest.Fixture, reg *prometheus.Registry, log *slog.Logger) string {
	t.Helper()
	m, ln, done := serveMilter(t, f, reg, log)
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// serveMilter starts a milter on a loopback port; closing it is the
// caller's, and done gives what Serve returned.
func serveMilter(t testing.TB, f *signertest.Fixture, reg *prometheus.Registry, log *slog.Logger) (*milter.Server, net.Listener, <-chan error) {
	t.Helper()
	s, err := signer.New(signer.Options{Store: f.Store, Box: f.Svc.Box, Zone: signertest.Zone, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	m, err := milter.New(milter.Options{Signer: s, Registerer: reg, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Serve(ln) }()
	return m, ln, done
}

type field struct{ name, value string }

// runMilter drives one message through the milter protocol as an MTA does,
// in one session per call unless sess is given, and returns the actions.
func runMilter(t *testing.T, sess *gomilter.ClientSession, fields []field, body string) ([]gomilter.ModifyAction, *gomilter.Action) {
	t.Helper()
	for _, f := range fields {
		act, err := sess.HeaderField(f.name, f.value)
		if err != nil {
			t.Fatal(err)
		}
		if act.Code != gomilter.ActContinue {
			return nil, act
		}
	}
	act, err := sess.HeaderEnd()
	if err != nil {
		t.Fatal(err)
	}
	if act.Code != gomilter.ActContinue {
		return nil, act
	}
	mods, act, err := sess.BodyReadFrom(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return mods, act
}

// clients are the MTAs the tests play: Postfix, which spares the replies,
// and an MTA that offers no such option and waits for a reply per event.
var clients = []struct {
	name     string
	protocol gomilter.OptProtocol
}{
	{"no-reply options", miltertest.PostfixProtocol},
	{"a reply per event", 0},
}

// session opens a milter session as Postfix does.
func session(t testing.TB, addr string) *gomilter.ClientSession {
	t.Helper()
	return sessionWith(t, addr, miltertest.PostfixProtocol)
}

func sessionWith(t testing.TB, addr string, protocol gomilter.OptProtocol) *gomilter.ClientSession {
	t.Helper()
	c := gomilter.NewClientWithOptions("tcp", addr, gomilter.ClientOptions{
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		ActionMask: miltertest.PostfixActions, ProtocolMask: protocol,
	})
	sess, err := c.Session()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	if want := protocol&gomilter.OptNoHeaderReply != 0; sess.ProtocolOption(gomilter.OptNoHeaderReply) != want {
		t.Fatalf("negotiated protocol %#x: no header reply %v, want %v", sess.ProtocolOpts, !want, want)
	}
	return sess
}

func fieldsFor(from string) []field {
	// As Postfix sends them: no space after the colon, LF inside folds.
	return []field{
		{"Received", "from client.example (client.example [192.0.2.1])\n\tby mx.example (Postfix) with ESMTP id ABC123"},
		{"From", "Alice <alice@" + from + ">"},
		{"To", "bob@example.net,\n carol@example.net"},
		{"Subject", "milter test"},
		{"Date", "Sun, 29 Nov 2026 06:00:00 +0000"},
		{"Message-ID", "<m1@" + from + ">"},
	}
}

// assemble builds the message the MTA delivers after the milter's actions,
// as the MTA writes it: inserted fields at the top, CRLF.
func assemble(t *testing.T, mods []gomilter.ModifyAction, fields []field, body string) []byte {
	t.Helper()
	var b bytes.Buffer
	// Each insert at index 0 goes on top, so the last one ends up first.
	var top []string
	for _, m := range mods {
		if m.Code != gomilter.ActInsertHeader || m.HeaderIndex != 0 {
			t.Fatalf("unexpected action %+v", m)
		}
		top = append([]string{m.HeaderName + ": " + strings.ReplaceAll(m.HeaderValue, "\n", "\r\n") + "\r\n"}, top...)
	}
	for _, s := range top {
		b.WriteString(s)
	}
	for _, f := range fields {
		b.WriteString(f.name + ": " + strings.ReplaceAll(f.value, "\n", "\r\n") + "\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	return b.Bytes()
}

func TestMilterSigns(t *testing.T) {
	f := signertest.New(t)
	reg := prometheus.NewRegistry()
	addr := startMilter(t, f, reg)
	body := strings.Repeat("a line of the body, sent in chunks\r\n", 5000)
	for _, tc := range []struct {
		name, from, d string
		sigs          int
	}{
		{"aligned rsa", signertest.AlignedRSA, signertest.AlignedRSA, 1},
		{"aligned ed25519", signertest.AlignedEd, signertest.AlignedEd, 2},
		{"fallback", signertest.FallbackRSA, signertest.Brand + "." + signertest.Zone, 1},
	} {
		for _, c := range clients {
			t.Run(tc.name+"/"+c.name, func(t *testing.T) {
				fields := fieldsFor(tc.from)
				mods, act := runMilter(t, sessionWith(t, addr, c.protocol), fields, body)
				if act.Code != gomilter.ActAccept {
					t.Fatalf("action %c, want accept", act.Code)
				}
				if len(mods) != tc.sigs {
					t.Fatalf("%d modifications, want %d inserted signatures", len(mods), tc.sigs)
				}
				msg := assemble(t, mods, fields, body)
				if !bytes.HasPrefix(msg, []byte("DKIM-Signature: v=1;")) && !bytes.HasPrefix(msg, []byte("DKIM-Signature: a=rsa-sha256;")) {
					t.Fatalf("message does not start with the RSA signature:\n%.300s", msg)
				}
				vs := signertest.VerifyGo(t, f.DNS, msg)
				if len(vs) != tc.sigs {
					t.Fatalf("%d signatures verified, want %d", len(vs), tc.sigs)
				}
				for _, v := range vs {
					if v.Err != nil || v.Domain != tc.d {
						t.Errorf("d=%s: %v", v.Domain, v.Err)
					}
				}
			})
		}
	}
}

func TestMilterPassesUnsignableMail(t *testing.T) {
	f := signertest.New(t)
	reg := prometheus.NewRegistry()
	addr := startMilter(t, f, reg)
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) { passesUnsignableMail(t, f, sessionWith(t, addr, c.protocol)) })
	}
}

func passesUnsignableMail(t *testing.T, f *signertest.Fixture, sess *gomilter.ClientSession) {
	// Several messages on one connection, as Postfix reuses it: an
	// unsignable one must not leak its header into the next.
	for _, tc := range []struct {
		name   string
		fields []field
		signed bool
	}{
		{"unknown domain", fieldsFor(signertest.Unknown), false},
		{"no From", []field{{"Subject", "x"}}, false},
		{"signable after refusals", fieldsFor(signertest.AlignedRSA), true},
		{"two From", append(fieldsFor(signertest.AlignedRSA), field{"From", "x@" + signertest.AlignedRSA}), false},
		{"signable again", fieldsFor(signertest.AlignedEd), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mods, act := runMilter(t, sess, tc.fields, "body\r\n")
			if act.Code != gomilter.ActAccept {
				t.Fatalf("action %c, want accept", act.Code)
			}
			if tc.signed != (len(mods) > 0) {
				t.Fatalf("modifications %+v, signed want %v", mods, tc.signed)
			}
			if tc.signed {
				for _, v := range signertest.VerifyGo(t, f.DNS, assemble(t, mods, tc.fields, "body\r\n")) {
					if v.Err != nil {
						t.Errorf("verify: %v", v.Err)
					}
				}
			}
		})
	}
}

// TestVanishedConnectionReleasesTheMessage: an MTA that drops the
// connection mid-message sends no abort; the message's signature
// goroutines must end anyway.
func TestVanishedConnectionReleasesTheMessage(t *testing.T) {
	f := signertest.New(t)
	reg := prometheus.NewRegistry()
	addr := startMilter(t, f, reg)
	settle := func() int {
		for range 5 {
			runtime.GC()
			time.Sleep(20 * time.Millisecond)
		}
		return runtime.NumGoroutine()
	}
	base := settle()
	for range 5 {
		d := &recordingDialer{}
		c := gomilter.NewClientWithOptions("tcp", addr, gomilter.ClientOptions{
			Dialer: d, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
			ActionMask: miltertest.PostfixActions, ProtocolMask: miltertest.PostfixProtocol,
		})
		sess, err := c.Session()
		if err != nil {
			t.Fatal(err)
		}
		for _, fl := range fieldsFor(signertest.AlignedEd) {
			if _, err := sess.HeaderField(fl.name, fl.value); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := sess.HeaderEnd(); err != nil {
			t.Fatal(err)
		}
		if _, err := sess.BodyChunk([]byte("half a body\r\n")); err != nil {
			t.Fatal(err)
		}
		d.conn.Close() // no abort, no quit, no end of message
	}
	// Five messages with two signatures each leaked ten goroutines before
	// the cleanup; allow some slack for the runtime's own.
	var n int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if n = settle(); n <= base+2 {
			break
		}
	}
	if n > base+2 {
		t.Fatalf("%d goroutines after five vanished connections, %d before", n, base)
	}
	if got := counter(t, reg, "dkimd_sign_milter_messages_total", "aborted"); got != 5 {
		t.Errorf("%v messages counted as aborted, want 5", got)
	}
}

// counter is the value of a counter with one label.
func counter(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{%s}", name, label)
	return 0
}

// recordingDialer keeps the connection, so that a test can drop it the
// hard way, as a crashed or timed-out MTA does.
type recordingDialer struct{ conn net.Conn }

func (d *recordingDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := net.Dial(network, addr)
	d.conn = c
	return c, err
}

// TestCloseLetsMessagesInProgressFinish: Close stops new connections, but
// a message that an MTA is sending finishes, signed.
func TestCloseLetsMessagesInProgressFinish(t *testing.T) {
	m, ln, done := serveMilter(t, signertest.New(t), prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	sess := session(t, ln.Addr().String())
	fields := fieldsFor(signertest.AlignedRSA)
	for _, fl := range fields {
		if _, err := sess.HeaderField(fl.name, fl.value); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("the listener still accepts after Close")
	}
	if _, err := sess.HeaderEnd(); err != nil {
		t.Fatal(err)
	}
	mods, act, err := sess.BodyReadFrom(strings.NewReader("body\r\n"))
	if err != nil || act.Code != gomilter.ActAccept || len(mods) != 1 {
		t.Fatalf("after Close: %+v %+v %v, want one signature and accept", mods, act, err)
	}
}
