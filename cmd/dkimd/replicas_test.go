package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"dkimd/internal/keystore/keystoretest"
)

// TestTwoReplicasOnPostgres is issue 3's proof of live updates across
// replicas: two `dkimd serve` on one Postgres database; a PUT through one's
// API is answered by the other's DNS, asked with dig, within a second, and
// so is the DELETE.
func TestTwoReplicasOnPostgres(t *testing.T) {
	dig, err := exec.LookPath("dig")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("dig is missing and CI=true: install bind9-dnsutils")
		}
		t.Skip("dig not installed (bind9-dnsutils)")
	}
	url := keystoretest.PostgresURL(t)
	// Both replicas and the CLI share the KEK, as a deployment's do.
	env := postgresEnv(url, writeKEK(t, t.TempDir()))
	dataDir := t.TempDir()
	if err := run(context.Background(), []string{"migrate"}, env, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) string {
		t.Helper()
		var out, errOut strings.Builder
		if err := run(context.Background(), append(args, "--data-dir", dataDir), env, &out, &errOut); err != nil {
			t.Fatalf("%v: %v: %s", args, err, errOut.String())
		}
		return strings.TrimSpace(out.String())
	}
	secret := cli("brand", "create", "acme")
	cli("maildomain", "add", "acme", "spamtrap.dk")

	type replica struct{ api, dns string }
	start := func() replica {
		r := replica{api: freeAddr(t), dns: freeAddr(t)}
		args := []string{"serve", "--data-dir", dataDir, "--api-addr", r.api, "--dns-addr", r.dns,
			"--sign-addr", "", "--milter-addr", "", "--ops-addr", "", "--resolver", "127.0.0.1:9", "--key-pool-size", "0",
			// A reconcile this slow cannot be what delivers the change.
			"--reconcile-interval", "1h"}
		runServe(t, args, env, io.Discard)
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if resp, err := http.Get("http://" + r.api + "/openapi.json"); err == nil {
				resp.Body.Close()
				return r
			}
		}
		t.Fatal("replica never served its API")
		return r
	}
	a, b := start(), start()

	digTXT := func(r replica) string {
		host, port, _ := strings.Cut(r.dns, ":")
		out, err := exec.Command(dig, "+short", "+norec", "+time=1", "+tries=1", "-p", port, "@"+host,
			"TXT", "selector1-spamtrap-dk._domainkey.oxcloud.zone").Output()
		if err != nil {
			t.Fatalf("dig: %v", err)
		}
		return strings.ReplaceAll(strings.ReplaceAll(strings.TrimSpace(string(out)), `" "`, ""), `"`, "")
	}
	call := func(method string) (int, string) {
		resp, body := httpCall(t, method, "http://"+a.api+"/cloudapi/v2/mail/dkim/acme/spamtrap.dk", "acme", secret, "", nil)
		return resp.StatusCode, string(body)
	}
	waitFor := func(what string, ok func(string) bool) time.Duration {
		t.Helper()
		began := time.Now()
		for {
			got := digTXT(b)
			if ok(got) {
				return time.Since(began)
			}
			if time.Since(began) > time.Second {
				t.Fatalf("replica B's DNS after 1 s: %q; want %s", got, what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	if got := digTXT(b); got != "" {
		t.Fatalf("TXT before the PUT: %q", got)
	}
	code, body := call(http.MethodPut)
	if code != 201 {
		t.Fatalf("PUT through replica A: %d %s", code, body)
	}
	took := waitFor("the new key", func(s string) bool { return strings.HasPrefix(s, "v=DKIM1; k=rsa; p=MII") })
	t.Logf("PUT through A answered by B's DNS after %s", took)
	if txt := digTXT(b); !strings.Contains(body, `"txtValue":"`+txt+`"`) {
		t.Fatalf("B's TXT %q is not the txtValue A's API returned", txt)
	}
	if code, body := call(http.MethodDelete); code != 204 {
		t.Fatalf("DELETE through replica A: %d %s", code, body)
	}
	took = waitFor("no record", func(s string) bool { return s == "" })
	t.Logf("DELETE through A answered by B's DNS after %s", took)
}
