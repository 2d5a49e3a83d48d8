package main

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestCLIChangesReachARunningServesDNS: on the embedded store, a brand the
// CLI creates beside a running serve is in serve's DNS within a second or
// so, not after the reconcile interval (an hour here), and so is its
// deletion (docs/operator-guide.md, "Brands and maildomains").
func TestCLIChangesReachARunningServesDNS(t *testing.T) {
	c := cliEnv{t: t, dataDir: t.TempDir()}
	prepareDataDir(t, c.dataDir)
	dnsAddr := freeAddr(t)
	api := freeAddr(t)
	serve := runServe(t, []string{"serve", "--data-dir", c.dataDir, "--api-addr", api, "--dns-addr", dnsAddr,
		"--sign-addr", "", "--milter-addr", "", "--ops-addr", "", "--resolver", "127.0.0.1:9", "--key-pool-size", "0",
		"--reconcile-interval", "1h"}, noEnv, &bytes.Buffer{})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ended, err := serve.ended(); ended {
			t.Fatalf("serve ended: %v", err)
		}
		if conn, err := net.Dial("tcp", api); err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("serve never listened")
		}
	}
	const name = "selector1._domainkey.acme.oxcloud.zone."
	answers := func() int {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeTXT)
		r, err := dns.Exchange(m, dnsAddr)
		if err != nil {
			return -1
		}
		return len(r.Answer)
	}
	waitFor := func(what string, want func(int) bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if want(answers()) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: DNS still answers %d records for %s", what, answers(), name)
			}
		}
	}
	if n := answers(); n != 0 {
		t.Fatalf("before brand create: %d answers", n)
	}
	if _, stderr, err := c.run("brand", "create", "acme"); err != nil {
		t.Fatal(stderr)
	}
	waitFor("after brand create", func(n int) bool { return n > 0 })
	if _, stderr, err := c.run("brand", "delete", "acme"); err != nil {
		t.Fatal(stderr)
	}
	waitFor("after brand delete", func(n int) bool { return n == 0 })
}
