// Command edges runs a bounded hostile mix against one `dkimd serve` while a
// well-behaved client signs, queries DNS and calls the API, and reports
// that client's errors (there must be none), its latencies and dkimd's peak
// RSS (make load-edges, docs/reliability.md "Hostile input: load-edges").
//
// Every packet goes to loopback. The hostile side speaks from 127.0.1.x
// (one /24, as one attacker's network), the good client from 127.0.0.1.
// Every loop ends with the run's deadline and every kind of hostile
// connection is capped in number, so the run stops by itself.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/miekg/dns"

	"dkimd/internal/keystore"
	"dkimd/internal/milter/miltertest"
	"dkimd/internal/provision"
	"dkimd/internal/sealbox"
)

const (
	zoneName = "oxcloud.zone"
	brand    = "good"
	domain   = "good.example"
)

var (
	bin        = flag.String("dkimd", "bin/dkimd", "the dkimd binary to run")
	duration   = flag.Duration("duration", time.Minute, "how long the hostile mix runs")
	milterCap  = flag.Int("milter-max-conns", 200, "dkimd's --milter-max-conns; idle milter sessions are opened up to it and beyond")
	dnsTCPCap  = flag.Int("dns-tcp-max", 200, "dkimd's --dns-tcp-max; idle DNS TCP connections are opened up to it and beyond")
	headroom   = flag.Int("headroom", 10, "idle connections stay this many under each cap, for the good client; negative goes past the cap")
	floodQPS   = flag.Int("dns-flood-qps", 2000, "queries per second of the whole DNS flood")
	slowConns  = flag.Int("slow-writers", 20, "slow writers per TCP port")
	loginFlood = flag.Int("login-workers", 4, "concurrent bad-login workers")
	dnsFlood   = flag.Int("dns-flood-workers", 4, "concurrent DNS flood workers (UDP)")
	garbageW   = flag.Int("garbage-workers", 2, "concurrent garbage senders (every port in turn)")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	raiseNofile()
	dir, err := os.MkdirTemp("", "dkimd-load-edges-")
	must(err)
	defer os.RemoveAll(dir)
	secret := setup(dir)

	d := start(dir)
	defer d.stop()
	if err := d.waitReady(); err != nil {
		d.stop()
		log.Fatalf("dkimd did not get ready: %v\n%s", err, d.stderr.String())
	}
	rssStart := procStatus(d.cmd.Process.Pid, "VmRSS")

	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	h := &hostile{d: d}
	g := &good{d: d, secret: secret, stats: map[string]*opStats{}}
	var wg sync.WaitGroup
	h.run(ctx, &wg)
	g.run(ctx, &wg)
	wg.Wait()

	hwm := procStatus(d.cmd.Process.Pid, "VmHWM")
	rssEnd := procStatus(d.cmd.Process.Pid, "VmRSS")
	alive := d.cmd.ProcessState == nil && d.cmd.Process.Signal(syscall.Signal(0)) == nil
	fmt.Printf("load-edges: %s of hostile input against one dkimd serve (milter cap %d, DNS TCP cap %d, idle sessions %d under each cap, DNS flood %d/s)\n\n",
		*duration, *milterCap, *dnsTCPCap, *headroom, *floodQPS)
	h.report()
	fmt.Println()
	errs := g.report()
	fmt.Printf("\ndkimd RSS: %s at start, %s at end, peak (VmHWM) %s; process alive after the run: %v\n", rssStart, rssEnd, hwm, alive)
	fmt.Printf("dkimd metrics: %s\n", d.metrics("dkimd_accept_errors_total", "dkimd_milter_sessions_refused_total", "dkimd_milter_protocol_errors_total",
		"dkimd_dns_rrl", "dkimd_dns_tcp", "dkimd_api_requests_total{code=\"429\""))
	fmt.Printf("well-behaved client errors: %d\n", errs)
	if errs > 0 || !alive {
		os.Exit(1)
	}
}

