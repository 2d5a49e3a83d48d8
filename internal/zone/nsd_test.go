package zone_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
	"dkimd/internal/provision"
	"dkimd/internal/provision/provisiontest"
	"dkimd/internal/zone"
)

// freePort finds a port free for both UDP and TCP on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	for i := 0; i < 20; i++ {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		u.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// startNSD runs a real NSD as secondary of primary, taking the zone by
// zone transfer with the TSIG key, until the test ends.
func startNSD(t *testing.T, port int, primary string) {
	t.Helper()
	nsd := needTool(t, "nsd")
	dir := t.TempDir()
	host, pport, _ := net.SplitHostPort(primary)
	conf := fmt.Sprintf(`server:
	ip-address: 127.0.0.1@%[1]d
	port: %[1]d
	username: ""
	chroot: ""
	database: ""
	zonesdir: "%[2]s"
	zonelistfile: "%[2]s/zone.list"
	xfrdfile: "%[2]s/xfrd.state"
	xfrdir: "%[2]s"
	pidfile: "%[2]s/nsd.pid"
	logfile: "%[2]s/nsd.log"
	verbosity: 2
	server-count: 1
	rrl-ratelimit: 0
remote-control:
	control-enable: no
key:
	name: "%[3]s"
	algorithm: hmac-sha256
	secret: "%[4]s"
zone:
	name: "%[5]s"
	zonefile: "%[5]s.zone"
	request-xfr: %[6]s@%[7]s %[3]s
	allow-notify: %[6]s %[3]s
`, port, dir, strings.TrimSuffix(testKey.Name, "."), testKey.Secret, testZone, host, pport)
	path := filepath.Join(dir, "nsd.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nsd, "-d", "-c", path)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "nsd.log"))
			t.Logf("nsd.log:\n%s", log)
		}
	})
}

// waitAnswer polls addr until ok accepts its answer, failing after timeout.
func waitAnswer(t *testing.T, addr, name string, qtype uint16, ok func(*dns.Msg) bool, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c := &dns.Client{Timeout: 500 * time.Millisecond}
	var last *dns.Msg
	for time.Since(start) < timeout {
		r, _, err := c.Exchange(query(name, qtype), addr)
		if err == nil {
			last = r
			if ok(r) {
				return time.Since(start)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s %s at %s: no expected answer within %v; last %v", name, dns.TypeToString[qtype], addr, timeout, last)
	return 0
}

// A real NSD, secondary of dkimd by AXFR/IXFR with TSIG, notified of each
// change, serves the new TXT record.
func TestNSDSecondary(t *testing.T) {
	needTool(t, "nsd")
	needTool(t, "dig")
	ctx := context.Background()
	store := keystoretest.Open(t, keystore.SQLite)
	svc := provisiontest.Service(t, store, testZone, nil)
	actor := provision.Actor{Name: "test"}
	if _, err := svc.CreateBrand(ctx, "acme", actor); err != nil {
		t.Fatal(err)
	}
	if err := svc.AddMaildomain(ctx, "acme", "example.com", actor); err != nil {
		t.Fatal(err)
	}
	nsdPort := freePort(t)
	nsdAddr := fmt.Sprintf("127.0.0.1:%d", nsdPort)
	reg := prometheus.NewRegistry()
	srv := startServer(t, store, zone.Options{
		Registry: reg, TSIG: &testKey, XFRAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Secondaries: []string{nsdAddr},
	})
	store.Watch(context.Background(), srv.Kick)
	startNSD(t, nsdPort, srv.Addr())

	serial := srv.Snapshot().Serial()
	took := waitAnswer(t, nsdAddr, testZone+".", dns.TypeSOA, func(r *dns.Msg) bool {
		return len(r.Answer) == 1 && r.Answer[0].(*dns.SOA).Serial == serial
	}, 15*time.Second)
	t.Logf("NSD has serial %d after %v", serial, took)

	if _, _, _, err := svc.CreateDomain(ctx, "acme", "example.com", provision.DomainOptions{}, actor); err != nil {
		t.Fatal(err)
	}
	keys, err := store.Keys(ctx, keystore.OwnerDomain, "example.com")
	if err != nil {
		t.Fatal(err)
	}
	want := dkimkey.TXTValue(keys[0].Algorithm, keys[0].PublicKey)
	name := "selector1-example-com._domainkey." + testZone + "."
	took = waitAnswer(t, nsdAddr, name, dns.TypeTXT, func(r *dns.Msg) bool {
		return r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1 && joined(r.Answer[0]) == want
	}, 10*time.Second)
	t.Logf("NSD serves the new TXT %v after the commit", took)

	// And dig agrees.
	host, port, _ := net.SplitHostPort(nsdAddr)
	out, err := exec.Command("dig", "@"+host, "-p", port, "+short", "+norec", "TXT", name).CombinedOutput()
	if err != nil {
		t.Fatalf("dig: %v\n%s", err, out)
	}
	if got := strings.ReplaceAll(strings.ReplaceAll(strings.TrimSpace(string(out)), `" "`, ""), `"`, ""); got != want {
		t.Errorf("dig @nsd = %q, want %q", got, want)
	}

	// NSD was current, so it took the change as an incremental transfer.
	if n := testutil.ToFloat64(xfrCounter(t, reg, "ixfr")); n < 1 {
		t.Errorf("no IXFR served (dkimd_dns_transfers_total{result=\"ixfr\"} = %v)", n)
	}
	if err := svc.DeleteDomain(ctx, "acme", "example.com", actor); err != nil {
		t.Fatal(err)
	}
	took = waitAnswer(t, nsdAddr, name, dns.TypeTXT, func(r *dns.Msg) bool { return r.Rcode == dns.RcodeNameError }, 10*time.Second)
	t.Logf("NSD answers NXDOMAIN %v after the delete", took)
	if n := testutil.ToFloat64(xfrCounter(t, reg, "ixfr")); n < 2 {
		t.Errorf("the delete was not an IXFR either (%v)", n)
	}
	// The brand's records survived both increments.
	brand := "selector1._domainkey.acme." + testZone + "."
	waitAnswer(t, nsdAddr, brand, dns.TypeTXT, func(r *dns.Msg) bool { return r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1 }, time.Second)
}

func xfrCounter(t *testing.T, reg *prometheus.Registry, result string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	for _, mf := range mfs {
		if mf.GetName() != "dkimd_dns_transfers_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == result {
				c.Add(m.GetCounter().GetValue())
			}
		}
	}
	return c
}
