package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"dkimd/internal/logtest"
	"dkimd/internal/milter/miltertest"
)

// TestOneSignerServesEveryTransport: a message signed through the HTTP
// endpoint and one through the milter are counted by one signer, whose key
// cache unsealed the brand's key once for both.
func TestOneSignerServesEveryTransport(t *testing.T) {
	c := cliEnv{t: t, dataDir: t.TempDir()}
	if _, stderr, err := c.run("brand", "create", "acme"); err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	if _, stderr, err := c.run("maildomain", "add", "acme", "spamtrap.dk"); err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	api, dnsAddr, sign, milterAddr, ops := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	logs := &logtest.Buffer{}
	serve := runServe(t, []string{"serve", "--data-dir", c.dataDir, "--api-addr", api, "--dns-addr", dnsAddr, "--resolver", "127.0.0.1:9",
		"--sign-addr", sign, "--milter-addr", milterAddr, "--ops-addr", ops, "--key-pool-size", "0"}, noEnv, logs)
	for deadline := time.Now().Add(20 * time.Second); !listening(sign) || !listening(milterAddr); time.Sleep(20 * time.Millisecond) {
		if ended, err := serve.ended(); ended || time.Now().After(deadline) {
			t.Fatalf("serve not listening (ended %v: %v); log:\n%s", ended, err, logs.String())
		}
	}
	msg := "From: Alice <alice@spamtrap.dk>\r\nTo: bob@example.net\r\nSubject: one signer\r\n\r\nHello.\r\n"
	resp, body := httpCall(t, "POST", "http://"+sign+"/v1/sign", "", "", "", []byte(msg))
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Dkim-Mode") != "fallback" {
		t.Fatalf("sign: %d %s", resp.StatusCode, body)
	}

	mc := gomilter.NewClientWithOptions("tcp", milterAddr, gomilter.ClientOptions{
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		ActionMask: miltertest.PostfixActions, ProtocolMask: miltertest.PostfixProtocol,
	})
	sess, err := mc.Session()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	for _, f := range [][2]string{{"From", "Alice <alice@spamtrap.dk>"}, {"Subject", "one signer"}} {
		if _, err := sess.HeaderField(f[0], f[1]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sess.HeaderEnd(); err != nil {
		t.Fatal(err)
	}
	mods, act, err := sess.BodyReadFrom(strings.NewReader("Hello.\r\n"))
	if err != nil || act.Code != gomilter.ActAccept || len(mods) != 1 {
		t.Fatalf("milter: %+v %+v %v, want one signature and accept", mods, act, err)
	}

	resp, page := httpCall(t, "GET", "http://"+ops+"/metrics", "", "", "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics: %d", resp.StatusCode)
	}
	for series, want := range map[string]int{
		`dkimd_sign_messages_total{mode="fallback"}`: 2,
		"dkimd_sign_key_loads_total":                 1,
	} {
		if got := metricValue(t, page, series); got != want {
			t.Errorf("%s %d, want %d", series, got, want)
		}
	}
}
