package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"dkimd/internal/httpcall"
	"dkimd/internal/keystore/keystoretest"
)

// TestConsoleSessionAcrossReplicas: a console session issued by one replica
// is accepted by another on the same Postgres with the same KEK file, as
// behind a load balancer, since its key is derived from the shared KEK.
func TestConsoleSessionAcrossReplicas(t *testing.T) {
	env := postgresEnv(keystoretest.PostgresURL(t), writeKEK(t, t.TempDir()))
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
	start := func() string {
		api := freeAddr(t)
		runServe(t, []string{"serve", "--data-dir", dataDir, "--api-addr", api, "--dns-addr", "", "--sign-addr", "",
			"--milter-addr", "", "--ops-addr", "", "--resolver", "127.0.0.1:9", "--key-pool-size", "0"}, env, io.Discard)
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if resp, err := http.Get("http://" + api + "/console/"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
					return "http://" + api
				}
			}
		}
		t.Fatal("replica never served the console")
		return ""
	}
	a, b := start(), start()

	body, _ := json.Marshal(map[string]string{"brand": "acme", "secret": secret})
	req, _ := http.NewRequest("POST", a+"/console/session", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, raw := httpcall.Do(t, req)
	var info struct{ CSRFToken string }
	if resp.StatusCode != 200 || json.Unmarshal(raw, &info) != nil || len(resp.Cookies()) != 1 {
		t.Fatalf("sign-in on A: %d %s", resp.StatusCode, raw)
	}
	cookie := resp.Cookies()[0]

	req, _ = http.NewRequest("PUT", b+"/cloudapi/v2/mail/dkim/acme/spamtrap.dk", nil)
	req.AddCookie(cookie)
	req.Header.Set("X-CSRF-Token", info.CSRFToken)
	if resp, raw := httpcall.Do(t, req); resp.StatusCode != 201 {
		t.Fatalf("PUT on B with A's session: %d %s", resp.StatusCode, raw)
	}
}
