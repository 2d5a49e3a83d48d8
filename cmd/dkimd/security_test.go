package main

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
	"dkimd/internal/logtest"
	"dkimd/internal/sealbox"
)

// securityServer is a `dkimd serve` with API, DNS, sign and ops listeners.
type securityServer struct {
	api, dns, sign, ops string
	logs                *logtest.Buffer
	seen                bytes.Buffer // every response body and header the test received
}

func startFullServe(t *testing.T, c cliEnv) *securityServer {
	t.Helper()
	s := &securityServer{api: freeAddr(t), sign: freeAddr(t), ops: freeAddr(t), logs: &logtest.Buffer{}}
	// A UDP+TCP port for DNS: take a free TCP port and hope UDP is free too,
	// which on loopback it practically always is.
	s.dns = freeAddr(t)
	args := []string{"serve", "--data-dir", c.dataDir, "--api-addr", s.api, "--dns-addr", s.dns, "--sign-addr", s.sign,
		"--milter-addr", "", "--ops-addr", s.ops, "--resolver", "127.0.0.1:9", "--key-pool-size", "0", "--log-level", "debug"}
	serve := runServe(t, args, noEnv, s.logs)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("serve never became ready; log:\n%s", s.logs.String())
		}
		if ended, err := serve.ended(); ended {
			t.Fatalf("serve ended: %v\n%s", err, s.logs.String())
		}
		resp, err := http.Get("http://" + s.ops + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s
			}
		}
	}
}

// call makes a request and keeps what came back for the key-material scan.
func (s *securityServer) call(t *testing.T, method, url, user, pass, bearer string, body []byte) (int, []byte) {
	t.Helper()
	resp, b := httpCall(t, method, url, user, pass, bearer, body)
	for k, v := range resp.Header {
		s.seen.WriteString(k + ": " + strings.Join(v, ",") + "\n")
	}
	s.seen.Write(b)
	return resp.StatusCode, b
}

// brandRoutes lists the brand API's routes from the served OpenAPI
// document, so that a route added later is covered without editing this test.
func (s *securityServer) brandRoutes(t *testing.T) [][2]string {
	t.Helper()
	_, body := s.call(t, "GET", "http://"+s.api+"/openapi.json", "", "", "", nil)
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	var out [][2]string
	for path, ops := range doc.Paths {
		if !strings.HasPrefix(path, "/cloudapi/v2/mail/dkim/{brand}") {
			continue
		}
		for method := range ops {
			switch m := strings.ToUpper(method); m {
			case "GET", "PUT", "POST", "DELETE", "PATCH":
				out = append(out, [2]string{m, path})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i][1]+out[i][0] < out[j][1]+out[j][0] })
	if len(out) < 7 {
		t.Fatalf("only %d brand routes in the OpenAPI document: %v", len(out), out)
	}
	return out
}