// setup makes the store: one brand with one active domain, so that both
// signing paths sign with the domain's key and DNS answers its selectors.
func setup(dir string) (secret string) {
	ctx := context.Background()
	store, err := keystore.OpenSQLite(dir)
	must(err)
	defer store.Close()
	_, err = store.Migrate(ctx)
	must(err)
	box, _, _, err := sealbox.LoadOrCreate(dir)
	must(err)
	svc := &provision.Service{Store: store, Box: box, Keys: provision.DirectGenerator{}, Zone: zoneName, Now: time.Now}
	actor := provision.Actor{Name: "load-edges"}
	secret, err = svc.CreateBrand(ctx, brand, actor)
	must(err)
	must(svc.AddMaildomain(ctx, brand, domain, actor))
	_, _, _, err = svc.CreateDomain(ctx, brand, domain, provision.DomainOptions{}, actor)
	must(err)
	must(store.Update(ctx, func(tx keystore.Tx) error {
		dom, err := tx.Domain(ctx, domain)
		if err != nil {
			return err
		}
		// Active and not due for a customer-DNS check during the run:
		// there is no customer DNS here.
		dom.Status = keystore.StatusActive
		dom.NextCheckAt = time.Now().Add(365 * 24 * time.Hour)
		_, err = tx.UpdateDomain(ctx, dom)
		return err
	}))
	return secret
}

type dkimd struct {
	cmd                             *exec.Cmd
	api, dns, sign, milterAddr, ops string
	stderr                          *bytes.Buffer
	stopOnce                        sync.Once
}

func freePort() string {
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		must(err)
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
}

func start(dir string) *dkimd {
	d := &dkimd{api: freePort(), dns: freePort(), sign: freePort(), milterAddr: freePort(), ops: freePort(), stderr: &bytes.Buffer{}}
	d.cmd = exec.Command(*bin, "serve", "--data-dir", dir, "--zone", zoneName,
		"--api-addr", d.api, "--dns-addr", d.dns, "--sign-addr", d.sign, "--milter-addr", d.milterAddr, "--ops-addr", d.ops,
		"--resolver", "127.0.0.1:9", // nothing answers there: no check leaves the host
		"--key-pool-size", "0", "--log-level", "error",
		"--milter-max-conns", strconv.Itoa(*milterCap), "--dns-tcp-max", strconv.Itoa(*dnsTCPCap))
	d.cmd.Stderr = d.stderr
	must(d.cmd.Start())
	return d
}

func (d *dkimd) stop() {
	d.stopOnce.Do(func() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = d.cmd.Process.Kill()
			<-done
		}
	})
}

func (d *dkimd) waitReady() error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + d.ops + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("/readyz not 200 within 60 s")
}

// metrics returns the /metrics lines that start with one of prefixes.
func (d *dkimd) metrics(prefixes ...string) string {
	resp, err := http.Get("http://" + d.ops + "/metrics")
	if err != nil {
		return "unavailable: " + err.Error()
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "#") {
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
				break
			}
		}
	}
	return "\n  " + strings.Join(out, "\n  ")
}

// procStatus reads one field of /proc/PID/status ("VmHWM" is the peak RSS).
func procStatus(pid int, field string) string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// raiseNofile lifts this process's soft descriptor limit to the hard one:
// the idle sessions take a few hundred.
func raiseNofile() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// ---- the hostile side ----

type hostile struct {
	d        *dkimd
	counters sync.Map // name -> *atomic.Int64
	srcNext  atomic.Uint32
}

func (h *hostile) count(name string) {
	v, _ := h.counters.LoadOrStore(name, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// src is the next hostile source address, 127.0.1.2 to 127.0.1.254.
func (h *hostile) src() net.IP {
	return net.IPv4(127, 0, 1, byte(2+h.srcNext.Add(1)%253))
}

func (h *hostile) dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: h.src()}, Timeout: 2 * time.Second}
	return d.DialContext(ctx, "tcp", addr)
}

func (h *hostile) run(ctx context.Context, wg *sync.WaitGroup) {
	spawn := func(n int, f func(context.Context)) {
		for range n {
			wg.Add(1)
			go func() { defer wg.Done(); f(ctx) }()
		}
	}
	spawn(*garbageW, h.garbage)
	// Idle sessions fill each cap but for the headroom, counting the slow
	// writers' and the garbage senders' connections that hold slots too.
	spawn(*milterCap-*headroom-*slowConns-*garbageW, func(ctx context.Context) { h.idle(ctx, "idle milter", h.d.milterAddr) })
	spawn(*dnsTCPCap-*headroom-*garbageW, func(ctx context.Context) { h.idle(ctx, "idle DNS TCP", h.d.dns) })
	for _, p := range []struct{ name, addr string }{{"api", h.d.api}, {"sign", h.d.sign}, {"milter", h.d.milterAddr}, {"ops", h.d.ops}} {
		spawn(*slowConns, func(ctx context.Context) { h.slow(ctx, "slow writer "+p.name, p.addr) })
	}
	spawn(*loginFlood, h.badLogins)
	spawn(*dnsFlood, h.dnsFlood)
}

