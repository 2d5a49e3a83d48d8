package dkim_test

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"dkimd/internal/dkim"
)

// refBody is relaxed body canonicalization written as RFC 6376 §3.4.4 reads,
// in the manner of dkimpy (whole-body regular expressions), to hold the
// streaming BodyHash against: bare LF counts as CRLF; a CR without LF is a
// character. A body without a final line end is read as SMTP will carry
// it, with one (RFC 5321 §4.1.1.4), so that the last line loses its trailing
// white space as any other.
func refBody(body []byte) []byte {
	b := bytes.ReplaceAll(bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
	if !bytes.HasSuffix(b, []byte("\r\n")) {
		b = append(b, '\r', '\n')
	}
	b = trailingWSP.ReplaceAll(b, []byte("\r\n"))
	b = runsOfWSP.ReplaceAll(b, []byte(" "))
	for bytes.HasSuffix(b, []byte("\r\n\r\n")) {
		b = b[:len(b)-2]
	}
	if string(b) == "\r\n" {
		return nil
	}
	return b
}

var (
	trailingWSP = regexp.MustCompile("[\t ]+\r\n")
	runsOfWSP   = regexp.MustCompile("[\t ]+")
)

var bodies = map[string]string{
	"empty":                  "",
	"one CRLF":               "\r\n",
	"only empty lines":       "\r\n\r\n\n\r\n",
	"only white space":       "  \r\n\t\r\n \t ",
	"plain":                  "Hello,\r\n\r\nthe report.\r\n",
	"bare LF":                "Hello,\n\nthe report.\n",
	"mixed line ends":        "a\nb\r\nc\n\r\n",
	"trailing empty lines":   "a\r\n\r\n\r\n\r\n",
	"trailing white lines":   "a\r\n \r\n\t\r\n",
	"inner empty lines":      "a\r\n\r\n\r\nb\r\n",
	"no final line end":      "a\r\nb",
	"trailing space":         "a \r\nb\t\r\n",
	"runs of white space":    "a  b\t\tc \t d\r\n",
	"leading white space":    "  a\r\n\tb\r\n c\r\n",
	"bare CR inside":         "a\rb\r\n",
	"bare CR after space":    "a \rb\r\n",
	"bare CR at the end":     "a\r",
	"bare CR line at end":    "a\r\n\r\r\n",
	"CR CR LF":               "a\r\r\n",
	"space CR space CRLF":    "a \r \r\n",
	"8-bit":                  "Gr\xfc\xdfe\r\n",
	"NUL":                    "a\x00b\r\n",
	"long line":              strings.Repeat("word ", 5000) + "\r\n",
	"many canonical lines":   strings.Repeat("The quick brown fox jumps over the lazy dog.\r\n", 300),
	"canonical then dirty":   strings.Repeat("clean line\r\n", 50) + "dirty  line \r\n" + strings.Repeat("clean\r\n", 50),
	"empty lines then dirty": "a\r\n\r\n\r\n b  c\r\n\r\n",
	"double space at end":    "a  \r\n",
}

func bodyHash(chunks ...[]byte) []byte {
	b := dkim.NewBodyHash()
	for _, c := range chunks {
		b.Write(c)
	}
	return b.Sum(nil)
}

// TestBodyHashAgreesWithTheRFC: every body, written whole, byte by byte and
// split at every point, hashes as the reference canonicalization.
func TestBodyHashAgreesWithTheRFC(t *testing.T) {
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			want := sha256.Sum256(refBody([]byte(body)))
			if got := bodyHash([]byte(body)); !bytes.Equal(got, want[:]) {
				t.Fatalf("whole: %x, want %x (canonical %q)", got, want, refBody([]byte(body)))
			}
			if len(body) > 2000 {
				return
			}
			var bytewise [][]byte
			for i := range len(body) {
				bytewise = append(bytewise, []byte{body[i]})
			}
			if got := bodyHash(bytewise...); !bytes.Equal(got, want[:]) {
				t.Fatalf("byte by byte: %x, want %x", got, want)
			}
			for i := range len(body) {
				if got := bodyHash([]byte(body[:i]), []byte(body[i:])); !bytes.Equal(got, want[:]) {
					t.Fatalf("split at %d: %x, want %x", i, got, want)
				}
			}
		})
	}
}

func TestBodyHashReset(t *testing.T) {
	b := dkim.NewBodyHash()
	b.Write([]byte("a  \r\n\r\n"))
	b.Sum(nil)
	b.Reset()
	b.Write([]byte("x\r\n"))
	want := sha256.Sum256([]byte("x\r\n"))
	if got := b.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Fatalf("after Reset: %x, want %x", got, want)
	}
}