// TestSecurity is issue 7's security proof against a real serve: brands are
// fenced off from each other on every route and method, credentials do not
// cross between the brand and admin APIs, failed logins are throttled, no
// response, log line or metric carries private key material, and the DNS
// server neither recurses, transfers without TSIG, nor amplifies ANY.
func TestSecurity(t *testing.T) {
	c := cliEnv{t: t, dataDir: t.TempDir()}
	secrets := map[string]string{}
	for _, b := range []string{"acme", "evil"} {
		out, stderr, err := c.run("brand", "create", b)
		if err != nil {
			t.Fatalf("%v: %s", err, stderr)
		}
		secrets[b] = strings.TrimSpace(out)
	}
	for _, md := range [][2]string{{"acme", "spamtrap.dk"}, {"evil", "evil.example"}} {
		if _, stderr, err := c.run("maildomain", "add", md[0], md[1]); err != nil {
			t.Fatalf("%v: %s", err, stderr)
		}
	}
	s := startFullServe(t, c)
	api := "http://" + s.api + "/cloudapi/v2/mail/dkim"
	if code, body := s.call(t, "PUT", api+"/acme/spamtrap.dk", "acme", secrets["acme"], "", nil); code != 201 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	_, before := s.call(t, "GET", api+"/acme/spamtrap.dk", "acme", secrets["acme"], "", nil)

	t.Run("brands are fenced off on every route", func(t *testing.T) {
		for _, rt := range s.brandRoutes(t) {
			method, path := rt[0], rt[1]
			fill := func(brand string) string {
				p := strings.NewReplacer("{brand}", brand, "{domain}", "spamtrap.dk", "{selector}", "selector1").Replace(path)
				if method == "POST" && strings.HasSuffix(p, "/rotate") {
					p += "?emergency=true"
				}
				return "http://" + s.api + p
			}
			t.Run(method+" "+path+" on the other brand's path", func(t *testing.T) {
				if code, body := s.call(t, method, fill("acme"), "evil", secrets["evil"], "", nil); code != 403 {
					t.Errorf("evil on acme's path: %d %s, want 403", code, body)
				}
			})
			t.Run(method+" "+path+" naming the other brand's domain", func(t *testing.T) {
				if !strings.Contains(path, "{domain}") {
					t.Skip("the route names no domain") // GET /{brand}/maildomains
				}
				code, body := s.call(t, method, fill("evil"), "evil", secrets["evil"], "", nil)
				if code != 404 && code != 409 {
					t.Errorf("evil naming acme's domain on its own path: %d %s, want 404 or 409", code, body)
				}
			})
		}
		_, after := s.call(t, "GET", api+"/acme/spamtrap.dk", "acme", secrets["acme"], "", nil)
		if fingerprints(t, before) != fingerprints(t, after) {
			t.Errorf("acme's keys changed:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("credentials do not cross APIs", func(t *testing.T) {
		token := readToken(t, c.dataDir)
		admin := "http://" + s.api + "/admin/v1/brands"
		for _, tc := range []struct {
			name, url, user, pass, bearer string
		}{
			{"brand secret as admin bearer", admin, "", "", secrets["acme"]},
			{"brand basic auth on admin", admin, "acme", secrets["acme"], ""},
			{"operator token as brand password", api + "/acme", "acme", token, ""},
			{"operator token as brand bearer", api + "/acme", "", "", token},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if code, body := s.call(t, "GET", tc.url, tc.user, tc.pass, tc.bearer, nil); code != 401 {
					t.Errorf("%d %s, want 401", code, body)
				}
			})
		}
	})

	t.Run("failed logins are throttled", func(t *testing.T) {
		var last int
		for i := 0; i < 30 && last != 429; i++ {
			last, _ = s.call(t, "GET", api+"/evil", "evil", "wrong-secret", "", nil)
		}
		if last != 429 {
			t.Fatalf("30 failed logins never answered 429 (last %d)", last)
		}
	})

	t.Run("signing answers", func(t *testing.T) {
		msg := []byte("From: a@spamtrap.dk\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n")
		if code, body := s.call(t, "POST", "http://"+s.sign+"/v1/sign", "", "", "", msg); code != 200 {
			t.Errorf("sign: %d %s", code, body)
		}
		if code, _ := s.call(t, "GET", "http://"+s.ops+"/metrics", "", "", "", nil); code != 200 {
			t.Errorf("metrics: %d", code)
		}
	})

	t.Run("no private key material anywhere", func(t *testing.T) {
		needles := privateNeedles(t, c.dataDir)
		for name, hay := range map[string]string{"responses": s.seen.String(), "log": s.logs.String()} {
			for what, needle := range needles {
				if strings.Contains(hay, needle) {
					t.Errorf("%s contain %s", name, what)
				}
			}
		}
	})

	t.Run("DNS is not an open resolver, transferer or amplifier", func(t *testing.T) {
		ask := func(name string, qtype uint16) *dns.Msg {
			t.Helper()
			m := new(dns.Msg)
			m.SetQuestion(name, qtype)
			m.RecursionDesired = true
			r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, s.dns)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		if r := ask("example.com.", dns.TypeA); r.Rcode != dns.RcodeRefused || r.RecursionAvailable || len(r.Answer) != 0 {
			t.Errorf("outside name: rcode %s RA %v answers %d", dns.RcodeToString[r.Rcode], r.RecursionAvailable, len(r.Answer))
		}
		q := new(dns.Msg)
		q.SetQuestion("oxcloud.zone.", dns.TypeANY)
		if r := ask("oxcloud.zone.", dns.TypeANY); r.Len() > 2*q.Len()+200 || len(r.Answer) > 1 {
			t.Errorf("ANY at the apex answered %d records in %d bytes: an amplifier", len(r.Answer), r.Len())
		}
		m := new(dns.Msg)
		m.SetAxfr("oxcloud.zone.")
		env, err := (&dns.Transfer{}).In(m, s.dns)
		got := 0
		if err == nil {
			for e := range env {
				if e.Error == nil {
					got += len(e.RR)
				}
			}
		}
		if got > 0 {
			t.Errorf("AXFR without TSIG from a stranger returned %d records", got)
		}
	})
}

