package signer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
	"dkimd/internal/provision"
	"dkimd/internal/signer"
	"dkimd/internal/signer/signertest"
)

func newSigner(t testing.TB, f *signertest.Fixture, reg prometheus.Registerer) *signer.Signer {
	t.Helper()
	s, err := signer.New(signer.Options{Store: f.Store, Box: f.Svc.Box, Zone: signertest.Zone,
		Log: slog.New(slog.DiscardHandler), Registerer: reg, Listener: "library"})
	if err != nil {
		t.Fatal(err)
	}
	f.Store.Watch(context.Background(), s.Invalidate)
	return s
}

func message(from, body string) string {
	return "Received: from client.example (client.example [192.0.2.1])\r\n\tby mx.example with ESMTP id 1234\r\n" +
		"From: Alice Example <alice@" + from + ">\r\n" +
		"To: bob@example.net\r\n" +
		"Subject: quarterly report\r\n" +
		"Date: Sun, 29 Nov 2026 06:00:00 +0000\r\n" +
		"Message-ID: <20261129060000.1@" + from + ">\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"List-Unsubscribe: <https://" + from + "/u/1>\r\n" +
		"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" +
		"\r\n" + body
}

func toLF(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }

var tagRE = regexp.MustCompile(`(?:^|;)\s*([a-z]+)=([^;]*)`)

// tags parses a DKIM-Signature field's tag list, unfolded.
func tags(field string) map[string]string {
	v := strings.TrimPrefix(field, "DKIM-Signature:")
	v = strings.NewReplacer("\r\n", "", "\t", "", " ", "").Replace(v)
	out := make(map[string]string)
	for _, m := range tagRE.FindAllStringSubmatch(v, -1) {
		out[m[1]] = m[2]
	}
	return out
}

