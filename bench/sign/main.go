// Command sign benchmarks dkimd's signing paths (library, HTTP endpoint,
// milter) on 2 KB and 100 KB messages, next to the raw crypto limit measured
// in the same run (bare RSA-2048 / Ed25519 sign loops) and to OpenDKIM
// (Debian opendkim) driven through the milter protocol by the same client.
// Run it with `make bench-sign`; see docs/performance.md, "Signing".
//
// Every measurement uses the same number of concurrent workers, and the
// clients run in this process, so their cost counts against the server (as
// it does for OpenDKIM): the figures are conservative for dkimd.
package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gomilter "github.com/emersion/go-milter"

	"dkimd/internal/keystore"
	"dkimd/internal/milter"
	"dkimd/internal/provision"
	"dkimd/internal/sealbox"
	"dkimd/internal/signer"
	"dkimd/internal/signhttp"
)

const (
	zoneName = "oxcloud.zone"
	brand    = "bench"
	rsaDom   = "rsa.bench.example"
	edDom    = "ed.bench.example"
)

var (
	duration    = flag.Duration("duration", 3*time.Second, "how long each measurement runs")
	concurrency = flag.Int("c", runtime.GOMAXPROCS(0), "concurrent workers in every measurement")
	opendkimBin = flag.String("opendkim", "/usr/sbin/opendkim", "OpenDKIM binary; empty skips the comparison")
	cpuProfile  = flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	only        = flag.String("only", "", "run only the paths whose name contains this (e.g. milter)")
	sessions    = flag.Int("milter-sessions", 16, "concurrent milter sessions of the second milter comparison")
)

// result is one measurement.
type result struct {
	name     string
	ops      int
	elapsed  time.Duration
	cpu      time.Duration // CPU time of this process (and of OpenDKIM's)
	lat      []time.Duration
	failures int
}

func (r result) rate() float64 { return float64(r.ops) / r.elapsed.Seconds() }

// cpuRate is messages per CPU-second. On a shared, noisy machine it is the
// figure to compare: it does not move when other processes take the cores.
func (r result) cpuRate() float64 { return float64(r.ops) / r.cpu.Seconds() }

// selfCPU is the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		log.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the CPU time of another process, from /proc (clock ticks of
// 1/100 s on Linux).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// otherPID is a server process whose CPU counts in the measurement
// (OpenDKIM's), 0 for none.
var otherPID int

func (r result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	slices.Sort(r.lat)
	return r.lat[int(float64(len(r.lat)-1)*p)]
}

// run calls op from *concurrency workers for *duration. Each worker gets
// its own state from newWorker.
func run(name string, newWorker func() (op func() error, done func())) result {
	return runN(name, *concurrency, newWorker)
}

