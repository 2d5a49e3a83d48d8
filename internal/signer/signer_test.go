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

	"dkimd/internal/dkim"
	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
	"dkimd/internal/provision"
	"dkimd/internal/signer"
	"dkimd/internal/signer/signertest"
)

func newSigner(t testing.TB, f *signertest.Fixture, reg prometheus.Registerer) *signer.Signer {
	t.Helper()
	s, err := signer.New(signer.Options{Store: f.Store, Box: f.Svc.Box, Zone: signertest.Zone,
		Log: slog.New(slog.DiscardHandler), Registerer: reg})
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
// signer verifies with go-msgauth, dkimpy and OpenDKIM resolving through DNS
// that publishes the store's keys and the customers' CNAMEs, for each
// algorithm, line-ending form and mode.
func TestSignAndVerifyThroughDNS(t *testing.T) {
	t.Parallel()
	f := signertest.New(t)
	// A clock of its own, so that t= is known and the bare-LF and CRLF
	// forms sign alike to the byte.
	now := time.Now().Add(-time.Hour).Truncate(time.Second)
	s, err := signer.New(signer.Options{Store: f.Store, Box: f.Svc.Box, Zone: signertest.Zone,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
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
	// message() has each of these once, and none of the others.
	wantH := "from:from:reply-to:sender:subject:subject:date:date:to:to:cc:message-id:message-id:in-reply-to:references:" +
		"mime-version:mime-version:content-type:content-type:list-id:list-unsubscribe:list-unsubscribe:" +
		"list-unsubscribe-post:list-unsubscribe-post"
	wire := make(map[string][]byte) // for dkimpy and OpenDKIM, in one run each
	for _, c := range cases {
		name := c.alg + "/" + c.ending + "/" + c.mode
		t.Run(name, func(t *testing.T) {
			msg := message(c.from, "Hello,\r\n\r\nthe report is attached.   \r\n\r\n\r\n")
			if c.ending == "lf" {
				msg = toLF(msg)
			}
			res, err := s.Sign(ctx, strings.NewReader(msg))
			if err != nil {
				t.Fatal(err)
			}
			if res.Mode != c.mode || res.Domain != c.d || strings.Join(res.Selectors(), ",") != strings.Join(c.selectors, ",") {
				t.Fatalf("signed as mode %s d=%s s=%v, want %s d=%s s=%v", res.Mode, res.Domain, res.Selectors(), c.mode, c.d, c.selectors)
			}
			for _, sig := range res.Signatures {
				if !strings.HasPrefix(sig.Field, "DKIM-Signature: ") || !strings.HasSuffix(sig.Field, "\r\n") ||
					strings.Contains(strings.ReplaceAll(sig.Field, "\r\n", ""), "\n") {
					t.Fatalf("field is not a CRLF header field: %q", sig.Field)
				}
				for _, line := range strings.Split(strings.TrimSuffix(sig.Field, "\r\n"), "\r\n") {
					if len(line) > 78 {
						t.Errorf("a line of %d characters: %q", len(line), line)
					}
				}
				tg := tags(sig.Field)
				wantA := sig.Algorithm + "-sha256"
				if tg["a"] != wantA || tg["c"] != "relaxed/relaxed" || tg["d"] != c.d || tg["s"] != sig.Selector {
					t.Errorf("tags a=%s c=%s d=%s s=%s, want a=%s c=relaxed/relaxed d=%s s=%s", tg["a"], tg["c"], tg["d"], tg["s"], wantA, c.d, sig.Selector)
				}
				for _, tag := range []string{"l", "x"} {
					if _, ok := tg[tag]; ok {
						t.Errorf("signature has %s=: %s", tag, sig.Field)
					}
				}
				if tg["t"] != strconv.FormatInt(now.Unix(), 10) {
					t.Errorf("t=%s, want %d from the injected clock", tg["t"], now.Unix())
				}
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
				crlfRes, err := s.Sign(ctx, strings.NewReader(strings.ReplaceAll(msg, "\n", "\r\n")))
				if err != nil {
					t.Fatal(err)
				}
				// RSA PKCS#1 v1.5 and Ed25519 are deterministic: the same
				// input gives the same field.
				if crlfRes.Header() != res.Header() {
					t.Errorf("bare LF and CRLF signatures differ:\n%s\n%s", res.Header(), crlfRes.Header())
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
	t.Run("OpenDKIM", func(t *testing.T) {
		signertest.RequireOpenDKIM(t)
		res := signertest.VerifyOpenDKIM(t, f.DNS, wire)
		for _, c := range cases {
			name := c.alg + "/" + c.ending + "/" + c.mode
			t.Run(name, func(t *testing.T) {
				rs := res[name]
				if len(rs) != len(c.selectors) {
					t.Fatalf("OpenDKIM saw %d signatures, want %d", len(rs), len(c.selectors))
				}
				for i, r := range rs {
					if !r.OK || !strings.Contains(r.Said, "s="+c.selectors[i]+", d="+c.d+",") {
						t.Errorf("OpenDKIM: %s", r.Said)
					}
				}
			})
		}
	})
}

// fullMessage has every signed header field once.
func fullMessage(from string) string {
	return "Received: from client.example (client.example [192.0.2.1])\r\n\tby mx.example with ESMTP id 1234\r\n" +
		"From: Alice Example <alice@" + from + ">\r\n" +
		"Reply-To: Alice <reply@" + from + ">\r\n" +
		"Sender: Mailer <mailer@" + from + ">\r\n" +
		"Subject: quarterly report\r\n" +
		"Date: Sun, 29 Nov 2026 06:00:00 +0000\r\n" +
		"To: bob@example.net\r\n" +
		"Cc: carol@example.net\r\n" +
		"Message-ID: <20261129060000.1@" + from + ">\r\n" +
		"In-Reply-To: <20261128.7@example.net>\r\n" +
		"References: <20261128.7@example.net>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n" +
		"List-Id: Reports <reports." + from + ">\r\n" +
		"List-Unsubscribe: <https://" + from + "/u/1>\r\n" +
		"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" +
		"\r\noriginal body\r\n"
}

// minimalMessage has From, Subject, and none of the fields that are signed
// only when present.
func minimalMessage(from string) string {
	return "From: alice@" + from + "\r\nSubject: hi\r\n\r\nbody\r\n"
}

// TestAddedFieldsBreakTheSignature: a second instance of any signed field,
// added above the original as someone re-sending a signed message would,
// fails verification with dkimpy (and go-msgauth and OpenDKIM), for RSA and
// Ed25519 signatures alike; so does a field that is signed when absent
// added to a message without it. The controls: a Received, or a Date, To or
// Message-ID (which MTAs add to a message that lacks them), added to a
// message keep it valid.
func TestAddedFieldsBreakTheSignature(t *testing.T) {
	t.Parallel()
	f := signertest.New(t)
	s := newSigner(t, f, nil)
	type variant struct {
		msg   []byte
		valid bool // what a verifier must say
		alg   string
	}
	msgs := make(map[string]variant)
	sign := func(msg string) signer.Result {
		t.Helper()
		res, err := s.Sign(context.Background(), strings.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	for _, alg := range []string{dkimkey.RSA, dkimkey.Ed25519} {
		full, minimal := fullMessage(signertest.AlignedEd), minimalMessage(signertest.AlignedEd)
		fullRes, minRes := sign(full), sign(minimal)
		var fullSig, minSig string
		for i, sig := range fullRes.Signatures {
			if sig.Algorithm == alg {
				fullSig, minSig = sig.Field, minRes.Signatures[i].Field
			}
		}
		msgs[alg+"/unchanged"] = variant{[]byte(fullSig + full), true, alg}
		for _, sf := range dkim.SignedFields {
			added := sf.Name + ": added <mallory@evil.example>\r\n"
			msgs[alg+"/second "+sf.Name] = variant{[]byte(added + fullSig + full), false, alg}
			if sf.Absent && sf.Name != "From" && sf.Name != "Subject" {
				msgs[alg+"/added "+sf.Name] = variant{[]byte(added + minSig + minimal), false, alg}
			}
		}
		msgs[alg+"/second Subject folded"] = variant{[]byte("Subject: free\r\n money\r\n" + fullSig + full), false, alg}
		msgs[alg+"/second To, lower case, below the signature"] = variant{[]byte(fullSig + "to: mallory@evil.example\r\n" + full), false, alg}
		msgs[alg+"/control: Received added"] = variant{[]byte("Received: from relay.example by mx.example; Sun, 29 Nov 2026 06:00:01 +0000\r\n" + fullSig + full), true, alg}
		msgs[alg+"/control: Date, To, Message-ID added where absent"] = variant{[]byte(
			"Date: Sun, 29 Nov 2026 06:00:02 +0000\r\nTo: undisclosed-recipients:;\r\nMessage-ID: <added@mx.example>\r\n" + minSig + minimal), true, alg}
	}
	wire := make(map[string][]byte, len(msgs))
	for name, v := range msgs {
		wire[name] = v.msg
	}
	t.Run("go-msgauth", func(t *testing.T) {
		for name, v := range msgs {
			vs := signertest.VerifyGo(t, f.DNS, v.msg)
			if len(vs) != 1 || (vs[0].Err == nil) != v.valid {
				t.Errorf("%s: go-msgauth says %v, want valid=%v", name, vs[0].Err, v.valid)
			}
		}
	})
	t.Run("dkimpy", func(t *testing.T) {
		signertest.RequireDkimpy(t)
		res := signertest.VerifyDkimpy(t, f.DNS, wire)
		for name, v := range msgs {
			t.Run(name, func(t *testing.T) {
				rs := res[name]
				if len(rs) != 1 || rs[0].OK != v.valid || rs[0].A != v.alg+"-sha256" {
					t.Errorf("dkimpy says %+v, want valid=%v", rs, v.valid)
				}
			})
		}
	})
	t.Run("OpenDKIM", func(t *testing.T) {
		signertest.RequireOpenDKIM(t)
		res := signertest.VerifyOpenDKIM(t, f.DNS, wire)
		for name, v := range msgs {
			t.Run(name, func(t *testing.T) {
				rs := res[name]
				if len(rs) != 1 || rs[0].OK != v.valid {
					t.Errorf("OpenDKIM says %+v, want valid=%v", rs, v.valid)
				}
			})
		}
	})
}

// TestTimestampsFromTheInjectedClock: t= is the signer's clock at Close,
// never the system's; x= is there only with SignExpiry, that much later.
func TestTimestampsFromTheInjectedClock(t *testing.T) {
	t.Parallel()
	f := signertest.New(t)
	// A clock far from the system's, so that a t= taken from time.Now
	// cannot pass.
	now := time.Date(2031, 3, 14, 15, 9, 26, 0, time.UTC)
	for _, expiry := range []time.Duration{0, 7 * 24 * time.Hour} {
		t.Run(fmt.Sprintf("expiry %s", expiry), func(t *testing.T) {
			s, err := signer.New(signer.Options{Store: f.Store, Box: f.Svc.Box, Zone: signertest.Zone,
				Now: func() time.Time { return now }, SignExpiry: expiry})
			if err != nil {
				t.Fatal(err)
			}
			res, err := s.Sign(context.Background(), strings.NewReader(message(signertest.AlignedEd, "x\r\n")))
			if err != nil {
				t.Fatal(err)
			}
			for _, sig := range res.Signatures {
				tg := tags(sig.Field)
				if tg["t"] != strconv.FormatInt(now.Unix(), 10) {
					t.Errorf("%s: t=%s, want %d", sig.Selector, tg["t"], now.Unix())
				}
				x, hasX := tg["x"]
				switch {
				case expiry == 0 && hasX:
					t.Errorf("%s: x=%s without SignExpiry", sig.Selector, x)
				case expiry > 0 && x != strconv.FormatInt(now.Add(expiry).Unix(), 10):
					t.Errorf("%s: x=%q, want %d", sig.Selector, x, now.Add(expiry).Unix())
				}
			}
		})
	}
	// A signature with x= verifies while it holds.
	s, err := signer.New(signer.Options{Store: f.Store, Box: f.Svc.Box, Zone: signertest.Zone, SignExpiry: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	msg := message(signertest.AlignedEd, "x\r\n")
	res, err := s.Sign(context.Background(), strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range signertest.VerifyGo(t, f.DNS, []byte(res.Header()+msg)) {
		if v.Err != nil || v.Expiration.IsZero() {
			t.Errorf("with x=: %v (expiration %v)", v.Err, v.Expiration)
		}
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	f := signertest.New(t)
	reg := prometheus.NewRegistry()
	s := newSigner(t, f, reg)
	from := "From: a@" + signertest.AlignedRSA + "\r\n"
	for _, tc := range []struct {
		name, msg, code string
		reason          string // a part of the reason, where it must say more than the code
	}{
		{"no From", "To: a@b.example\r\nSubject: x\r\n\r\nbody\r\n", signer.CodeNoFrom, ""},
		{"empty header", "\r\nbody\r\n", signer.CodeNoFrom, ""},
		{"two From fields", "From: a@" + signertest.AlignedRSA + "\r\nFrom: b@" + signertest.AlignedRSA + "\r\n\r\nx\r\n", signer.CodeMultipleFrom, ""},
		{"two From addresses", "From: a@" + signertest.AlignedRSA + ", b@" + signertest.AlignedRSA + "\r\n\r\nx\r\n", signer.CodeMultipleFrom, ""},
		{"From group without addresses", "From: undisclosed:;\r\n\r\nx\r\n", signer.CodeNoFrom, ""},
		{"From that does not parse", "From: <alice@>\r\n\r\nx\r\n", signer.CodeBadFrom, ""},
		{"From domain with trailing dot", "From: a@" + signertest.AlignedRSA + ".\r\n\r\nx\r\n", signer.CodeBadFrom, ""},
		{"From domain an IP literal", "From: alice@[192.0.2.1]\r\n\r\nx\r\n", signer.CodeBadFrom, ""},
		{"line without colon", "From: a@" + signertest.AlignedRSA + "\r\nthis is not a header\r\n\r\nx\r\n", signer.CodeHeaderUnparseable, ""},
		{"leading continuation", " folded\r\nFrom: a@" + signertest.AlignedRSA + "\r\n\r\nx\r\n", signer.CodeHeaderUnparseable, ""},
		{"unknown domain", message(signertest.Unknown, "x\r\n"), signer.CodeUnknownDomain, ""},
		{"domain of two brands", message(signertest.SharedDomain, "x\r\n"), signer.CodeAmbiguousDomain, ""},
		{"header too large", "From: a@" + signertest.AlignedRSA + "\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\n\r\nx\r\n", signer.CodeHeaderTooLarge, ""},
		{"From with space before the colon, and another", "From : a@" + signertest.AlignedRSA + "\r\n" + from + "\r\nx\r\n", signer.CodeMultipleFrom, "2 From"},
		{"NUL in the header", from + "Subject: a\x00b\r\n\r\nx\r\n", signer.CodeHeaderUnparseable, "header line 2 contains a NUL byte"},
		{"bare CR in the header", from + "To: b@example.net\rBcc: c@example.net\r\n\r\nx\r\n", signer.CodeHeaderUnparseable, "header line 2 contains a CR that is not followed by LF"},
		{"bare CR in a From", "From: a@example.net\r" + from + "\r\nx\r\n", signer.CodeHeaderUnparseable, "header line 1 contains a CR"},
		{"bare CR in the body", from + "\r\nline 1\r\nline\r2\r\n", signer.CodeBodyBareCR, "body line 2 contains a CR that is not followed by LF"},
		{"bare CR ending the body", from + "\r\nline 1\r", signer.CodeBodyBareCR, "body line 1"},
		{"line that is not a field, with its number", from + "Subject: x\nnot a header\n\nx\n", signer.CodeHeaderUnparseable, "header line 3 is neither a header field nor a continuation line"},
		{"mbox From line", "From alice@example.net Sun Nov 29 06:00:00 2026\n" + from + "\r\nx\r\n", signer.CodeHeaderUnparseable, "header line 1 is neither"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Twice: the second message meets whatever the signer's
			// caches kept of the first, and is refused the same.
			for range 2 {
				_, err := s.Sign(context.Background(), strings.NewReader(tc.msg))
				r, ok := signer.AsRefusal(err)
				if !ok {
					t.Fatalf("Sign = %v, want a refusal %s", err, tc.code)
				}
				if r.Code != tc.code || r.Reason == "" || !strings.Contains(r.Reason, tc.reason) {
					t.Fatalf("refusal %s (%s), want %s (%s)", r.Code, r.Reason, tc.code, tc.reason)
				}
			}
		})
	}
	if got := metricSum(t, reg, "dkimd_sign_refused_total"); got != 42 {
		t.Errorf("dkimd_sign_refused_total = %v, want 42", got)

	}
}

func TestSignsUnusualMessages(t *testing.T) {
	t.Parallel()
	f := signertest.New(t)
	s := newSigner(t, f, nil)
	from := signertest.AlignedRSA
	long := strings.Repeat("word ", 400)
	wires := make(map[string][]byte) // for dkimpy and OpenDKIM, in one run each
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
		{"obsolete WSP before colons", "Subject\t: x\r\nFrom : a@" + from + "\r\n\r\nx\r\n"},
		{"field of white space only", "From: a@" + from + "\r\nX-Empty:\r\n  \r\nSubject:\r\n\r\nx\r\n"},
		{"UTF-8 header fields (RFC 6532)", "From: Jürgen <jürgen@" + from + ">\r\nTo: Zoë <zoë@exämple.net>\r\nSubject: Grüße aus Köln ☕\r\n\r\nx\r\n"},
		{"body of white space only", "From: a@" + from + "\r\n\r\n \r\n\t\r\n\r\n"},
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
			for _, v := range signertest.VerifyGo(t, f.DNS, []byte(wire)) {
				if v.Err != nil {
					t.Errorf("go-msgauth: %v\n%s", v.Err, wire)
				}
			}
			wires[tc.name] = []byte(wire)
		})
	}
	t.Run("dkimpy", func(t *testing.T) {
		signertest.RequireDkimpy(t)
		for name, rs := range signertest.VerifyDkimpy(t, f.DNS, readable(wires)) {
			for _, r := range rs {
				if !r.OK {
					t.Errorf("%s: dkimpy: %s", name, r.Error)
				}
			}
		}
	})
	t.Run("OpenDKIM", func(t *testing.T) {
		signertest.RequireOpenDKIM(t)
		for name, rs := range signertest.VerifyOpenDKIM(t, f.DNS, readable(wires)) {
			for _, r := range rs {
				if !r.OK {
					t.Errorf("%s: OpenDKIM: %s", name, r.Said)
				}
			}
		}
	})
}

// readable leaves out the messages with white space before a colon: dkimpy
// refuses that obsolete syntax (MessageFormatError) and OpenDKIM ignores
// such a message silently; only go-msgauth reads it. The signer signs it,
// because RFC 5322 §4.5 reads it as that field, so that a "From :" is counted as a From.
func readable(wires map[string][]byte) map[string][]byte {
	out := make(map[string][]byte)
	for name, w := range wires {
		if !strings.Contains(name, "before colon") {
			out[name] = w
		}
	}
	return out
}

// wireForm is a message as SMTP carries it: CRLF line ends, a header block
// that ends with an empty line, a final line end (RFC 5321 §4.1.1.4).
func wireForm(m string) string {
	m = strings.ReplaceAll(strings.ReplaceAll(m, "\r\n", "\n"), "\n", "\r\n")
	if !strings.HasSuffix(m, "\r\n") {
		m += "\r\n"
	}
	if !strings.Contains(m, "\r\n\r\n") {
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
	rotateAlignedRSA(t, f)
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
	_, err := s.Sign(ctx, strings.NewReader(message(signertest.AlignedEd, "x\r\n")))
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

// rotateAlignedRSA rotates signertest.AlignedRSA as the rotation loop does:
// selector2 active, selector1 retiring, in one transaction.
func rotateAlignedRSA(t *testing.T, f *signertest.Fixture) {
	t.Helper()
	ctx := context.Background()
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
		_, err = tx.UpdateDomain(ctx, d)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestLongFromIsNotRemembered: a From value longer than the signer keeps
// signs as any other, every time, and is not held in memory after.
func TestLongFromIsNotRemembered(t *testing.T) {
	t.Parallel()
	f := signertest.New(t)
	s := newSigner(t, f, nil)
	short := "From: Alice <alice@" + signertest.AlignedRSA + ">\r\n\r\nx\r\n"
	long := "From: \"" + strings.Repeat("A", 300) + "\" <alice@" + signertest.AlignedRSA + ">\r\n\r\nx\r\n"
	for _, msg := range []string{short, long, long, short} {
		res, err := s.Sign(context.Background(), strings.NewReader(msg))
		if err != nil || res.FromDomain != signertest.AlignedRSA {
			t.Fatalf("Sign = %+v, %v", res, err)
		}
	}
	if n := signer.RememberedFroms(s); n != 1 {
		t.Fatalf("%d From values remembered, want 1 (the short one)", n)
	}
}