// TestSignAndVerifyThroughDNS is the centre-piece: a message signed by the
// signer verifies with go-msgauth and dkimpy resolving through DNS that
// publishes the store's keys and the customers' CNAMEs, for each algorithm,
// line-ending form and mode.
func TestSignAndVerifyThroughDNS(t *testing.T) {
	t.Parallel()
	f := signertest.New(t)
	s := newSigner(t, f, nil)
	ctx := context.Background()
	type tc struct {
		alg, ending, mode, from, d string
		selectors                  []string
	}
	var cases []tc
	for _, alg := range []string{dkimkey.RSA, dkimkey.Ed25519} {
		for _, ending := range []string{"crlf", "lf"} {
			for _, mode := range []string{signer.ModeAligned, signer.ModeFallback} {
				c := tc{alg: alg, ending: ending, mode: mode}
				switch {
				case alg == dkimkey.RSA && mode == signer.ModeAligned:
					c.from, c.d, c.selectors = signertest.AlignedRSA, signertest.AlignedRSA, []string{"selector1"}
				case alg == dkimkey.Ed25519 && mode == signer.ModeAligned:
					c.from, c.d, c.selectors = signertest.AlignedEd, signertest.AlignedEd, []string{"selector1", "selector1-ed25519"}
				case alg == dkimkey.RSA:
					c.from, c.d, c.selectors = signertest.FallbackRSA, signertest.Brand+"."+signertest.Zone, []string{"selector1"}
				default:
					c.from, c.d, c.selectors = signertest.FallbackEd, signertest.BrandEd+"."+signertest.Zone, []string{"selector1", "selector1-ed25519"}
				}
				cases = append(cases, c)
			}
		}
	}
	wire := make(map[string][]byte) // for dkimpy, in one run
	for _, c := range cases {
		name := c.alg + "/" + c.ending + "/" + c.mode
		t.Run(name, func(t *testing.T) {
			msg := message(c.from, "Hello,\r\n\r\nthe report is attached.   \r\n\r\n\r\n")
			if c.ending == "lf" {
				msg = toLF(msg)
			}
			before := time.Now().Unix()
			res, err := s.Sign(ctx, strings.NewReader(msg))
			if err != nil {
				t.Fatal(err)
			}
			after := time.Now().Unix()
			if res.Mode != c.mode || res.Domain != c.d || strings.Join(res.Selectors(), ",") != strings.Join(c.selectors, ",") {
				t.Fatalf("signed as mode %s d=%s s=%v, want %s d=%s s=%v", res.Mode, res.Domain, res.Selectors(), c.mode, c.d, c.selectors)
			}
			for _, sig := range res.Signatures {
				if !strings.HasPrefix(sig.Field, "DKIM-Signature: ") || !strings.HasSuffix(sig.Field, "\r\n") ||
					strings.Contains(strings.ReplaceAll(sig.Field, "\r\n", ""), "\n") {
					t.Fatalf("field is not a CRLF header field: %q", sig.Field)
				}
				tg := tags(sig.Field)
				wantA := sig.Algorithm + "-sha256"
				if tg["a"] != wantA || tg["c"] != "relaxed/relaxed" || tg["d"] != c.d || tg["s"] != sig.Selector {
					t.Errorf("tags a=%s c=%s d=%s s=%s, want a=%s c=relaxed/relaxed d=%s s=%s", tg["a"], tg["c"], tg["d"], tg["s"], wantA, c.d, sig.Selector)
				}
				if _, ok := tg["l"]; ok {
					t.Errorf("signature has l=: %s", sig.Field)
				}
				if ts, err := strconv.ParseInt(tg["t"], 10, 64); err != nil || ts < before || ts > after {
					t.Errorf("t=%s not within [%d, %d]", tg["t"], before, after)
				}
				wantH := "from:from:to:cc:subject:date:message-id:reply-to:mime-version:content-type:in-reply-to:references:list-unsubscribe:list-unsubscribe-post"
				if strings.ToLower(tg["h"]) != wantH {
					t.Errorf("h=%s, want %s", tg["h"], wantH)
				}
			}
			// The wire form: CRLF, signature prepended.
			signed := res.Header() + strings.ReplaceAll(toLF(msg), "\n", "\r\n")
			vs := signertest.VerifyGo(t, f.DNS, []byte(signed))
			if len(vs) != len(c.selectors) {
				t.Fatalf("go-msgauth saw %d signatures, want %d", len(vs), len(c.selectors))
			}
			for _, v := range vs {
				if v.Err != nil || v.Domain != c.d {
					t.Errorf("go-msgauth: d=%s: %v", v.Domain, v.Err)
				}
			}
			if c.ending == "lf" {
				// As handed over, too: a local verifier reads bare LF.
				for _, v := range signertest.VerifyGo(t, f.DNS, []byte(toLF(res.Header())+msg)) {
					if v.Err != nil {
						t.Errorf("go-msgauth, bare LF form: %v", v.Err)
					}
				}
				// Same signature as the CRLF form (t= permitting).
				for range 3 {
					crlfRes, err := s.Sign(ctx, strings.NewReader(strings.ReplaceAll(msg, "\n", "\r\n")))
					if err != nil {
						t.Fatal(err)
					}
					if tags(crlfRes.Header())["t"] != tags(res.Header())["t"] {
						res, err = s.Sign(ctx, strings.NewReader(msg))
						if err != nil {
							t.Fatal(err)
						}
						continue
					}
					if crlfRes.Header() != res.Header() {
						t.Errorf("bare LF and CRLF signatures differ:\n%s\n%s", res.Header(), crlfRes.Header())
					}
					break
				}
			}
			wire[name] = []byte(signed)
		})
	}
	t.Run("dkimpy", func(t *testing.T) {
		signertest.RequireDkimpy(t)
		res := signertest.VerifyDkimpy(t, f.DNS, wire)
		for _, c := range cases {
			name := c.alg + "/" + c.ending + "/" + c.mode
			t.Run(name, func(t *testing.T) {
				rs := res[name]
				if len(rs) != len(c.selectors) {
					t.Fatalf("dkimpy saw %d signatures, want %d", len(rs), len(c.selectors))
				}
				for _, r := range rs {
					if !r.OK || r.D != c.d {
						t.Errorf("dkimpy: d=%s s=%s a=%s not verified %s", r.D, r.S, r.A, r.Error)
					}
				}
			})
		}
	})
}

