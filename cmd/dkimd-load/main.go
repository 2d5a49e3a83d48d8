// Command dkimd-load drives a running dkimd with a bounded mix of brand API
// calls (GET-heavy, some PUT and DELETE), DNS queries and sign requests, then
// checks that no acknowledged write was lost: every domain whose last
// acknowledged call was a PUT is readable and in DNS, every one whose last
// acknowledged call was a DELETE is gone from both. It prints throughput and
// latency percentiles per operation and exits non-zero on any 5xx (unless
// allowed), transport error or lost write.
//
// It only talks to the addresses it is given; scripts/load.sh points it at
// loopback.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"dkimd/internal/domainname"

	"github.com/miekg/dns"
)

type options struct {
	api, dnsAddr, sign, signToken string
	brand, secret, zone           string
	domainPrefix                  string
	domains, workers              int
	duration                      time.Duration
	allow503                      bool
}

func main() {
	var o options
	flag.StringVar(&o.api, "api", "http://127.0.0.1:8080", "brand API base URL")
	flag.StringVar(&o.dnsAddr, "dns", "127.0.0.1:5353", "dkimd DNS address")
	flag.StringVar(&o.sign, "sign", "http://127.0.0.1:8081", "sign endpoint base URL; empty skips signing")
	flag.StringVar(&o.signToken, "sign-token", "", "bearer token of the sign endpoint")
	flag.StringVar(&o.brand, "brand", "loadtest", "brand")
	flag.StringVar(&o.secret, "secret", os.Getenv("DKIMD_LOAD_SECRET"), "brand secret (env DKIMD_LOAD_SECRET)")
	flag.StringVar(&o.zone, "zone", "oxcloud.zone", "dkimd's zone")
	flag.StringVar(&o.domainPrefix, "domain-prefix", "load-", "domains are PREFIXn.example, n from 0; they must be maildomains of the brand")
	flag.IntVar(&o.domains, "domains", 200, "how many domains the load works on")
	flag.IntVar(&o.workers, "workers", 8, "concurrent workers")
	flag.DurationVar(&o.duration, "duration", time.Minute, "how long to run (bounded)")
	flag.BoolVar(&o.allow503, "allow-503", false, "count 503 answers (database away) as expected instead of failing")
	flag.Parse()
	if o.duration > 30*time.Minute {
		fmt.Fprintln(os.Stderr, "dkimd-load: --duration is capped at 30m")
		os.Exit(2)
	}
	ok, err := run(context.Background(), o, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dkimd-load:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

// domainState is what the last acknowledged write says a domain is.
type domainState int

const (
	stateUnknown domainState = iota // never written, or last write not acknowledged
	statePresent
	stateAbsent
)

type load struct {
	o      options
	client *http.Client
	dnsc   *dns.Client

	locks []sync.Mutex // one per domain: writes to a domain are serialised so "last acknowledged" is defined
	mu    sync.Mutex
	state []domainState
	stats map[string]*opStats
}

type opStats struct {
	latencies []time.Duration
	byStatus  map[string]int
}

func (l *load) record(op, status string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats[op]
	if s == nil {
		s = &opStats{byStatus: map[string]int{}}
		l.stats[op] = s
	}
	s.latencies = append(s.latencies, d)
	s.byStatus[status]++
}

func (l *load) domain(i int) string { return fmt.Sprintf("%s%d.example", l.o.domainPrefix, i) }

func run(ctx context.Context, o options, out io.Writer) (bool, error) {
	if o.secret == "" {
		return false, fmt.Errorf("--secret is required")
	}
	l := &load{
		o:      o,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: o.workers * 2}},
		dnsc:   &dns.Client{Timeout: 2 * time.Second},
		locks:  make([]sync.Mutex, o.domains),
		state:  make([]domainState, o.domains),
		stats:  map[string]*opStats{},
	}
	ctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < o.workers; w++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, seed*7919))
			for ctx.Err() == nil {
				l.step(ctx, rng)
			}
		}(uint64(w + 1))
	}
	wg.Wait()
	elapsed := time.Since(start)
	ok := l.report(out, elapsed)
	lost := l.verify(context.Background(), out)
	return ok && lost == 0, nil
}

