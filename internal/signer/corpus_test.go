package signer_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"dkimd/internal/signer/signertest"
)

// TestCorpusVerifies signs every message of testdata/corpus and has
// Debian's dkimpy, OpenDKIM and go-msgauth verify each signature through the
// loopback DNS, as a receiving MTA would. One tampered message is the
// control that shows the verifiers do reject.
func TestCorpusVerifies(t *testing.T) {
	t.Parallel()
	signertest.RequireDkimpy(t)
	f := signertest.New(t)
	s := newSigner(t, f, nil)
	files, err := filepath.Glob("testdata/corpus/*.eml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 30 {
		t.Fatalf("corpus has %d messages, want at least 30", len(files))
	}
	wire := make(map[string][]byte)
	wantSigs := make(map[string]int)
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".eml")
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.Sign(context.Background(), strings.NewReader(string(raw)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		wire[name] = []byte(res.Header() + wireForm(string(raw)))
		wantSigs[name] = len(res.Signatures)
	}
	const control = "control: tampered body"
	wire[control] = []byte(strings.Replace(string(wire["01-plain-ascii"]), "plain text.", "plain text!", 1))
	results := signertest.VerifyDkimpy(t, f.DNS, wire)
	signertest.RequireOpenDKIM(t)
	odResults := signertest.VerifyOpenDKIM(t, f.DNS, wire)
	for name, want := range wantSigs {
		t.Run(name, func(t *testing.T) {
			rs := results[name]
			if len(rs) != want {
				t.Fatalf("dkimpy saw %d signatures, want %d", len(rs), want)
			}
			for _, r := range rs {
				if !r.OK {
					t.Errorf("dkimpy: d=%s s=%s a=%s does not verify %s", r.D, r.S, r.A, r.Error)
				}
			}
			if od := odResults[name]; len(od) != want {
				t.Errorf("OpenDKIM saw %d signatures, want %d", len(od), want)
			}
			for _, r := range odResults[name] {
				if !r.OK {
					t.Errorf("OpenDKIM: %s", r.Said)
				}
			}
			for _, v := range signertest.VerifyGo(t, f.DNS, wire[name]) {
				if v.Err != nil {
					t.Errorf("go-msgauth: d=%s: %v", v.Domain, v.Err)
				}
			}
		})
	}
	t.Run(control, func(t *testing.T) {
		for _, r := range results[control] {
			if r.OK {
				t.Errorf("dkimpy verified a tampered message (d=%s s=%s)", r.D, r.S)
			}
		}
		for _, r := range odResults[control] {
			if r.OK {
				t.Errorf("OpenDKIM verified a tampered message: %s", r.Said)
			}
		}
	})
}