// garbage sends random bytes, and a few crafted bad packets, to every TCP
// port in turn and random datagrams to DNS over UDP.
func (h *hostile) garbage(ctx context.Context) {
	ports := []string{h.d.api, h.d.sign, h.d.milterAddr, h.d.ops, h.d.dns}
	crafted := [][]byte{
		{0, 0, 0, 0},                          // a zero-length milter packet
		{0xff, 0xff, 0xff, 0xff, 'B'},         // a 4 GiB length prefix
		{0, 0, 0, 5, 'M', 'a', 'b', 'c', 'd'}, // MAIL without its NUL
		[]byte("GET / HTTP/1.1\r\nHost: " + strings.Repeat("x", 64<<10) + "\r\n\r\n"),
	}
	buf := make([]byte, 4096)
	for i := 0; ctx.Err() == nil; i++ {
		addr := ports[i%len(ports)]
		c, err := h.dial(ctx, addr)
		if err != nil {
			h.count("garbage: connect refused or failed")
			sleep(ctx, 10*time.Millisecond)
			continue
		}
		var payload []byte
		if i%3 == 0 {
			payload = crafted[(i/3)%len(crafted)]
		} else {
			payload = make([]byte, 1+i%4096)
			_, _ = rand.Read(payload)
		}
		_ = c.SetDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(payload)
		_, _ = c.Read(buf)
		c.Close()
		h.count("garbage TCP")
		if u, err := net.DialUDP("udp", &net.UDPAddr{IP: h.src()}, udpAddr(h.d.dns)); err == nil {
			_, _ = rand.Read(buf[:512])
			_, _ = u.Write(buf[:1+i%512])
			u.Close()
			h.count("garbage UDP")
		}
		sleep(ctx, 2*time.Millisecond)
	}
}

// idle opens a connection and keeps it open without a word until the run
// ends or dkimd closes it (a cap, an idle timeout), then opens another.
func (h *hostile) idle(ctx context.Context, name, addr string) {
	for ctx.Err() == nil {
		c, err := h.dial(ctx, addr)
		if err != nil {
			h.count(name + ": connect failed")
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		h.count(name + ": opened")
		closed := make(chan struct{})
		go func() {
			_, _ = c.Read(make([]byte, 1))
			close(closed)
		}()
		select {
		case <-ctx.Done():
		case <-closed:
			h.count(name + ": closed by dkimd")
			sleep(ctx, 200*time.Millisecond)
		}
		c.Close()
		<-closed
	}
}

// slow writes a valid-looking start one byte a second: an HTTP request
// line and headers, or a milter option negotiation.
func (h *hostile) slow(ctx context.Context, name, addr string) {
	start := []byte("POST /v1/sign HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nX-Slow: " + strings.Repeat("a", 200))
	if strings.Contains(name, "milter") {
		start = make([]byte, 4+13)
		binary.BigEndian.PutUint32(start, 13)
		start[4] = 'O'
		binary.BigEndian.PutUint32(start[5:], 6)
	}
	for ctx.Err() == nil {
		c, err := h.dial(ctx, addr)
		if err != nil {
			h.count(name + ": connect failed")
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		h.count(name + ": opened")
		for i := 0; ctx.Err() == nil; i++ {
			_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Write(start[i%len(start) : i%len(start)+1]); err != nil {
				h.count(name + ": cut off by dkimd")
				break
			}
			sleep(ctx, time.Second)
		}
		c.Close()
	}
}

// badLogins sends wrong secrets for the good brand and for made-up brands
// from the hostile /24, as fast as dkimd answers.
func (h *hostile) badLogins(ctx context.Context) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return h.dial(ctx, addr) },
	}}
	defer client.CloseIdleConnections()
	for i := 0; ctx.Err() == nil; i++ {
		b := brand
		if i%2 == 1 {
			b = "brand" + strconv.Itoa(i%500)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.d.api+"/cloudapi/v2/mail/dkim/"+b, nil)
		req.SetBasicAuth(b, "guess-"+strconv.Itoa(i))
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				h.count("bad login: transport error")
			}
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		h.count("bad login: " + strconv.Itoa(resp.StatusCode))
	}
}