func (l *load) step(ctx context.Context, rng *rand.Rand) {
	i := rng.IntN(l.o.domains)
	switch p := rng.IntN(100); {
	case p < 55:
		l.http(ctx, "GET domain", http.MethodGet, "/"+l.o.brand+"/"+l.domain(i), nil)
	case p < 65:
		l.http(ctx, "GET list", http.MethodGet, "/"+l.o.brand+"?limit=50", nil)
	case p < 73:
		l.write(ctx, i, http.MethodPut)
	case p < 78:
		l.write(ctx, i, http.MethodDelete)
	case p < 93:
		l.query(i)
	default:
		l.signOne(ctx, i)
	}
}

func (l *load) write(ctx context.Context, i int, method string) {
	l.locks[i].Lock()
	defer l.locks[i].Unlock()
	code := l.http(ctx, method+" domain", method, "/"+l.o.brand+"/"+l.domain(i), nil)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case method == http.MethodPut && (code == 200 || code == 201):
		l.state[i] = statePresent
	case method == http.MethodDelete && (code == 204 || code == 404):
		l.state[i] = stateAbsent
	case code == 0 && ctx.Err() != nil:
		// Cut off by the end of the run: the outcome is unknown.
		l.state[i] = stateUnknown
	default:
		l.state[i] = stateUnknown
	}
}

func (l *load) http(ctx context.Context, op, method, path string, body []byte) int {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(l.o.api, "/")+"/cloudapi/v2/mail/dkim"+path, bytes.NewReader(body))
	if err != nil {
		l.record(op, "error", 0)
		return 0
	}
	req.SetBasicAuth(l.o.brand, l.o.secret)
	t := time.Now()
	resp, err := l.client.Do(req)
	d := time.Since(t)
	if err != nil {
		if ctx.Err() == nil {
			l.record(op, "transport-error", d)
		}
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	l.record(op, fmt.Sprint(resp.StatusCode), d)
	return resp.StatusCode
}

func (l *load) query(i int) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(domainname.TXTOwner(domainname.Selector1, l.domain(i), l.o.zone)), dns.TypeTXT)
	m.SetEdns0(1232, false)
	t := time.Now()
	r, _, err := l.dnsc.Exchange(m, l.o.dnsAddr)
	d := time.Since(t)
	if err != nil {
		l.record("DNS TXT", "timeout-or-error", d)
		return
	}
	l.record("DNS TXT", dns.RcodeToString[r.Rcode], d)
}

func (l *load) signOne(ctx context.Context, i int) {
	if l.o.sign == "" {
		return
	}
	msg := "From: Load <user@" + l.domain(i) + ">\r\nTo: someone@example.org\r\nSubject: load " + fmt.Sprint(i) +
		"\r\nDate: " + time.Now().Format(time.RFC1123Z) + "\r\nMessage-ID: <" + fmt.Sprint(time.Now().UnixNano()) + "@load>\r\n\r\n" +
		strings.Repeat("Hello from the load test.\r\n", 60)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(l.o.sign, "/")+"/v1/sign", strings.NewReader(msg))
	if err != nil {
		return
	}
	if l.o.signToken != "" {
		req.Header.Set("Authorization", "Bearer "+l.o.signToken)
	}
	t := time.Now()
	resp, err := l.client.Do(req)
	d := time.Since(t)
	if err != nil {
		if ctx.Err() == nil {
			l.record("POST sign", "transport-error", d)
		}
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	l.record("POST sign", fmt.Sprint(resp.StatusCode), d)
}

