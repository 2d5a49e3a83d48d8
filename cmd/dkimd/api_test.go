package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"dkimd/internal/httpcall"
)

// cliEnv runs dkimd subcommands against one data dir, with no environment.
type cliEnv struct {
	t       *testing.T
	dataDir string
}

// run runs "cmd verb args…" with --data-dir before the arguments, where the
// flag package wants flags. The data dir gets a KEK and a migrated store
// first if it has none, as the first `dkimd serve` would have made them:
// subcommands never create either.
func (c cliEnv) run(cmd, verb string, args ...string) (stdout, stderr string, err error) {
	c.t.Helper()
	prepareDataDir(c.t, c.dataDir)
	var out, errOut bytes.Buffer
	args = append([]string{cmd, verb, "--data-dir", c.dataDir}, args...)
	err = run(c.t.Context(), args, noEnv, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestBrandCreatePrintsOnlyTheSecret(t *testing.T) {
	c := cliEnv{t: t, dataDir: t.TempDir()}
	stdout, stderr, err := c.run("brand", "create", "acme")
	if err != nil {
		t.Fatalf("brand create: %v; stderr: %s", err, stderr)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{43}\n$`).MatchString(stdout) {
		t.Errorf("stdout %q: want the secret alone on its line", stdout)
	}
	if strings.Contains(stderr, strings.TrimSpace(stdout)) {
		t.Error("the secret also went to stderr")
	}
	if _, _, err := c.run("brand", "create", "acme"); err == nil {
		t.Error("creating acme twice succeeded")
	}
}

// httpCall makes one request with optional Basic or Bearer credentials and
// returns the response with its body read.
func httpCall(t *testing.T, method, url, user, pass, bearer string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	return httpcall.Do(t, req)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startServe runs `dkimd serve` with only the API listener until the test
// ends, and waits for the API to answer.
func startServe(t *testing.T, c cliEnv, extra ...string) (addr string) {
	t.Helper()
	addr = freeAddr(t)
	args := append([]string{"serve", "--data-dir", c.dataDir, "--api-addr", addr, "--dns-addr", "", "--sign-addr", "",
		"--milter-addr", "", "--ops-addr", ""}, extra...)
	serve := runServe(t, args, noEnv, io.Discard)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ended, err := serve.ended(); ended {
			t.Fatalf("serve ended: %v", err)
		}
		if conn, err := net.Dial("tcp", addr); err == nil {
			conn.Close()
			return addr
		}
	}
	t.Fatal("API never listened")
	return ""
}

// TestServeAPI provisions with the CLI and uses the served API as the README
// tour does, over a real listener.
func TestServeAPI(t *testing.T) {
	c := cliEnv{t: t, dataDir: t.TempDir()}
	secret, stderr, err := c.run("brand", "create", "acme")
	if err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	secret = strings.TrimSpace(secret)
	if _, stderr, err := c.run("maildomain", "add", "acme", "spamtrap.dk"); err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	addr := startServe(t, c)
	base := "http://" + addr

	call := func(method, path, user, pass, bearer string) (*http.Response, []byte) {
		t.Helper()
		return httpCall(t, method, base+path, user, pass, bearer, nil)
	}
	for _, step := range []struct {
		method, path string
		status       int
		has          string
	}{
		{"GET", "/cloudapi/v2/mail/dkim/acme", 404, "No DKIM entries found"},
		{"PUT", "/cloudapi/v2/mail/dkim/acme/spamtrap.dk", 201, `"txtName":"selector1-spamtrap-dk._domainkey.oxcloud.zone"`},
		{"PUT", "/cloudapi/v2/mail/dkim/acme/spamtrap.dk", 200, `"domain":"spamtrap.dk"`},
		{"GET", "/cloudapi/v2/mail/dkim/acme/spamtrap.dk/selector1", 200, `"txtValue":"v=DKIM1; k=rsa; p=MII`},
		{"GET", "/cloudapi/v2/mail/dkim/acme", 200, `"activeSelector":"selector1"`},
		{"DELETE", "/cloudapi/v2/mail/dkim/acme/spamtrap.dk", 204, ""},
		{"GET", "/cloudapi/v2/mail/dkim/acme/spamtrap.dk", 404, "domain not found"},
	} {
		t.Run(step.method+" "+step.path, func(t *testing.T) {
			resp, body := call(step.method, step.path, "acme", secret, "")
			if resp.StatusCode != step.status || !strings.Contains(string(body), step.has) {
				t.Errorf("%d %s; want %d containing %q", resp.StatusCode, body, step.status, step.has)
			}
		})
	}

	t.Run("operator token", func(t *testing.T) {
		path := filepath.Join(c.dataDir, "operator.token")
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("operator.token mode %v", fi.Mode().Perm())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		token := strings.TrimSpace(string(b))
		resp, body := call("GET", "/admin/v1/brands", "", "", token)
		var brands []struct{ Name string }
		if resp.StatusCode != 200 || json.Unmarshal(body, &brands) != nil || len(brands) != 1 || brands[0].Name != "acme" {
			t.Errorf("admin list: %d %s", resp.StatusCode, body)
		}
		if resp, _ := call("GET", "/cloudapi/v2/mail/dkim/acme", "acme", token, ""); resp.StatusCode != 401 {
			t.Errorf("operator token on the brand API: %d", resp.StatusCode)
		}
		if resp, _ := call("GET", "/admin/v1/brands", "", "", secret); resp.StatusCode != 401 {
			t.Errorf("brand secret on the admin API: %d", resp.StatusCode)
		}
	})
}

func TestOperatorTokenFile(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "operator.token")
	first, err := loadOperatorToken(path, log)
	if err != nil || len(first) < 40 {
		t.Fatalf("generated %q, %v", first, err)
	}
	again, err := loadOperatorToken(path, log)
	if err != nil || again != first {
		t.Errorf("second load %q, %v; want the same token", again, err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOperatorToken(empty, log); err == nil {
		t.Error("an empty token file was accepted")
	}
}

func writeCert(t *testing.T, dir, cn string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{cn}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestCertReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir, "one.test")
	r, err := newCertReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cn := func() string {
		c, _ := r.get(nil)
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf.Subject.CommonName
	}
	if cn() != "one.test" {
		t.Fatalf("cert %q", cn())
	}
	writeCert(t, dir, "two.test")
	if err := r.reload(); err != nil || cn() != "two.test" {
		t.Errorf("after reload %q, %v", cn(), err)
	}
	if err := os.WriteFile(keyFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.reload(); err == nil || cn() != "two.test" {
		t.Errorf("bad reload: %v, serving %q; want an error and the old cert", err, cn())
	}
}

func TestServeTLS(t *testing.T) {
	c := cliEnv{t: t, dataDir: t.TempDir()}
	certFile, keyFile := writeCert(t, t.TempDir(), "localhost")
	addr := startServe(t, c, "--tls-cert-file", certFile, "--tls-key-file", keyFile)
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	resp, err := client.Get("https://" + addr + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Errorf("status %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
}
