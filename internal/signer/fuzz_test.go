package signer_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"dkimd/internal/signer"
	"dkimd/internal/signer/signertest"
)

// documentedCodes are the refusal codes of package signhttp's doc (and the
// operator guide); a refusal with any other is a bug.
var documentedCodes = map[string]*regexp.Regexp{
	signer.CodeNoFrom:            nil,
	signer.CodeMultipleFrom:      nil,
	signer.CodeBadFrom:           nil,
	signer.CodeHeaderUnparseable: regexp.MustCompile(`^header line \d+ (contains a NUL byte|contains a CR that is not followed by LF|is neither a header field nor a continuation line|is a continuation line with no header field before it)`),
	signer.CodeHeaderTooLarge:    nil,
	signer.CodeBodyBareCR:        regexp.MustCompile(`^body line \d+ contains a CR that is not followed by LF`),
	signer.CodeUnknownDomain:     nil,
	signer.CodeAmbiguousDomain:   nil,
	signer.CodeNoActiveKey:       nil,
}

// FuzzSign is the differential test of the signing core: any input is
// either signed or refused, never a panic. A signed one verifies with
// go-msgauth in its wire form, and its bh= is the body hash go-msgauth
// computes for the same message; a refused one has a documented code and a
// reason of the documented form. The bare-LF form of an input gets the same
// decision as its CRLF form.
func FuzzSign(f *testing.F) {
	fx := signertest.New(f)
	s := newSigner(f, fx, nil)
	// The keys do not change during the run: each TXT record is looked up
	// through DNS once.
	var txt sync.Map
	lookup := func(name string) ([]string, error) {
		if v, ok := txt.Load(name); ok {
			return v.([]string), nil
		}
		v, err := fx.DNS.LookupTXT(name)
		if err == nil {
			txt.Store(name, v)
		}
		return v, err
	}
	_, refKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	from := "From: a@" + signertest.AlignedRSA + "\r\n"
	for _, seed := range []string{
		message(signertest.AlignedEd, "body\r\n"),
		fullMessage(signertest.AlignedRSA),
		"From: a@" + signertest.FallbackRSA + "\nSubject: x\n\nbody\n",
		from + " folded\r\n\r\n",
		"From: =?utf-8?q?x?= <a@" + signertest.AlignedRSA + ">, b@c.example\r\n\r\n",
		"From: a@" + signertest.AlignedRSA,
		"From : a@" + signertest.AlignedRSA + "\r\nSubject\t: x\r\n\r\n  body  \t\r\n\r\n",
		from + "Subject: a\rb\r\n\r\nx\r\n",
		from + "Subject: a\x00b\r\n\r\nx\r\n",
		from + "\r\na\rb\r\n",
		from + "X-Empty:\r\n \r\n\t\r\nSubject: Grüße\r\n\r\n\r\n\r\n",
		from + "DKIM-Signature: v=1; a=rsa-sha256; d=x; s=y; h=from; bh=x; b=y\r\n\r\nx\r\n",
		from + "Subject: one\r\nsubject: two\r\nTO: x@y.example\r\n\r\nHello  world \r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		res, err := s.Sign(context.Background(), bytes.NewReader(msg))
		if err != nil {
			r, ok := signer.AsRefusal(err)
			if !ok {
				t.Fatalf("not a refusal: %v", err)
			}
			form, documented := documentedCodes[r.Code]
			if !documented || r.Reason == "" || (form != nil && !form.MatchString(r.Reason)) {
				t.Fatalf("refusal not as documented: %s %q", r.Code, r.Reason)
			}
		} else {
			if len(res.Signatures) == 0 || res.Domain == "" {
				t.Fatalf("signed without signatures: %+v", res)
			}
			wire := []byte(wireForm(string(msg)))
			bh := msgauthBodyHash(t, refKey, wire)
			for _, sig := range res.Signatures {
				if !strings.HasPrefix(sig.Field, "DKIM-Signature: ") || !strings.HasSuffix(sig.Field, "\r\n") {
					t.Fatalf("malformed field %q", sig.Field)
				}
				if got := tags(sig.Field)["bh"]; got != bh {
					t.Fatalf("bh=%s, go-msgauth computes %s for\n%q", got, bh, wire)
				}
				vs, err := dkim.VerifyWithOptions(bytes.NewReader(append([]byte(sig.Field), wire...)), &dkim.VerifyOptions{LookupTXT: lookup})
				if err != nil || len(vs) == 0 || vs[0].Err != nil {
					t.Fatalf("go-msgauth does not verify (%v, %+v):\n%q", err, vs, append([]byte(sig.Field), wire...))
				}
			}
		}
		crlf := bytes.ReplaceAll(bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
		res2, err2 := s.Sign(context.Background(), bytes.NewReader(crlf))
		if (err == nil) != (err2 == nil) || res.Domain != res2.Domain || res.Mode != res2.Mode {
			t.Fatalf("LF and CRLF forms decided differently: %v/%v, %+v/%+v", err, err2, res, res2)
		}
	})
}

// msgauthBodyHash is the bh= go-msgauth computes for a message, the
// reference of FuzzSign: its signer is used here for nothing else.
func msgauthBodyHash(t *testing.T, key crypto.Signer, msg []byte) string {
	t.Helper()
	ds, err := dkim.NewSigner(&dkim.SignOptions{Domain: "ref.example", Selector: "ref", Signer: key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
		HeaderKeys: []string{"From"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ds.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := ds.Close(); err != nil {
		t.Fatal(err)
	}
	return tags(ds.Signature())["bh"]
}