// report prints the table and says whether the run had no unexpected answers.
func (l *load) report(out io.Writer, elapsed time.Duration) bool {
	ok := true
	ops := make([]string, 0, len(l.stats))
	for op := range l.stats {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	total := 0
	fmt.Fprintf(out, "%-12s %8s %9s %9s %9s %9s  %s\n", "operation", "count", "per sec", "p50 ms", "p99 ms", "max ms", "answers")
	for _, op := range ops {
		s := l.stats[op]
		sort.Slice(s.latencies, func(i, j int) bool { return s.latencies[i] < s.latencies[j] })
		n := len(s.latencies)
		total += n
		codes := make([]string, 0, len(s.byStatus))
		for c, k := range s.byStatus {
			codes = append(codes, fmt.Sprintf("%s=%d", c, k))
			if bad(c, l.o.allow503) {
				ok = false
			}
		}
		sort.Strings(codes)
		fmt.Fprintf(out, "%-12s %8d %9.1f %9.2f %9.2f %9.2f  %s\n", op, n, float64(n)/elapsed.Seconds(),
			ms(pct(s.latencies, 0.50)), ms(pct(s.latencies, 0.99)), ms(s.latencies[n-1]), strings.Join(codes, " "))
	}
	fmt.Fprintf(out, "total %d operations in %s: %.1f/s\n", total, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds())
	return ok
}

// bad says which answers fail a run: server errors (but 503 when the
// database is known to be away), transport errors, DNS SERVFAIL and timeouts.
func bad(status string, allow503 bool) bool {
	switch {
	case status == "503":
		return !allow503
	case strings.HasPrefix(status, "5"), status == "transport-error", status == "timeout-or-error", status == "SERVFAIL", status == "error":
		return true
	}
	return false
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// verify checks every domain against its last acknowledged write, through
// the API and through DNS, after giving DNS the 1 s the spec allows.
func (l *load) verify(ctx context.Context, out io.Writer) int {
	time.Sleep(1500 * time.Millisecond)
	lost, checked := 0, 0
	for i, st := range l.state {
		if st == stateUnknown {
			continue
		}
		checked++
		name := l.domain(i)
		code, txt := l.getEntry(ctx, name)
		rcode, answer := l.lookup(name)
		switch st {
		case statePresent:
			if code != 200 || rcode != dns.RcodeSuccess || answer == "" || answer != txt {
				lost++
				fmt.Fprintf(out, "LOST PUT %s: API %d, DNS %s, TXT matches API: %v\n", name, code, dns.RcodeToString[rcode], answer == txt && answer != "")
			}
		case stateAbsent:
			if code != 404 || rcode != dns.RcodeNameError {
				lost++
				fmt.Fprintf(out, "LOST DELETE %s: API %d, DNS %s\n", name, code, dns.RcodeToString[rcode])
			}
		}
	}
	fmt.Fprintf(out, "verified %d domains against their last acknowledged write: %d lost\n", checked, lost)
	return lost
}

// getEntry returns the status of GET domain and the selector1 txtValue.
func (l *load) getEntry(ctx context.Context, name string) (int, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(l.o.api, "/")+"/cloudapi/v2/mail/dkim/"+l.o.brand+"/"+name, nil)
	if err != nil {
		return 0, ""
	}
	req.SetBasicAuth(l.o.brand, l.o.secret)
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	var entry struct {
		Selectors []struct {
			Selector string `json:"selector"`
			TXTValue string `json:"txtValue"`
		} `json:"selectors"`
	}
	if resp.StatusCode == 200 {
		if err := json.NewDecoder(resp.Body).Decode(&entry); err != nil {
			return resp.StatusCode, ""
		}
	}
	for _, s := range entry.Selectors {
		if s.Selector == "selector1" {
			return resp.StatusCode, s.TXTValue
		}
	}
	return resp.StatusCode, ""
}

func (l *load) lookup(name string) (int, string) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(domainname.TXTOwner(domainname.Selector1, name, l.o.zone)), dns.TypeTXT)
	m.SetEdns0(4096, false)
	r, _, err := l.dnsc.Exchange(m, l.o.dnsAddr)
	if err != nil {
		return -1, ""
	}
	for _, rr := range r.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			return r.Rcode, strings.Join(t.Txt, "")
		}
	}
	return r.Rcode, ""
}