func runN(name string, workers int, newWorker func() (op func() error, done func())) result {
	var ops, fails atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	stop := time.Now().Add(*duration)
	start := time.Now()
	cpu0, other0 := selfCPU(), procCPU(otherPID)
	var wg sync.WaitGroup
	for range workers {
		op, done := newWorker()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if done != nil {
				defer done()
			}
			local := make([]time.Duration, 0, 4096)
			for time.Now().Before(stop) {
				t0 := time.Now()
				if err := op(); err != nil {
					if fails.Add(1) == 1 {
						log.Printf("%s: %v", name, err)
					}
					continue
				}
				local = append(local, time.Since(t0))
				ops.Add(1)
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	cpu := selfCPU() - cpu0
	if otherPID != 0 {
		cpu += procCPU(otherPID) - other0
	}
	return result{name: name, ops: int(ops.Load()), elapsed: time.Since(start), cpu: cpu, lat: lat, failures: int(fails.Load())}
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// message builds a realistic message of about size bytes from domain.
func message(domain string, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Received: from client.example (client.example [192.0.2.1])\r\n\tby mx.%s with ESMTPSA id 4A1B2C\r\n", domain)
	fmt.Fprintf(&b, "From: Alice Example <alice@%s>\r\nTo: Bob <bob@example.net>\r\nSubject: benchmark message\r\n", domain)
	fmt.Fprintf(&b, "Date: Sun, 29 Nov 2026 06:00:00 +0000\r\nMessage-ID: <bench.1@%s>\r\nMIME-Version: 1.0\r\n", domain)
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\nList-Unsubscribe: <https://example.net/u/1>\r\n")
	b.WriteString("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n")
	line := "The quick brown fox jumps over the lazy dog, 0123456789 times over.\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.Bytes()
}

// milterFields splits a message into header fields and body, as an MTA
// hands them to a milter.
func milterFields(msg []byte) (fields [][2]string, body []byte) {
	head, body, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	for _, line := range strings.Split(string(head), "\r\n") {
		if line[0] == ' ' || line[0] == '\t' {
			fields[len(fields)-1][1] += "\n" + line
			continue
		}
		k, v, _ := strings.Cut(line, ":")
		fields = append(fields, [2]string{k, strings.TrimPrefix(v, " ")})
	}
	return fields, body
}

type env struct {
	store   *keystore.SQL
	box     *sealbox.Box
	rsaKey  *rsa.PrivateKey
	edKey   ed25519.PrivateKey
	rsaPEM  []byte
	signers map[string]*signer.Signer
}

func setup(dir string) *env {
	ctx := context.Background()
	store, err := keystore.OpenSQLite(dir)
	must(err)
	_, err = store.Migrate(ctx)
	must(err)
	box, _, _, err := sealbox.LoadOrCreate(dir)
	must(err)
	svc := &provision.Service{Store: store, Box: box, Keys: provision.DirectGenerator{}, Zone: zoneName, Now: time.Now}
	actor := provision.Actor{Name: "bench"}
	_, err = svc.CreateBrand(ctx, brand, actor)
	must(err)
	e := &env{store: store, box: box}
	for _, d := range []struct {
		name string
		ed   bool
	}{{rsaDom, false}, {edDom, true}} {
		must(svc.AddMaildomain(ctx, brand, d.name, actor))
		_, keys, _, err := svc.CreateDomain(ctx, brand, d.name, provision.DomainOptions{Ed25519: d.ed}, actor)
		must(err)
		must(store.Update(ctx, func(tx keystore.Tx) error {
			dom, err := tx.Domain(ctx, d.name)
			if err != nil {
				return err
			}
			dom.Status = keystore.StatusActive
			_, err = tx.UpdateDomain(ctx, dom)
			return err
		}))
		for _, k := range keys {
			if k.State != keystore.StateActive {
				continue
			}
			priv, err := provision.OpenKey(box, k)
			must(err)
			switch p := priv.(type) {
			case *rsa.PrivateKey:
				if d.name == rsaDom {
					e.rsaKey = p
					e.rsaPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(p)})
				}
			case ed25519.PrivateKey:
				e.edKey = p
			}
		}
	}
	if e.rsaKey == nil || e.edKey == nil {
		log.Fatal("setup: keys missing")
	}
	e.rsaKey.Precompute()
	return e
}

func (e *env) newSigner(listener string) *signer.Signer {
	s, err := signer.New(signer.Options{Store: e.store, Box: e.box, Zone: zoneName, Listener: listener})
	must(err)
	return s
}

func main() {
	flag.Parse()
	log.SetFlags(0)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		must(err)
		must(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	dir, err := os.MkdirTemp("", "dkimd-bench-sign-")
	must(err)
	defer os.RemoveAll(dir)
	e := setup(dir)
	fmt.Printf("dkimd sign benchmark: GOMAXPROCS=%d, %d workers, %v per measurement, %s/%s\n\n",
		runtime.GOMAXPROCS(0), *concurrency, *duration, runtime.GOOS, runtime.GOARCH)

	digest := sha256.Sum256([]byte("raw crypto"))
	rawRSA := run("raw RSA-2048 sign", func() (func() error, func()) {
		return func() error {
			_, err := rsa.SignPKCS1v15(nil, e.rsaKey, crypto.SHA256, digest[:])
			return err
		}, nil
	})
	rawEd := run("raw Ed25519 sign", func() (func() error, func()) {
		return func() error { ed25519.Sign(e.edKey, digest[:]); return nil }, nil
	})
	// A dual signature costs one of each.
	rawDual := 1 / (1/rawRSA.cpuRate() + 1/rawEd.cpuRate())
	fmt.Printf("%-40s %10s %14s\n", "bare crypto", "rate", "per CPU-second")
	fmt.Printf("%-40s %8.0f/s %12.0f/s\n%-40s %8.0f/s %12.0f/s\n%-40s %10s %12.0f/s\n\n", rawRSA.name, rawRSA.rate(), rawRSA.cpuRate(),
		rawEd.name, rawEd.rate(), rawEd.cpuRate(), "raw RSA-2048 + Ed25519 (dual signature)", "", rawDual)

	httpURL, stopHTTP := startHTTP(e)
	defer stopHTTP()
	milterAddr, stopMilter := startMilter(e)
	defer stopMilter()
	opendkimAddr, opendkimPID, stopOpenDKIM := startOpenDKIM(dir, e)
	defer stopOpenDKIM()
	lib := e.newSigner("library")

	fmt.Printf("Ratios compare messages per CPU-second (client included, OpenDKIM's process included):\n")
	fmt.Printf("%-36s %10s %9s %9s %12s %10s %11s\n", "path / message / keys", "rate", "p50", "p99", "per CPU-s", "vs crypto", "vs OpenDKIM")
	for _, size := range []int{2 << 10, 100 << 10} {
		for _, alg := range []struct {
			name, domain string
			ceiling      float64
		}{{"rsa", rsaDom, rawRSA.cpuRate()}, {"rsa+ed25519", edDom, rawDual}} {
			msg := message(alg.domain, size)
			label := fmt.Sprintf("%dKB %s", size>>10, alg.name)
			var od float64
			if alg.name == "rsa" && opendkimAddr != "" && strings.Contains("milter", *only) {
				// OpenDKIM (libmilter) writes its end-of-message replies
				// in separate small packets and its socket keeps Nagle on,
				// so each message waits out the client's delayed ACK
				// (~40 ms): at few sessions it is latency-bound, not
				// CPU-bound. Many sessions show its CPU-bound rate.
				otherPID = opendkimPID
				r := runN(fmt.Sprintf("OpenDKIM milter x%d %s", *sessions, label), *sessions, milterWorker(opendkimAddr, msg, true))
				otherPID = 0
				printRow(r, alg.ceiling, 0)
				r2 := runN(fmt.Sprintf("dkimd milter x%d %s", *sessions, label), *sessions, milterWorker(milterAddr, msg, true))
				printRow(r2, alg.ceiling, r.cpuRate())
				otherPID = opendkimPID
				r = run("OpenDKIM milter "+label, milterWorker(opendkimAddr, msg, true))
				otherPID = 0
				od = r.cpuRate()
				printRow(r, alg.ceiling, 0)
			}
			for _, p := range []struct {
				name   string
				worker func() (func() error, func())
			}{
				{"library", func() (func() error, func()) {
					return func() error { _, err := lib.Sign(context.Background(), bytes.NewReader(msg)); return err }, nil
				}},
				{"http", httpWorker(httpURL, msg)},
				{"milter", milterWorker(milterAddr, msg, false)},
			} {
				if !strings.Contains(p.name, *only) {
					continue
				}
				r := run("dkimd "+p.name+" "+label, p.worker)
				printRow(r, alg.ceiling, od)
			}
		}
	}
}

func printRow(r result, ceiling, opendkim float64) {
	vsOD := "-"
	if opendkim > 0 {
		vsOD = fmt.Sprintf("%.2fx", r.cpuRate()/opendkim)
	}
	fail := ""
	if r.failures > 0 {
		fail = fmt.Sprintf("  (%d failures)", r.failures)
	}
	fmt.Printf("%-36s %8.0f/s %9s %9s %10.0f/s %9.0f%% %11s%s\n", r.name, r.rate(), r.pct(0.5).Round(10*time.Microsecond),
		r.pct(0.99).Round(10*time.Microsecond), r.cpuRate(), 100*r.cpuRate()/ceiling, vsOD, fail)
}

func startHTTP(e *env) (string, func()) {
	h, err := signhttp.New(signhttp.Options{Signer: e.newSigner("http"), MaxBytes: 64 << 20})
	must(err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String() + "/v1/sign", func() { _ = srv.Close() }
}

func httpWorker(url string, msg []byte) func() (func() error, func()) {
	return func() (func() error, func()) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
		return func() error {
			resp, err := client.Post(url, "message/rfc822", bytes.NewReader(msg))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		}, client.CloseIdleConnections
	}
}

func startMilter(e *env) (string, func()) {
	m, err := milter.New(milter.Options{Signer: e.newSigner("milter"), Log: slog.New(slog.DiscardHandler)})
	must(err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	go func() { _ = m.Serve(ln) }()
	return ln.Addr().String(), func() { _ = m.Close() }
}

// milterWorker drives one message per call through a milter session, the
// way Postfix does for each message: connect info, envelope, header fields,
// body in chunks, end; it checks that a DKIM-Signature was inserted.
func milterWorker(addr string, msg []byte, full bool) func() (func() error, func()) {
	fields, body := milterFields(msg)
	return func() (func() error, func()) {
		client := gomilter.NewClientWithOptions("tcp", addr, gomilter.ClientOptions{
			ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
			ActionMask: gomilter.OptAddHeader | gomilter.OptChangeHeader,
		})
		var sess *gomilter.ClientSession
		closeSess := func() {
			if sess != nil {
				sess.Close()
				sess = nil
			}
		}
		// One session carries many messages, as Postfix reuses its milter
		// connection for every message of an SMTP session.
		return func() error {
			if sess == nil {
				var err error
				if sess, err = client.Session(); err != nil {
					return err
				}
				if full {
					if err := sess.Macros(gomilter.CodeConn, "j", "mta.bench.example", "{daemon_name}", "bench"); err != nil {
						closeSess()
						return err
					}
					if _, err := sess.Conn("localhost", gomilter.FamilyInet, 40000, "127.0.0.1"); err != nil {
						closeSess()
						return err
					}
					if _, err := sess.Helo("localhost"); err != nil {
						closeSess()
						return err
					}
				}
			}
			err := milterMessage(sess, full, fields, body)
			if err != nil {
				closeSess()
			}
			return err
		}, closeSess
	}
}

func milterMessage(sess *gomilter.ClientSession, full bool, fields [][2]string, body []byte) error {
	if full {
		if err := sess.Macros(gomilter.CodeMail, "i", "4A1B2C3D", "{auth_authen}", "alice"); err != nil {
			return err
		}
		if _, err := sess.Mail("<alice@"+rsaDom+">", nil); err != nil {
			return err
		}
		if _, err := sess.Rcpt("<bob@example.net>", nil); err != nil {
			return err
		}
	}
	for _, f := range fields {
		if _, err := sess.HeaderField(f[0], f[1]); err != nil {
			return err
		}
	}
	if _, err := sess.HeaderEnd(); err != nil {
		return err
	}
	mods, act, err := sess.BodyReadFrom(bytes.NewReader(body))
	if err != nil {
		return err
	}
	if act.Code != gomilter.ActAccept && act.Code != gomilter.ActContinue {
		return fmt.Errorf("milter action %c", act.Code)
	}
	for _, m := range mods {
		if strings.EqualFold(m.HeaderName, "DKIM-Signature") {
			return nil
		}
	}
	return errors.New("no DKIM-Signature inserted")
}

// startOpenDKIM runs Debian's opendkim in the foreground with the same RSA
// key, canonicalization and header list, on a loopback port.
func startOpenDKIM(dir string, e *env) (string, int, func()) {
	if *opendkimBin == "" {
		return "", 0, func() {}
	}
	if _, err := os.Stat(*opendkimBin); err != nil {
		log.Printf("OpenDKIM comparison skipped: %v (apt-get install opendkim)", err)
		return "", 0, func() {}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	addr := ln.Addr().(*net.TCPAddr)
	ln.Close()
	keyFile := filepath.Join(dir, "opendkim.key")
	must(os.WriteFile(keyFile, e.rsaPEM, 0o600))
	conf := filepath.Join(dir, "opendkim.conf")
	must(os.WriteFile(conf, []byte(fmt.Sprintf(`Syslog no
Mode s
Domain %s
Selector selector1
KeyFile %s
Canonicalization relaxed/relaxed
SignatureAlgorithm rsa-sha256
SignHeaders From,To,Cc,Subject,Date,Message-ID,Reply-To,MIME-Version,Content-Type,In-Reply-To,References,List-Unsubscribe,List-Unsubscribe-Post
OversignHeaders From
Socket inet:%d@127.0.0.1
PidFile %s
RequireSafeKeys no
`, rsaDom, keyFile, addr.Port, filepath.Join(dir, "opendkim.pid"))), 0o644))
	cmd := exec.Command(*opendkimBin, "-f", "-x", conf)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	must(cmd.Start())
	stop := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.Dial("tcp", addr.String())
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			stop()
			log.Printf("OpenDKIM comparison skipped: it does not listen on %s", addr)
			return "", 0, func() {}
		}
	}
	return addr.String(), cmd.Process.Pid, stop
}
