package signhttp_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/httpcall"
	"dkimd/internal/signer"
	"dkimd/internal/signer/signertest"
	"dkimd/internal/signhttp"
)

const token = "s3cret-token"

func start(t *testing.T, maxBytes int64, tok string) (*signertest.Fixture, *httptest.Server) {
	t.Helper()
	f := signertest.New(t)
	reg := prometheus.NewRegistry()
	s, err := signer.New(signer.Options{Store: f.Store, Box: f.Svc.Box, Zone: signertest.Zone, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	h, err := signhttp.New(signhttp.Options{Signer: s, Token: tok, MaxBytes: maxBytes, Registerer: reg,
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return f, srv
}

func msg(from, body string) string {
	return "From: Alice <alice@" + from + ">\r\nTo: bob@example.net\r\nSubject: hello\r\n" +
		"Date: Sun, 29 Nov 2026 06:00:00 +0000\r\nMessage-ID: <1@" + from + ">\r\n\r\n" + body
}

func post(t *testing.T, url, tok string, body io.Reader, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/v1/sign", body)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return httpcall.Do(t, req)
}

type envelope struct {
	Errors []struct{ Code, ID, Status, Title string }
}

func TestSign(t *testing.T) {
	t.Parallel()
	f, srv := start(t, 1<<20, token)
	for _, tc := range []struct {
		name, from, body, domain, selector, mode string
	}{
		{"aligned rsa crlf", signertest.AlignedRSA, "hi\r\n", signertest.AlignedRSA, "selector1", "aligned"},
		{"aligned ed25519 lf", signertest.AlignedEd, "hi\n", signertest.AlignedEd, "selector1, selector1-ed25519", "aligned"},
		{"fallback", signertest.FallbackRSA, "hi\r\n", signertest.Brand + "." + signertest.Zone, "selector1", "fallback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := msg(tc.from, tc.body)
			if strings.HasSuffix(tc.body, "\n") && !strings.HasSuffix(tc.body, "\r\n") {
				m = strings.ReplaceAll(m, "\r\n", "\n")
			}
			resp, body := post(t, srv.URL, token, strings.NewReader(m), nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type %q", ct)
			}
			if got := [3]string{resp.Header.Get("Dkim-Domain"), resp.Header.Get("Dkim-Selector"), resp.Header.Get("Dkim-Mode")}; got != [3]string{tc.domain, tc.selector, tc.mode} {
				t.Errorf("Dkim-Domain/Selector/Mode = %q, want %q", got, [3]string{tc.domain, tc.selector, tc.mode})
			}
			if !strings.HasPrefix(string(body), "DKIM-Signature: ") || !strings.HasSuffix(string(body), "\r\n") ||
				strings.Contains(strings.ReplaceAll(string(body), "\r\n", ""), "\n") {
				t.Fatalf("body is not CRLF header fields: %q", body)
			}
			wire := string(body) + strings.ReplaceAll(strings.ReplaceAll(m, "\r\n", "\n"), "\n", "\r\n")
			vs := signertest.VerifyGo(t, f.DNS, []byte(wire))
			if len(vs) != strings.Count(tc.selector, ",")+1 {
				t.Fatalf("%d signatures", len(vs))
			}
			for _, v := range vs {
				if v.Err != nil {
					t.Errorf("verify: %v", v.Err)
				}
			}
		})
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	_, srv := start(t, 64<<10, token)
	big := msg(signertest.AlignedRSA, strings.Repeat("x", 70<<10))
	for _, tc := range []struct {
		name   string
		method string
		tok    string
		body   io.Reader
		status int
		code   string
		title  string // a part of the title, where it must say more than the code
	}{
		{"unknown domain", http.MethodPost, token, strings.NewReader(msg(signertest.Unknown, "x\r\n")), 422, "UNKNOWN_DOMAIN", ""},
		{"no From", http.MethodPost, token, strings.NewReader("Subject: x\r\n\r\nx\r\n"), 422, "NO_FROM", ""},
		{"several From", http.MethodPost, token, strings.NewReader("From: a@x.example, b@x.example\r\n\r\nx\r\n"), 422, "MULTIPLE_FROM", ""},
		{"header does not parse", http.MethodPost, token, strings.NewReader("From: a@" + signertest.AlignedRSA + "\r\nnot a header\r\n\r\nx\r\n"), 422, "HEADER_UNPARSEABLE", "header line 2 is neither a header field nor a continuation line"},
		{"NUL in the header", http.MethodPost, token, strings.NewReader("Subject: a\x00\r\nFrom: a@" + signertest.AlignedRSA + "\r\n\r\nx\r\n"), 422, "HEADER_UNPARSEABLE", "header line 1 contains a NUL byte"},
		{"bare CR in the header", http.MethodPost, token, strings.NewReader("From: a@" + signertest.AlignedRSA + "\r\nTo: a@b.example\rCc: x@y.example\r\n\r\nx\r\n"), 422, "HEADER_UNPARSEABLE", "header line 2 contains a CR that is not followed by LF"},
		{"bare CR in the body", http.MethodPost, token, strings.NewReader(msg(signertest.AlignedRSA, "one\r\ntwo\rthree\r\n")), 422, "BODY_BARE_CR", "body line 2 contains a CR that is not followed by LF"},
		{"no token", http.MethodPost, "", strings.NewReader(msg(signertest.AlignedRSA, "x\r\n")), 401, "UNAUTHORIZED", ""},
		{"wrong token", http.MethodPost, "wrong", strings.NewReader(msg(signertest.AlignedRSA, "x\r\n")), 401, "UNAUTHORIZED", ""},
		{"too large, with length", http.MethodPost, token, strings.NewReader(big), 413, "BODY_TOO_LARGE", ""},
		{"too large, chunked", http.MethodPost, token, io.MultiReader(strings.NewReader(big)), 413, "BODY_TOO_LARGE", ""},
		{"GET", http.MethodGet, token, nil, 405, "METHOD_NOT_ALLOWED", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+"/v1/sign", tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.tok != "" {
				req.Header.Set("Authorization", "Bearer "+tc.tok)
			}
			req.Header.Set("X-Request-Id", "req-42")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var env envelope
			if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
				t.Fatalf("status %d, body not an envelope: %v", resp.StatusCode, err)
			}
			if resp.StatusCode != tc.status || len(env.Errors) != 1 {
				t.Fatalf("status %d %+v, want %d", resp.StatusCode, env, tc.status)
			}
			e := env.Errors[0]
			if e.Code != tc.code || e.ID != "req-42" || e.Status != strconv.Itoa(tc.status) || e.Title == "" || !strings.Contains(e.Title, tc.title) {
				t.Errorf("envelope %+v, want code %s id req-42 status %d title %q", e, tc.code, tc.status, tc.title)
			}
			if tc.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
}

func TestNoTokenConfigured(t *testing.T) {
	t.Parallel()
	_, srv := start(t, 1<<20, "")
	resp, body := post(t, srv.URL, "", strings.NewReader(msg(signertest.AlignedRSA, "x\r\n")), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
}

// bigMessage produces a message of n bytes lazily, so that the test itself
// holds none of it.
type bigMessage struct {
	header []byte
	n      int64
	line   []byte
	off    int
}

func (b *bigMessage) Read(p []byte) (int, error) {
	if len(b.header) > 0 {
		n := copy(p, b.header)
		b.header = b.header[n:]
		b.n -= int64(n)
		return n, nil
	}
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	total := 0
	for len(p) > 0 {
		n := copy(p, b.line[b.off:])
		b.off = (b.off + n) % len(b.line)
		p = p[n:]
		total += n
	}
	b.n -= int64(total)
	return total, nil
}

// TestLargeMessageStreams posts a 50 MB message and watches the heap: the
// request must not hold the message in memory.
func TestLargeMessageStreams(t *testing.T) {
	// Not parallel: it measures the whole process's heap.
	if testing.Short() {
		t.Skip("slow: skipped with -short")
	}
	_, srv := start(t, 64<<20, token)
	const size = 50 << 20
	line := bytes.Repeat([]byte("abcdefghij"), 7)
	line = append(line, '\r', '\n')
	body := &bigMessage{header: []byte(msg(signertest.AlignedEd, "")), n: size, line: line}

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
		}
	}()
	resp, sig := post(t, srv.URL, token, body, nil)
	close(stop)
	wg.Wait()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, sig)
	}
	grew := int64(peak.Load()) - int64(base.HeapAlloc)
	t.Logf("50 MB message: peak heap %d KB above the start", grew>>10)
	if grew > 16<<20 {
		t.Errorf("heap grew by %d MB while streaming a 50 MB message, want under 16 MB", grew>>20)
	}

	// That the signature of a large body is right is the signer's test
	// (TestLargeBodyStreams); here it must at least be there.
	if !bytes.HasPrefix(sig, []byte("DKIM-Signature: ")) || bytes.Count(sig, []byte("DKIM-Signature: ")) != 2 {
		t.Errorf("answer is not two signatures: %q", sig)
	}
}