func TestSignatureFailsWhenTampered(t *testing.T) {
	t.Parallel()
	f := signertest.New(t)
	s := newSigner(t, f, nil)
	msg := message(signertest.AlignedEd, "original body\r\n")
	res, err := s.Sign(context.Background(), strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	for name, tampered := range map[string]string{
		"body":        strings.Replace(msg, "original body", "changed body", 1),
		"subject":     strings.Replace(msg, "quarterly report", "quarterly rep0rt", 1),
		"second From": "From: mallory@evil.example\r\n" + msg,
		"unsubscribe": strings.Replace(msg, "/u/1>", "/u/2>", 1),
	} {
		t.Run(name, func(t *testing.T) {
			for _, v := range signertest.VerifyGo(t, f.DNS, []byte(res.Header()+tampered)) {
				if v.Err == nil {
					t.Errorf("signature %s verified after the %s changed", v.Domain, name)
				}
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	f := signertest.New(t)
	reg := prometheus.NewRegistry()
	s := newSigner(t, f, reg)
	for _, tc := range []struct {
		name, msg, code string
	}{
		{"no From", "To: a@b.example\r\nSubject: x\r\n\r\nbody\r\n", signer.CodeNoFrom},
		{"empty header", "\r\nbody\r\n", signer.CodeNoFrom},
		{"two From fields", "From: a@" + signertest.AlignedRSA + "\r\nFrom: b@" + signertest.AlignedRSA + "\r\n\r\nx\r\n", signer.CodeMultipleFrom},
		{"two From addresses", "From: a@" + signertest.AlignedRSA + ", b@" + signertest.AlignedRSA + "\r\n\r\nx\r\n", signer.CodeMultipleFrom},
		{"From group without addresses", "From: undisclosed:;\r\n\r\nx\r\n", signer.CodeNoFrom},
		{"From that does not parse", "From: <alice@>\r\n\r\nx\r\n", signer.CodeBadFrom},
		{"From domain with trailing dot", "From: a@" + signertest.AlignedRSA + ".\r\n\r\nx\r\n", signer.CodeBadFrom},
		{"From domain an IP literal", "From: alice@[192.0.2.1]\r\n\r\nx\r\n", signer.CodeBadFrom},
		{"line without colon", "From: a@" + signertest.AlignedRSA + "\r\nthis is not a header\r\n\r\nx\r\n", signer.CodeHeaderUnparseable},
		{"leading continuation", " folded\r\nFrom: a@" + signertest.AlignedRSA + "\r\n\r\nx\r\n", signer.CodeHeaderUnparseable},
		{"unknown domain", message(signertest.Unknown, "x\r\n"), signer.CodeUnknownDomain},
		{"domain of two brands", message(signertest.SharedDomain, "x\r\n"), signer.CodeAmbiguousDomain},
		{"header too large", "From: a@" + signertest.AlignedRSA + "\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\n\r\nx\r\n", signer.CodeHeaderTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Sign(context.Background(), strings.NewReader(tc.msg))
			r, ok := signer.AsRefusal(err)
			if !ok {
				t.Fatalf("Sign = %v, want a refusal %s", err, tc.code)
			}
			if r.Code != tc.code || r.Reason == "" {
				t.Fatalf("refusal %s (%s), want %s", r.Code, r.Reason, tc.code)
			}
		})
	}
	if got := metricSum(t, reg, "dkimd_sign_refused_total"); got != 13 {
		t.Errorf("dkimd_sign_refused_total = %v, want 13", got)
	}
}

func TestSignsUnusualMessages(t *testing.T) {
	t.Parallel()
	f := signertest.New(t)
	s := newSigner(t, f, nil)
	from := signertest.AlignedRSA
	long := strings.Repeat("word ", 400)
	for _, tc := range []struct{ name, msg string }{
		{"header only, no empty line", "From: a@" + from + "\r\nSubject: nothing else\r\n"},
		{"header only, no final line end", "From: a@" + from + "\r\nSubject: nothing else"},
		{"header and empty line, no body", "From: a@" + from + "\r\nSubject: x\r\n\r\n"},
		{"8-bit body", "From: a@" + from + "\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xfc\xdfe aus K\xf6ln\r\n"},
		{"UTF-8 From display name", "From: =?utf-8?q?J=C3=BCrgen?= <j@" + from + ">\r\nSubject: =?utf-8?b?w4RyZ2Vy?=\r\n\r\nx\r\n"},
		{"raw UTF-8 in headers", "From: Jürgen Müller <j@" + from + ">\r\nSubject: Grüße\r\n\r\nx\r\n"},
		{"unknown charset display name", "From: =?x-unknown?q?Name?= <j@" + from + ">\r\n\r\nx\r\n"},
		{"very long folded header", "From: a@" + from + "\r\nSubject: " + strings.ReplaceAll(long, "word word ", "word\r\n word ") + "\r\n\r\nx\r\n"},
		{"very long unfolded header", "From: a@" + from + "\r\nX-Long: " + long + long + long + "\r\n\r\nx\r\n"},
		{"folded From", "From: Alice\r\n Example\r\n\t<alice@" + from + ">\r\n\r\nx\r\n"},
		{"upper-case From domain", "FROM: a@ALIGNED-RSA.Example\r\n\r\nx\r\n"},
		{"space before colon", "From : a@" + from + "\r\n\r\nx\r\n"},
		{"mixed line ends", "From: a@" + from + "\nSubject: mixed\r\n\nline one\nline two\r\n"},
		{"body with lone CR", "From: a@" + from + "\r\n\r\na\rb\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := s.Sign(context.Background(), strings.NewReader(tc.msg))
			if err != nil {
				t.Fatal(err)
			}
			if res.Domain != from || res.Mode != signer.ModeAligned {
				t.Fatalf("signed d=%s mode %s", res.Domain, res.Mode)
			}
			wire := res.Header() + wireForm(tc.msg)
			for _, v := range signertest.VerifyGo(t, f.DNS, []byte(wireForm(wire))) {
				if v.Err != nil {
					t.Errorf("go-msgauth: %v\n%s", v.Err, wire)
				}
			}
		})
	}
}

// wireForm is a message as SMTP carries it: CRLF line ends, a header block
// that ends with an empty line.
func wireForm(m string) string {
	m = strings.ReplaceAll(strings.ReplaceAll(m, "\r\n", "\n"), "\n", "\r\n")
	if !strings.Contains(m, "\r\n\r\n") {
		if !strings.HasSuffix(m, "\r\n") {
			m += "\r\n"
		}
		m += "\r\n"
	}
	return m
}

// TestKeyChangesReachTheSigner: a rotation committed through the store is
// used for the next message, and a store that fails does not stop signing.
func TestKeyChangesReachTheSigner(t *testing.T) {
	t.Parallel()
	f := signertest.New(t)
	reg := prometheus.NewRegistry()
	s := newSigner(t, f, reg)
	ctx := context.Background()
	msg := message(signertest.AlignedRSA, "x\r\n")
	sign := func() signer.Result {
		t.Helper()
		res, err := s.Sign(ctx, strings.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if got := sign().Selectors(); got[0] != provision.Selector1 {
		t.Fatalf("signed with %v before rotation", got)
	}
	sign()
	if n := metricSum(t, reg, "dkimd_sign_key_loads_total"); n != 1 {
		t.Fatalf("key loaded %v times for two messages, want once", n)
	}

	// Rotate as the rotation loop does: selector2 active, selector1 retiring.
	err := f.Store.Update(ctx, func(tx keystore.Tx) error {
		keys, err := tx.Keys(ctx, keystore.OwnerDomain, signertest.AlignedRSA)
		if err != nil {
			return err
		}
		for _, k := range keys {
			switch k.Selector {
			case provision.Selector1:
				k.State = keystore.StateRetiring
			case provision.Selector2:
				k.State = keystore.StateActive
			default:
				continue
			}
			if err := tx.PutKey(ctx, k); err != nil {
				return err
			}
		}
		d, err := tx.Domain(ctx, signertest.AlignedRSA)
		if err != nil {
			return err
		}
		d.ActiveSelector = provision.Selector2
		if _, err := tx.UpdateDomain(ctx, d); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	res := sign()
	if got := res.Selectors(); got[0] != provision.Selector2 {
		t.Fatalf("signed with %v after rotation, want selector2", got)
	}
	for _, v := range signertest.VerifyGo(t, f.DNS, []byte(res.Header()+msg)) {
		if v.Err != nil {
			t.Fatalf("after rotation: %v", v.Err)
		}
	}

	// The store goes away: cached choices keep signing, even when stale.
	s.Invalidate()
	if err := f.Store.Close(); err != nil {
		t.Fatal(err)
	}
	if got := sign().Selectors(); got[0] != provision.Selector2 {
		t.Fatalf("signed with %v with the store closed", got)
	}
	wantMetric(t, reg, "dkimd_sign_stale_plans_total", 1, "")
	_, err = s.Sign(ctx, strings.NewReader(message(signertest.AlignedEd, "x\r\n")))
	if err == nil || errors.As(err, new(*signer.Refusal)) {
		t.Fatalf("uncached domain with the store closed: %v, want a store error", err)
	}
}

// TestPendingDomainFallsBackUntilActive: a status change is not a zone
// change, so the store does not announce it; the signer notices within
// MaxAge.
func TestPendingDomainFallsBackUntilActive(t *testing.T) {
	t.Parallel()
	f := signertest.New(t)
	now := time.Now()
	clock := func() time.Time { return now }
	s, err := signer.New(signer.Options{Store: f.Store, Box: f.Svc.Box, Zone: signertest.Zone, Now: clock, MaxAge: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	sign := func() signer.Result {
		t.Helper()
		res, err := s.Sign(context.Background(), strings.NewReader(message(signertest.Pending, "x\r\n")))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := sign(); res.Mode != signer.ModeFallback || res.Domain != signertest.Brand+"."+signertest.Zone {
		t.Fatalf("pending domain signed %s d=%s, want fallback", res.Mode, res.Domain)
	}
	signertest.SetStatus(t, f.Store, signertest.Pending, keystore.StatusActive)
	now = now.Add(59 * time.Second)
	if res := sign(); res.Mode != signer.ModeFallback {
		t.Fatalf("within MaxAge signed %s, want the cached fallback", res.Mode)
	}
	now = now.Add(2 * time.Second)
	if res := sign(); res.Mode != signer.ModeAligned || res.Domain != signertest.Pending {
		t.Fatalf("active domain signed %s d=%s after MaxAge, want aligned", res.Mode, res.Domain)
	}
}

func TestLargeBodyStreams(t *testing.T) {
	t.Parallel()
	f := signertest.New(t)
	s := newSigner(t, f, nil)
	line := bytes.Repeat([]byte("0123456789"), 7)
	var body bytes.Buffer
	for body.Len() < 5<<20 {
		body.Write(line)
		body.WriteString("\r\n")
	}
	msg := message(signertest.AlignedEd, body.String())
	res, err := s.Sign(context.Background(), strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range signertest.VerifyGo(t, f.DNS, []byte(res.Header()+msg)) {
		if v.Err != nil {
			t.Fatal(v.Err)
		}
	}
}

// metricSum adds up every series of a counter in reg.
// wantMetric fails the test unless the counters named name sum to want;
// note says why that value, where it is not obvious.
func wantMetric(t *testing.T, reg *prometheus.Registry, name string, want float64, note string) {
	t.Helper()
	if n := metricSum(t, reg, name); n != want {
		if note != "" {
			note = " (" + note + ")"
		}
		t.Errorf("%s = %v, want %v%s", name, n, want, note)
	}
}

func metricSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// failingReader hands out a message and then fails, as a client that goes
// away mid-upload.
type failingReader struct {
	r   *strings.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.r.Len() == 0 {
		return 0, f.err
	}
	return f.r.Read(p)
}

func TestReadErrorsAreTheSourcesFault(t *testing.T) {
	t.Parallel()
	f := signertest.New(t)
	reg := prometheus.NewRegistry()
	s := newSigner(t, f, reg)
	gone := errors.New("connection reset by peer")
	for name, msg := range map[string]string{
		"in the header": "From: a@" + signertest.AlignedRSA + "\r\nSubj",
		"in the body":   message(signertest.AlignedRSA, "half a bo"),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := s.Sign(context.Background(), &failingReader{r: strings.NewReader(msg), err: gone})
			if !errors.Is(err, signer.ErrRead) || !errors.Is(err, gone) {
				t.Fatalf("Sign = %v, want ErrRead wrapping the reader's error", err)
			}
		})
	}
	wantMetric(t, reg, "dkimd_sign_read_errors_total", 2, "")
	wantMetric(t, reg, "dkimd_sign_errors_total", 0, "a client's failure is not dkimd's")
}

// TestConcurrentMessagesStayApart signs messages of many sizes (around the
// 4 KB batches handed to go-msgauth and the 32 KB read buffer, both reused
// from message to message) and both line-end forms from several goroutines
// at once, between refused messages whose body is never read: every
// signature must verify, so no message saw another's bytes.
func TestConcurrentMessagesStayApart(t *testing.T) {
	t.Parallel()
	f := signertest.New(t)
	s := newSigner(t, f, nil)
	var msgs []string
	for i, size := range []int{0, 1, 100, 4000, 4095, 4096, 4097, 9000, 32 << 10, 40000} {
		from := signertest.AlignedRSA
		if i%2 == 1 {
			from = signertest.AlignedEd
		}
		var body strings.Builder
		for n := 0; body.Len() < size; n++ {
			fmt.Fprintf(&body, "message %d line %d of a body of %d bytes\r\n", i, n, size)
		}
		m := message(from, body.String())
		msgs = append(msgs, m, toLF(m), message(signertest.Unknown, body.String()))
	}
	// Verified afterwards, on the test's goroutine.
	signed := make([][]string, 4)
	var wg sync.WaitGroup
	for g := range signed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 3 {
				for j := range msgs {
					m := msgs[(j+g*5+round)%len(msgs)]
					res, err := s.Sign(context.Background(), strings.NewReader(m))
					if r, ok := signer.AsRefusal(err); ok && r.Code == signer.CodeUnknownDomain {
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					signed[g] = append(signed[g], wireForm(res.Header()+m))
				}
			}
		}()
	}
	wg.Wait()
	for _, wires := range signed {
		for _, w := range wires {
			for _, v := range signertest.VerifyGo(t, f.DNS, []byte(w)) {
				if v.Err != nil {
					t.Errorf("message of %d bytes: %v", len(w), v.Err)
				}
			}
		}
	}
}
