package signer_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"dkimd/internal/signer"
	"dkimd/internal/signer/signertest"
)

// FuzzSign: any input is either signed, with well-formed fields, or refused
// with a code; never a panic. The bare-LF form of an input gets the same
// decision as its CRLF form.
func FuzzSign(f *testing.F) {
	fx := signertest.New(f)
	s := newSigner(f, fx, nil)
	f.Add([]byte(message(signertest.AlignedEd, "body\r\n")))
	f.Add([]byte("From: a@" + signertest.FallbackRSA + "\nSubject: x\n\nbody\n"))
	f.Add([]byte("From: a@" + signertest.AlignedRSA + "\r\n folded\r\n\r\n"))
	f.Add([]byte("From: =?utf-8?q?x?= <a@" + signertest.AlignedRSA + ">, b@c.example\r\n\r\n"))
	f.Add([]byte("From: a@" + signertest.AlignedRSA))
	f.Fuzz(func(t *testing.T, msg []byte) {
		res, err := s.Sign(context.Background(), bytes.NewReader(msg))
		if err != nil {
			r, ok := signer.AsRefusal(err)
			if !ok {
				t.Fatalf("not a refusal: %v", err)
			}
			if r.Code == "" || r.Reason == "" {
				t.Fatalf("refusal without code or reason: %+v", r)
			}
		} else {
			if len(res.Signatures) == 0 || res.Domain == "" {
				t.Fatalf("signed without signatures: %+v", res)
			}
			for _, sig := range res.Signatures {
				if !strings.HasPrefix(sig.Field, "DKIM-Signature: ") || !strings.HasSuffix(sig.Field, "\r\n") {
					t.Fatalf("malformed field %q", sig.Field)
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