// dnsFlood asks for the largest answer (the RSA key TXT) over UDP from the
// hostile /24 at the flood's rate, without waiting for answers.
func (h *hostile) dnsFlood(ctx context.Context) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn("selector1-"+strings.ReplaceAll(domain, ".", "-")+"._domainkey."+zoneName), dns.TypeTXT)
	m.SetEdns0(4096, false)
	q, err := m.Pack()
	must(err)
	// Bursts of 10 queries, paced to this worker's part of the rate.
	const burst = 10
	pause := time.Duration(float64(time.Second) * burst * float64(*dnsFlood) / float64(max(1, *floodQPS)))
	for ctx.Err() == nil {
		t0 := time.Now()
		u, err := net.DialUDP("udp", &net.UDPAddr{IP: h.src()}, udpAddr(h.d.dns))
		if err != nil {
			sleep(ctx, 10*time.Millisecond)
			continue
		}
		for i := 0; i < burst && ctx.Err() == nil; i++ {
			binary.BigEndian.PutUint16(q, uint16(i))
			if _, err := u.Write(q); err == nil {
				h.count("DNS flood: queries sent")
			}
		}
		// Count what came back, without blocking for long.
		buf := make([]byte, 4096)
		_ = u.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		for {
			n, err := u.Read(buf)
			if err != nil {
				break
			}
			if n > 2 && buf[2]&0x02 != 0 {
				h.count("DNS flood: answers truncated (slip)")
			} else {
				h.count("DNS flood: answers received")
			}
		}
		u.Close()
		sleep(ctx, pause-time.Since(t0))
	}
}

func (h *hostile) report() {
	var names []string
	h.counters.Range(func(k, _ any) bool { names = append(names, k.(string)); return true })
	sort.Strings(names)
	fmt.Println("hostile side (from 127.0.1.x):")
	for _, n := range names {
		v, _ := h.counters.Load(n)
		fmt.Printf("  %-45s %10d\n", n, v.(*atomic.Int64).Load())
	}
}

func udpAddr(addr string) *net.UDPAddr {
	a, err := net.ResolveUDPAddr("udp", addr)
	must(err)
	return a
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// ---- the well-behaved client ----

type good struct {
	d       *dkimd
	secret  string
	retries atomic.Int64 // UDP queries asked a second time
	mu      sync.Mutex
	stats   map[string]*opStats
}

type opStats struct {
	n, errs int
	lat     []time.Duration
	first   string // the first error, to say what went wrong
}

func (g *good) record(op string, d time.Duration, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.stats[op]
	if s == nil {
		s = &opStats{}
		g.stats[op] = s
	}
	s.n++
	s.lat = append(s.lat, d)
	if err != nil {
		s.errs++
		if s.first == "" {
			s.first = err.Error()
		}
	}
}

func (g *good) run(ctx context.Context, wg *sync.WaitGroup) {
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: (&net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}).DialContext, MaxIdleConnsPerHost: 4,
	}}
	loop := func(op string, every time.Duration, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				t := time.Now()
				err := f()
				if ctx.Err() != nil && err != nil {
					return // cut off by the end of the run
				}
				g.record(op, time.Since(t), err)
				sleep(ctx, every)
			}
		}()
	}
	msg := "From: Good <user@" + domain + ">\r\nTo: someone@example.org\r\nSubject: load-edges\r\n" +
		"Date: " + time.Now().Format(time.RFC1123Z) + "\r\nMessage-ID: <1@load-edges>\r\n\r\n" + strings.Repeat("Hello.\r\n", 200)
	loop("POST /v1/sign", 20*time.Millisecond, func() error {
		resp, err := client.Post("http://"+g.d.sign+"/v1/sign", "message/rfc822", strings.NewReader(msg))
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(b, []byte("DKIM-Signature")) {
			return fmt.Errorf("sign: %d %.200s", resp.StatusCode, b)
		}
		return nil
	})
	ms := newMilterSigner(g.d.milterAddr, msg)
	defer func() { go func() { wg.Wait(); ms.close() }() }()
	loop("milter message", 20*time.Millisecond, ms.sign)
	// UDP as a stub resolver asks: 1 s, then once more. A query the kernel
	// dropped from a socket buffer the flood filled is retried, counted in
	// "DNS UDP retries"; only a query lost twice is an error.
	dnsc := &dns.Client{Timeout: time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: local.IP}}}
	dnsTCP := &dns.Client{Net: "tcp", Timeout: 2 * time.Second, Dialer: &net.Dialer{LocalAddr: local}}
	name := dns.Fqdn("selector1-" + strings.ReplaceAll(domain, ".", "-") + "._domainkey." + zoneName)
	for _, c := range []struct {
		op string
		c  *dns.Client
	}{{"DNS TXT over UDP", dnsc}, {"DNS TXT over TCP", dnsTCP}} {
		loop(c.op, 10*time.Millisecond, func() error {
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeTXT)
			m.SetEdns0(1232, false)
			r, _, err := c.c.Exchange(m, g.d.dns)
			if err != nil && c.c.Net == "" {
				g.retries.Add(1)
				r, _, err = c.c.Exchange(m, g.d.dns)
			}
			switch {
			case err != nil:
				return err
			case r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0:
				return fmt.Errorf("dns: %s, %d answers, tc=%v", dns.RcodeToString[r.Rcode], len(r.Answer), r.Truncated)
			}
			return nil
		})
	}
	loop("GET domain (API)", 20*time.Millisecond, func() error {
		req, _ := http.NewRequest(http.MethodGet, "http://"+g.d.api+"/cloudapi/v2/mail/dkim/"+brand+"/"+domain, nil)
		req.SetBasicAuth(brand, g.secret)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("api: %d", resp.StatusCode)
		}
		return nil
	})
}

