// Command apilat measures dkimd brand API latencies for the scale test
// (bench/scale/scale.sh) and prints percentiles:
//
//	get:       GET /{brand}/{domain} of random existing domains, -c workers for -duration
//	put:       PUT /{brand}/{domain} of spare maildomains, -count of them at -rate per second
//	propagate: PUT a spare maildomain, then poll dkimd's DNS until the new
//	           selector1 TXT answers: the time for a change to reach DNS
//
// Every request goes to 127.0.0.1 only; any status other than the expected
// one is counted and makes the exit status non-zero.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"dkimd/internal/domainname"
)

type options struct {
	mode, api, brand, secret string
	domainFmt, spareFmt      string
	n, first, count, c       int
	rate                     float64
	duration                 time.Duration
	dnsAddr, zone            string
}

func main() {
	var o options
	flag.StringVar(&o.mode, "mode", "get", "get, put or propagate")
	flag.StringVar(&o.api, "api", "http://127.0.0.1:8080", "dkimd API base URL")
	flag.StringVar(&o.brand, "brand", "scale", "brand")
	flag.StringVar(&o.secret, "secret", os.Getenv("APILAT_SECRET"), "brand secret (env APILAT_SECRET)")
	flag.StringVar(&o.domainFmt, "domain-format", "d%07d.example.com", "name of existing domain i (get)")
	flag.StringVar(&o.spareFmt, "spare-format", "p%07d.example.com", "name of spare maildomain i (put, propagate)")
	flag.IntVar(&o.n, "n", 1000000, "existing domains 0..n-1 (get)")
	flag.IntVar(&o.first, "first", 0, "first spare maildomain to PUT")
	flag.IntVar(&o.count, "count", 100, "PUTs to make (put, propagate)")
	flag.IntVar(&o.c, "c", 4, "concurrent workers (get)")
	flag.Float64Var(&o.rate, "rate", 4, "PUTs started per second (put); 0: back to back")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "how long to run (get)")
	flag.StringVar(&o.dnsAddr, "dns", "127.0.0.1:5353", "dkimd DNS address (propagate)")
	flag.StringVar(&o.zone, "zone", "oxcloud.zone", "the zone (propagate)")
	flag.Parse()
	if !strings.HasPrefix(o.api, "http://127.0.0.1") && !strings.HasPrefix(o.api, "http://localhost") {
		fmt.Fprintln(os.Stderr, "apilat: -api must be on 127.0.0.1")
		os.Exit(2)
	}
	var err error
	switch o.mode {
	case "get":
		err = runGet(o)
	case "put":
		err = runPut(o)
	case "propagate":
		err = runPropagate(o)
	default:
		err = fmt.Errorf("unknown -mode %q", o.mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "apilat:", err)
		os.Exit(1)
	}
}

var client = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 64},
}

// call makes one request and returns its status and duration; the body is
// read to the end so the connection is reused.
func call(o options, method, domain string) (int, time.Duration, error) {
	req, err := http.NewRequest(method, o.api+"/cloudapi/v2/mail/dkim/"+o.brand+"/"+domain, nil)
	if err != nil {
		return 0, 0, err
	}
	req.SetBasicAuth(o.brand, o.secret)
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, time.Since(t0), err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, time.Since(t0), err
}

// stats collects latencies and statuses from several goroutines.
type stats struct {
	mu       sync.Mutex
	lat      []time.Duration
	statuses map[int]int
	errs     int
	firstErr error
}

func (s *stats) add(status int, d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.statuses == nil {
		s.statuses = map[int]int{}
	}
	if err != nil {
		s.errs++
		if s.firstErr == nil {
			s.firstErr = err
		}
		return
	}
	s.statuses[status]++
	s.lat = append(s.lat, d)
}

func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.5) - 1
	i = min(max(i, 0), len(sorted)-1)
	return float64(sorted[i].Microseconds()) / 1000
}