// FuzzBodyHash: any body, split anywhere, hashes as the reference does,
// and its first bare CR is found on the right line.
func FuzzBodyHash(f *testing.F) {
	for _, b := range bodies {
		f.Add([]byte(b), uint16(len(b)/2))
	}
	f.Fuzz(func(t *testing.T, body []byte, split uint16) {
		want := sha256.Sum256(refBody(body))
		at := int(split) % (len(body) + 1)
		b := dkim.NewBodyHash()
		b.Write(body[:at])
		b.Write(body[at:])
		if got := b.Sum(nil); !bytes.Equal(got, want[:]) {
			t.Fatalf("%x, want %x (canonical %q)", got, want, refBody(body))
		}
		wantLine := 0
		if m := bareCR.FindIndex(body); m != nil {
			wantLine = bytes.Count(body[:m[0]], []byte("\n")) + 1
		}
		if got := b.BareCR(); got != wantLine {
			t.Fatalf("bare CR on line %d, want %d", got, wantLine)
		}
	})
}

var bareCR = regexp.MustCompile("\r(?:[^\n]|$)")

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, header string
		line         int
		reason       string
	}{
		{"NUL", "From: a@b.example\r\nSubject: a\x00b\r\n", 2, "header line 2 contains a NUL byte"},
		{"bare CR", "From: a@b.example\r\nTo: c@d.example\rBcc: e@f.example\r\n", 2, "header line 2 contains a CR that is not followed by LF"},
		{"bare CR at the end", "From: a@b.example\r", 1, "header line 1 contains a CR that is not followed by LF"},
		{"bare CR in a continuation", "From: a@b.example\r\nSubject: x\r\n y\rz\r\n", 3, "CR that is not followed by LF"},
		{"line without colon", "From: a@b.example\r\nnot a field\r\n", 2, "neither a header field nor a continuation line"},
		{"empty name", "From: a@b.example\n: value\n", 2, "neither a header field"},
		{"space inside name", "From: a@b.example\nX Mailer: x\n", 2, "neither a header field"},
		{"8-bit name", "From: a@b.example\nX-Gr\xfc\xdf: x\n", 2, "neither a header field"},
		{"mbox From line", "From alice@b.example Sun Nov 29 06:00:00 2026\nFrom: a@b.example\n", 1, "neither a header field"},
		{"leading continuation", " folded\r\nFrom: a@b.example\r\n", 1, "continuation line with no header field before it"},
		{"text after the empty line", "From: a@b.example\r\n\r\nbody\r\n", 3, "follows the empty line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h dkim.Header
			err := h.Parse([]byte(tc.header))
			var se *dkim.SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse = %v, want a SyntaxError", err)
			}
			if se.Line != tc.line || !strings.Contains(se.Reason, tc.reason) || !strings.Contains(se.Reason, fmt.Sprintf("line %d", tc.line)) {
				t.Fatalf("line %d %q, want line %d and %q", se.Line, se.Reason, tc.line, tc.reason)
			}
		})
	}
}

func TestParseReadsAsVerifiersDo(t *testing.T) {
	var h dkim.Header
	block := "From : Alice\r\n <a@b.example>\r\nSUBJECT: one\nsubject:two\r\nX-Empty:\r\n  \r\nTo: =?utf-8?q?x?= <c@d.example>, Jürgen <j@ü.example>\r\n\r\n"
	if err := h.Parse([]byte(block)); err != nil {
		t.Fatal(err)
	}
	if n := h.Count("from"); n != 1 {
		t.Errorf("%d From fields, want 1 (white space before the colon is obsolete syntax, RFC 5322 §4.5)", n)
	}
	if got := h.Values(nil, "From"); len(got) != 1 || got[0] != " Alice <a@b.example>" {
		t.Errorf("From values %q", got)
	}
	if got := h.Values(nil, "Subject"); len(got) != 2 || got[0] != " one" || got[1] != "two" {
		t.Errorf("Subject values %q", got)
	}
	if got := h.Values(nil, "X-Empty"); len(got) != 1 || got[0] != "  " {
		t.Errorf("X-Empty values %q", got)
	}
	if n := h.Count("Subject"); n != 2 {
		t.Errorf("%d Subject fields, want 2", n)
	}
	list, data := h.Select(nil, nil)
	wantList := "From:From:Reply-To:Sender:Subject:Subject:Subject:To:To:Cc:In-Reply-To:References:List-Id:List-Unsubscribe:List-Unsubscribe-Post"
	if got := strings.Join(list, ":"); got != wantList {
		t.Errorf("h=%s\nwant %s", got, wantList)
	}
	wantData := "from:Alice <a@b.example>\r\nsubject:two\r\nsubject:one\r\nto:=?utf-8?q?x?= <c@d.example>, Jürgen <j@ü.example>\r\n"
	if string(data) != wantData {
		t.Errorf("canonical data %q\nwant %q", data, wantData)
	}
}