func fingerprints(t *testing.T, entry []byte) string {
	t.Helper()
	var e struct {
		ActiveSelector string `json:"activeSelector"`
		Selectors      []struct {
			Selector, State, Fingerprint string
		} `json:"selectors"`
	}
	if err := json.Unmarshal(entry, &e); err != nil {
		t.Fatalf("entry: %v: %s", err, entry)
	}
	var b strings.Builder
	b.WriteString(e.ActiveSelector)
	for _, s := range e.Selectors {
		b.WriteString(" " + s.Selector + "=" + s.State + ":" + s.Fingerprint)
	}
	return b.String()
}

func readToken(t *testing.T, dataDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// privateNeedles unseals every private key in the store and returns the
// strings that would betray one: PEM armour, windows of the base64 and hex
// PKCS#8, and the RSA private exponent in hex and base64.
func privateNeedles(t *testing.T, dataDir string) map[string]string {
	t.Helper()
	ctx := context.Background()
	store, err := keystore.OpenSQLite(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	box, err := sealbox.LoadFile(sealbox.DefaultPath(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	var keys []keystore.Key
	for _, owner := range []struct {
		kind keystore.OwnerKind
		name string
	}{{keystore.OwnerDomain, "spamtrap.dk"}, {keystore.OwnerBrand, "acme"}, {keystore.OwnerBrand, "evil"}} {
		ks, err := store.Keys(ctx, owner.kind, owner.name)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, ks...)
	}
	if len(keys) < 6 {
		t.Fatalf("found %d keys, want at least 6", len(keys))
	}
	needles := map[string]string{"PEM armour": "PRIVATE KEY-----"}
	for _, k := range keys {
		priv, err := dkimkey.Open(box, k.KEKID, k.SealedPrivateKey, sealbox.AssociatedData(string(k.OwnerKind), k.Owner, k.Selector))
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		b64 := base64.StdEncoding.EncodeToString(der)
		id := k.Owner + "/" + k.Selector
		// Windows past the algorithm header, which all keys share.
		for off := 64; off+40 <= len(b64); off += len(b64) / 4 {
			needles[id+" pkcs8 base64 @"+strconv.Itoa(off)] = b64[off : off+40]
		}
		needles[id+" pkcs8 hex"] = hex.EncodeToString(der[40:80])
		if rk, ok := priv.(*rsa.PrivateKey); ok {
			d := rk.D.Bytes()
			needles[id+" d hex"] = hex.EncodeToString(d[:32])
			needles[id+" d base64"] = base64.StdEncoding.EncodeToString(d[:30])
			needles[id+" pem"] = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})[40:100])
		}
	}
	return needles
}