// report prints one summary line and fails when a status was not want.
func (s *stats) report(what string, elapsed time.Duration, want int) error {
	slices.Sort(s.lat)
	var codes []string
	keys := make([]int, 0, len(s.statuses))
	for k := range s.statuses {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	bad := s.errs
	for _, k := range keys {
		codes = append(codes, fmt.Sprintf("%d:%d", k, s.statuses[k]))
		if k != want {
			bad += s.statuses[k]
		}
	}
	fmt.Printf("%s: %d requests in %.1fs (%.0f/s)  p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms  statuses %s  errors %d\n",
		what, len(s.lat)+s.errs, elapsed.Seconds(), float64(len(s.lat))/elapsed.Seconds(),
		pct(s.lat, 0.50), pct(s.lat, 0.90), pct(s.lat, 0.99), pct(s.lat, 1), strings.Join(codes, ","), s.errs)
	if bad > 0 {
		return fmt.Errorf("%s: %d requests without status %d (first error: %v)", what, bad, want, s.firstErr)
	}
	return nil
}

func runGet(o options) error {
	var s stats
	deadline := time.Now().Add(o.duration)
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := range o.c {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for time.Now().Before(deadline) {
				status, d, err := call(o, http.MethodGet, fmt.Sprintf(o.domainFmt, r.IntN(o.n)))
				s.add(status, d, err)
			}
		})
	}
	wg.Wait()
	return s.report(fmt.Sprintf("GET domain (c=%d, random of %d)", o.c, o.n), time.Since(t0), http.StatusOK)
}

// runPut starts PUTs at a fixed rate (each in its own goroutine, so a slow
// one does not delay the next start), which keeps the load the same with and
// without the key pool and shows what the pool saves a single request.
func runPut(o options) error {
	var s stats
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range o.count {
		if o.rate > 0 {
			if wait := time.Until(t0.Add(time.Duration(float64(i) / o.rate * float64(time.Second)))); wait > 0 {
				time.Sleep(wait)
			}
			domain := fmt.Sprintf(o.spareFmt, o.first+i)
			wg.Go(func() { s.add(call(o, http.MethodPut, domain)) })
		} else {
			s.add(call(o, http.MethodPut, fmt.Sprintf(o.spareFmt, o.first+i)))
		}
	}
	wg.Wait()
	what := fmt.Sprintf("PUT new domain (%.1f/s)", o.rate)
	if o.rate == 0 {
		what = "PUT new domain (back to back)"
	}
	return s.report(what, time.Since(t0), http.StatusCreated)
}

// runPropagate PUTs one domain at a time and polls DNS every millisecond
// until its selector1 TXT answers, timing from the PUT's start and from its
// response.
func runPropagate(o options) error {
	var fromStart, fromReply []time.Duration
	c := &dns.Client{Net: "udp", Timeout: time.Second}
	for i := range o.count {
		domain := fmt.Sprintf(o.spareFmt, o.first+i)
		name := dns.Fqdn("selector1-" + domainname.Label(domain) + "._domainkey." + o.zone)
		t0 := time.Now()
		status, d, err := call(o, http.MethodPut, domain)
		if err != nil || status != http.StatusCreated {
			return fmt.Errorf("PUT %s: status %d, %v", domain, status, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = waitTXT(ctx, c, o.dnsAddr, name)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		fromStart = append(fromStart, time.Since(t0))
		fromReply = append(fromReply, time.Since(t0)-d)
	}
	slices.Sort(fromStart)
	slices.Sort(fromReply)
	fmt.Printf("change to DNS: %d PUTs; from PUT start p50 %.1f ms max %.1f ms; from PUT reply p50 %.1f ms max %.1f ms\n",
		len(fromStart), pct(fromStart, 0.5), pct(fromStart, 1), pct(fromReply, 0.5), pct(fromReply, 1))
	return nil
}

func waitTXT(ctx context.Context, c *dns.Client, addr, name string) error {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeTXT)
	m.RecursionDesired = false
	for {
		r, _, err := c.ExchangeContext(ctx, m, addr)
		var ne net.Error
		switch {
		case err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0:
			return nil
		case err != nil && !(errors.As(err, &ne) && ne.Timeout()):
			return err
		case ctx.Err() != nil:
			return errors.New("no TXT answer within 30s")
		}
		time.Sleep(time.Millisecond)
	}
}