// keys are an RSA and an Ed25519 key with the TXT records that publish them.
type testKey struct {
	name string
	key  crypto.Signer
	txt  string
}

func testKeys(t testing.TB) []testKey {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub, ek, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return []testKey{
		{"rsa", rk, "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(spki)},
		{"ed25519", ek, "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)},
	}
}

// signMessage signs a whole message with the core, as package signer does.
func signMessage(t testing.TB, msg []byte, k crypto.Signer, now time.Time, expiry time.Duration) string {
	t.Helper()
	head, body, ok := bytes.Cut(msg, []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("no empty line in %q", msg)
	}
	var h dkim.Header
	if err := h.Parse(append(head, "\r\n"...)); err != nil {
		t.Fatal(err)
	}
	list, data := h.Select(nil, nil)
	bh := dkim.NewBodyHash()
	bh.Write(body)
	field, err := dkim.Sign(data, bh.Sum(nil), &dkim.Signature{Domain: "b.example", Selector: "sel", Key: k, Time: now, Expiry: expiry, Headers: list})
	if err != nil {
		t.Fatal(err)
	}
	return field
}

func verifyGo(t testing.TB, txt string, signed []byte) []*msgauth.Verification {
	t.Helper()
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(signed), &msgauth.VerifyOptions{
		LookupTXT: func(string) ([]string, error) { return []string{txt}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

const sampleMessage = "Received: from x by y\r\nFrom: Alice <a@b.example>\r\nTo: c@d.example\r\nSubject: report\r\n" +
	"Date: Sun, 29 Nov 2026 06:00:00 +0000\r\nList-Unsubscribe: <https://b.example/u>\r\n\r\nHello  world \r\n\r\n"

var (
	tagT = regexp.MustCompile(`[;\s]t=(\d+);`)
	tagX = regexp.MustCompile(`[;\s]x=(\d+);`)
)

func TestSignVerifiesWithGoMsgauth(t *testing.T) {
	// go-msgauth checks x= against its own clock.
	now := time.Now().Truncate(time.Second)
	for _, k := range testKeys(t) {
		t.Run(k.name, func(t *testing.T) {
			for _, expiry := range []time.Duration{0, 72 * time.Hour} {
				field := signMessage(t, []byte(sampleMessage), k.key, now, expiry)
				for _, line := range strings.Split(strings.TrimSuffix(field, "\r\n"), "\r\n") {
					if len(line) > 78 {
						t.Errorf("line of %d characters: %q", len(line), line)
					}
				}
				if m := tagT.FindStringSubmatch(field); m == nil || m[1] != fmt.Sprint(now.Unix()) {
					t.Errorf("no t=%d from the given time: %s", now.Unix(), field)
				}
				m := tagX.FindStringSubmatch(field)
				if (m != nil) != (expiry > 0) || (m != nil && m[1] != fmt.Sprint(now.Add(expiry).Unix())) {
					t.Errorf("expiry %s: x= wrong in %s", expiry, field)
				}
				vs := verifyGo(t, k.txt, []byte(field+sampleMessage))
				if len(vs) != 1 || vs[0].Err != nil {
					t.Fatalf("go-msgauth: %+v\n%s", vs[0], field)
				}
				tampered := "Subject: new\r\n" + sampleMessage
				if vs := verifyGo(t, k.txt, []byte(field+tampered)); vs[0].Err == nil {
					t.Errorf("a second Subject above the first still verifies")
				}
			}
		})
	}
}

func TestBodyHashFindsBareCR(t *testing.T) {
	for body, line := range map[string]int{
		"a\r\nb\r\n":                0,
		"a\rb\r\n":                  1,
		"x\r\ny\r\n\r\nz\r\r\n":     4,
		"x\ny\nz\r":                 3,
		"x\r\n\r\n\r":               3,
		"a\rb\r\nc\td\re\r\n":       1,
		"ok\r\nc\td\re\r\na\rb\r\n": 2,
		"a\r\r\n":                   1,
		strings.Repeat("clean line\r\n", 100) + "a\rb\r\n": 101,
	} {
		for _, split := range []int{0, len(body) / 2, len(body) - 1} {
			b := dkim.NewBodyHash()
			b.Write([]byte(body[:split]))
			b.Write([]byte(body[split:]))
			b.Sum(nil)
			if got := b.BareCR(); got != line {
				t.Errorf("%q split at %d: bare CR on line %d, want %d", truncate(body), split, got, line)
			}
		}
	}
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:20] + "…" + s[len(s)-20:]
	}
	return s
}