func (g *good) report() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	var ops []string
	for op := range g.stats {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	fmt.Println("well-behaved client (from 127.0.0.1):")
	fmt.Printf("  %-22s %8s %7s %9s %9s %9s\n", "operation", "count", "errors", "p50 ms", "p99 ms", "max ms")
	total := 0
	for _, op := range ops {
		s := g.stats[op]
		sort.Slice(s.lat, func(i, j int) bool { return s.lat[i] < s.lat[j] })
		fmt.Printf("  %-22s %8d %7d %9.2f %9.2f %9.2f\n", op, s.n, s.errs, msf(pct(s.lat, 0.5)), msf(pct(s.lat, 0.99)), msf(pct(s.lat, 1)))
		if s.first != "" {
			fmt.Printf("    first error: %s\n", s.first)
		}
		total += s.errs
	}
	fmt.Printf("  DNS UDP retries (first try lost): %d\n", g.retries.Load())
	return total
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p)]
}

func msf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// milterSigner drives one message per call through one milter session, as
// Postfix does, and checks that a DKIM-Signature was inserted.
type milterSigner struct {
	client *gomilter.Client
	sess   *gomilter.ClientSession
	fields [][2]string
	body   []byte
}

func newMilterSigner(addr, msg string) *milterSigner {
	head, body, _ := strings.Cut(msg, "\r\n\r\n")
	var fields [][2]string
	for _, l := range strings.Split(head, "\r\n") {
		k, v, _ := strings.Cut(l, ":")
		fields = append(fields, [2]string{k, v})
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, Timeout: 5 * time.Second}
	return &milterSigner{
		client: gomilter.NewClientWithOptions("tcp", addr, gomilter.ClientOptions{
			Dialer: d, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
			ActionMask: miltertest.PostfixActions, ProtocolMask: miltertest.PostfixProtocol,
		}),
		fields: fields, body: []byte(body),
	}
}

func (m *milterSigner) close() {
	if m.sess != nil {
		m.sess.Close()
		m.sess = nil
	}
}

func (m *milterSigner) sign() error {
	err := m.message()
	if err != nil {
		m.close()
	}
	return err
}

func (m *milterSigner) message() error {
	if m.sess == nil {
		s, err := m.client.Session()
		if err != nil {
			return err
		}
		m.sess = s
		if _, err := s.Conn("localhost", gomilter.FamilyInet, 40000, "127.0.0.1"); err != nil {
			return err
		}
		if _, err := s.Helo("localhost"); err != nil {
			return err
		}
	}
	s := m.sess
	if _, err := s.Mail("user@"+domain, nil); err != nil {
		return err
	}
	if _, err := s.Rcpt("someone@example.org", nil); err != nil {
		return err
	}
	lead := s.ProtocolOption(gomilter.OptHeaderLeadingSpace)
	for _, f := range m.fields {
		v := f[1]
		if !lead {
			v = strings.TrimPrefix(v, " ")
		}
		if _, err := s.HeaderField(f[0], v); err != nil {
			return err
		}
	}
	if _, err := s.HeaderEnd(); err != nil {
		return err
	}
	mods, act, err := s.BodyReadFrom(bytes.NewReader(m.body))
	if err != nil {
		return err
	}
	if act.Code != gomilter.ActAccept && act.Code != gomilter.ActContinue {
		return fmt.Errorf("milter action %c", act.Code)
	}
	for _, mod := range mods {
		if strings.EqualFold(mod.HeaderName, "DKIM-Signature") {
			return nil
		}
	}
	return fmt.Errorf("milter: no DKIM-Signature inserted")
}
