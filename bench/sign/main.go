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
	"github.com/emersion/go-msgauth/dkim"

	"dkimd/internal/keystore"
	"dkimd/internal/milter/miltertest"
	"dkimd/internal/provision"
	"dkimd/internal/sealbox"
	"dkimd/internal/signer"
	"dkimd/internal/signer/signertest"
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
	sizesFlag   = flag.String("sizes", "2,100", "message sizes in KB, comma-separated")
	serverEnv   = flag.String("server-env", "", "extra environment of dkimd serve, e.g. \"GOMAXPROCS=1 GOGC=200\"")
)

// result is one measurement.
type result struct {
	name     string
	ops      int
	elapsed  time.Duration
	self     time.Duration // CPU time of this process (the client, or the library)
	server   time.Duration // CPU time of the server process, when there is one
	lat      []time.Duration
	failures int
}

func (r result) rate() float64 { return float64(r.ops) / r.elapsed.Seconds() }

// cost is the CPU time of what is measured: the server process's when there
// is one, else this process's (library, bare crypto).
func (r result) cost() time.Duration {
	if r.server > 0 {
		return r.server
	}
	return r.self
}

// cpuRate is messages per CPU-second of what is measured. On a shared,
// noisy machine it is the figure to compare: it does not move when other
// processes take the cores.
func (r result) cpuRate() float64 { return float64(r.ops) / r.cost().Seconds() }

// allRate is messages per CPU-second with the client's CPU added.
func (r result) allRate() float64 { return float64(r.ops) / (r.self + r.server).Seconds() }

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
		log.Fatalf("server process %d: %v", pid, err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// run calls op from workers goroutines for *duration; serverPID, when not
// 0, is the process whose CPU time is the cost. Each worker gets its own
// state from newWorker.
func run(name string, workers, serverPID int, newWorker func() (op func() error, done func())) result {
	p := startPool(name, workers, newWorker)
	r := result{name: name}
	p.timed(*duration, serverPID, &r)
	p.close(&r)
	return r
}

// pool is a set of workers that keep their state (connections, sessions)
// across the slices of a measurement and sit idle between them.
type pool struct {
	name   string
	starts []chan time.Time // one per worker: run until this time
	slice  sync.WaitGroup   // workers still in the current slice
	exited sync.WaitGroup
	ops    atomic.Int64
	fails  atomic.Int64
	mu     sync.Mutex
	lat    []time.Duration
}

func startPool(name string, workers int, newWorker func() (op func() error, done func())) *pool {
	p := &pool{name: name}
	for range workers {
		op, done := newWorker()
		start := make(chan time.Time)
		p.starts = append(p.starts, start)
		p.exited.Add(1)
		go func() {
			defer p.exited.Done()
			if done != nil {
				defer done()
			}
			local := make([]time.Duration, 0, 4096)
			for stop := range start {
				for time.Now().Before(stop) {
					t0 := time.Now()
					if err := op(); err != nil {
						if p.fails.Add(1) == 1 {
							log.Printf("%s: %v", name, err)
						}
						continue
					}
					local = append(local, time.Since(t0))
					p.ops.Add(1)
				}
				p.slice.Done()
			}
			p.mu.Lock()
			p.lat = append(p.lat, local...)
			p.mu.Unlock()
		}()
	}
	return p
}

// timed runs every worker for d and adds what they did, and what it cost,
// to r.
func (p *pool) timed(d time.Duration, serverPID int, r *result) {
	var server0 time.Duration
	if serverPID != 0 {
		server0 = procCPU(serverPID)
	}
	self0, ops0, start := selfCPU(), p.ops.Load(), time.Now()
	stop := start.Add(d)
	p.slice.Add(len(p.starts))
	for _, s := range p.starts {
		s <- stop
	}
	p.slice.Wait()
	r.elapsed += time.Since(start)
	r.self += selfCPU() - self0
	r.ops += int(p.ops.Load() - ops0)
	if serverPID != 0 {
		r.server += procCPU(serverPID) - server0
	}
}

// close stops the workers and hands their latencies and failures to r.
func (p *pool) close(r *result) {
	for _, s := range p.starts {
		close(s)
	}
	p.exited.Wait()
	r.lat, r.failures = p.lat, int(p.fails.Load())
}

func (r result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	slices.Sort(r.lat)
	return r.lat[int(float64(len(r.lat)-1)*p)]
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
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
	store  *keystore.SQL
	box    *sealbox.Box
	rsaKey *rsa.PrivateKey
	edKey  ed25519.PrivateKey
	rsaPEM []byte
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
			// Active, and not due for a DNS check during the run: the
			// benchmark has no customer DNS, and a failed check would
			// turn the domain to fallback signing.
			dom.Status = keystore.StatusActive
			dom.NextCheckAt = time.Now().Add(365 * 24 * time.Hour)
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
	if *floorServer != "" {
		runFloorServer(*floorServer)
		return
	}
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
	bareRSA := func() (func() error, func()) {
		return func() error {
			_, err := rsa.SignPKCS1v15(nil, e.rsaKey, crypto.SHA256, digest[:])
			return err
		}, nil
	}
	bareEd := func() (func() error, func()) {
		return func() error { ed25519.Sign(e.edKey, digest[:]); return nil }, nil
	}
	rawRSA := run("raw RSA-2048 sign", *concurrency, 0, bareRSA)
	rawEd := run("raw Ed25519 sign", *concurrency, 0, bareEd)
	// A dual signature costs one of each.
	rawDual := 1 / (1/rawRSA.cpuRate() + 1/rawEd.cpuRate())
	fmt.Printf("%-40s %10s %14s\n", "bare crypto", "rate", "per CPU-second")
	fmt.Printf("%-40s %8.0f/s %12.0f/s\n%-40s %8.0f/s %12.0f/s\n%-40s %10s %12.0f/s\n\n", rawRSA.name, rawRSA.rate(), rawRSA.cpuRate(),
		rawEd.name, rawEd.rate(), rawEd.cpuRate(), "raw RSA-2048 + Ed25519 (dual signature)", "", rawDual)

	// What a process gets done per second of its own CPU time drifts here
	// by ±10% within seconds (a shared VM), so a ceiling measured apart from
	// a row, even just before and after it, moves that row's ratio by as
	// much. Each row is therefore cut into slices of sliceLen, and bare
	// crypto runs between them and at both ends: drift falls on the row and
	// on its ceiling alike.
	const sliceLen = 500 * time.Millisecond
	// Each row also gets a second reference: go-msgauth alone signing the
	// same message in this process (goMsgauth), which the issue names as
	// the signing library. What separates it from bare crypto is the
	// library's; what separates a row from it is dkimd's.
	measure := func(dual bool, msg []byte, name string, workers, pid int, w func() (func() error, func())) (r result, crypto, library float64) {
		row := startPool(name, workers, w)
		bareR := startPool("bare RSA", *concurrency, bareRSA)
		bareE := startPool("bare Ed25519", *concurrency, bareEd)
		lib := startPool("go-msgauth", *concurrency, goMsgauth(e, msg, dual))
		var cr, ce, cl result
		r.name = name
		refs := func() {
			bareR.timed(sliceLen/2, 0, &cr)
			if dual {
				bareE.timed(sliceLen/4, 0, &ce)
			}
			lib.timed(sliceLen/2, 0, &cl)
		}
		refs()
		for range max(2, int(*duration/sliceLen)) {
			row.timed(sliceLen, pid, &r)
			refs()
		}
		row.close(&r)
		for _, p := range []struct {
			p *pool
			r *result
		}{{bareR, &cr}, {bareE, &ce}, {lib, &cl}} {
			p.p.close(p.r)
		}
		if cl.failures > 0 {
			log.Fatalf("go-msgauth alone failed %d times", cl.failures)
		}
		crypto = cr.cpuRate()
		if dual {
			crypto = 1 / (1/crypto + 1/ce.cpuRate())
		}
		return r, crypto, cl.cpuRate()
	}

	d := startDkimd(dir)
	defer d.stop()
	floor := startFloor(dir, e)
	defer floor.stop()
	od := startOpenDKIM(dir, e)
	defer od.stop()
	lib := e.newSigner("library")

	fmt.Println("per CPU-s: messages per CPU-second of the server process (dkimd serve, opendkim), or of")
	fmt.Println("this process for the library; crypto: the bare-crypto ceiling per CPU-second measured")
	fmt.Println("in slices interleaved with that row's (vs crypto divides by it); +client: per CPU-s with the client's CPU added.")
	fmt.Println("vs go-msgauth divides by go-msgauth alone signing the same message in this process,")
	fmt.Println("measured in the same slices (go-msgauth column).")
	fmt.Printf("%-34s %9s %9s %9s %11s %10s %11s %12s %11s %11s %11s\n", "path / message / keys", "rate", "p50", "p99", "per CPU-s", "vs crypto", "crypto", "vs go-msgauth", "go-msgauth", "vs OpenDKIM", "+client")
	for _, size := range messageSizes(*sizesFlag) {
		for _, alg := range []struct {
			name, domain string
			dual         bool
		}{{"rsa", rsaDom, false}, {"rsa+ed25519", edDom, true}} {
			msg := signertest.Message(alg.domain, size)
			label := fmt.Sprintf("%dKB %s", size>>10, alg.name)
			var odRate float64
			if alg.name == "rsa" && od.addr != "" && strings.Contains("milter", *only) {
				// OpenDKIM (libmilter) writes its end-of-message replies
				// in separate small packets and its socket keeps Nagle on,
				// so each message waits out the client's delayed ACK
				// (~40 ms): at few sessions it is latency-bound, not
				// CPU-bound. Many sessions show its CPU-bound rate.
				r, c, l := measure(alg.dual, msg, fmt.Sprintf("OpenDKIM milter x%d %s", *sessions, label), *sessions, od.pid, milterWorker(od.addr, msg, true))
				printRow(r, c, l, 0)
				r2, c, l := measure(alg.dual, msg, fmt.Sprintf("dkimd milter x%d %s", *sessions, label), *sessions, d.pid, milterWorker(d.milterAddr, msg, true))
				printRow(r2, c, l, r.cpuRate())
				r, c, l = measure(alg.dual, msg, "OpenDKIM milter "+label, *concurrency, od.pid, milterWorker(od.addr, msg, true))
				odRate = r.cpuRate()
				printRow(r, c, l, 0)
			}
			for _, p := range []struct {
				name   string
				pid    int
				worker func() (func() error, func())
			}{
				{"library", 0, func() (func() error, func()) {
					return func() error { _, err := lib.Sign(context.Background(), bytes.NewReader(msg)); return err }, nil
				}},
				{"http", d.pid, httpWorker(d.httpURL, msg)},
				{"milter", d.pid, milterWorker(d.milterAddr, msg, true)},
			} {
				if alg.name == "rsa" && strings.Contains(p.name, *only) && p.name != "library" {
					// The transport floor signs with RSA only.
					f := floor.httpURL
					worker := httpWorker(f, msg)
					if p.name == "milter" {
						worker = milterWorker(floor.milterAddr, msg, true)
					}
					r, c, l := measure(false, msg, "floor "+p.name+" "+label, *concurrency, floor.pid, worker)
					printRow(r, c, l, 0)
				}
				if !strings.Contains(p.name, *only) {
					continue
				}
				r, c, l := measure(alg.dual, msg, "dkimd "+p.name+" "+label, *concurrency, p.pid, p.worker)
				printRow(r, c, l, odRate)
			}
		}
	}
}

// messageSizes parses -sizes: kilobyte counts, comma-separated.
func messageSizes(list string) []int {
	var sizes []int
	for _, f := range strings.Split(list, ",") {
		kb, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || kb <= 0 {
			log.Fatalf("-sizes: %q is not a size in KB", f)
		}
		sizes = append(sizes, kb<<10)
	}
	return sizes
}

func printRow(r result, ceiling, library, opendkim float64) {
	vsOD := "-"
	if opendkim > 0 {
		vsOD = fmt.Sprintf("%.2fx", r.cpuRate()/opendkim)
	}
	all := "-"
	if r.server > 0 {
		all = fmt.Sprintf("%.0f/s", r.allRate())
	}
	fail := ""
	if r.failures > 0 {
		fail = fmt.Sprintf("  (%d failures)", r.failures)
	}
	fmt.Printf("%-34s %7.0f/s %9s %9s %9.0f/s %9.0f%% %9.0f/s %11.0f%% %9.0f/s %11s %11s%s\n", r.name, r.rate(), r.pct(0.5).Round(10*time.Microsecond),
		r.pct(0.99).Round(10*time.Microsecond), r.cpuRate(), 100*r.cpuRate()/ceiling, ceiling, 100*r.cpuRate()/library, library, vsOD, all, fail)
}

// goMsgauth signs msg with go-msgauth alone, as the signer configures it,
// with the RSA key and, for dual, the Ed25519 key too: the library's own
// cost, with no key lookup, streaming or transport.
func goMsgauth(e *env, msg []byte, dual bool) func() (func() error, func()) {
	keys := []crypto.Signer{e.rsaKey}
	if dual {
		keys = append(keys, e.edKey)
	}
	return func() (func() error, func()) {
		return func() error {
			signers := make([]*dkim.Signer, 0, len(keys))
			writers := make([]io.Writer, 0, len(keys))
			for _, k := range keys {
				s, err := dkim.NewSigner(signer.SignOptions(rsaDom, "selector1", k))
				if err != nil {
					return err
				}
				signers, writers = append(signers, s), append(writers, s)
			}
			if _, err := io.MultiWriter(writers...).Write(msg); err != nil {
				return err
			}
			for _, s := range signers {
				if err := s.Close(); err != nil {
					return err
				}
				_ = s.Signature()
			}
			return nil
		}, nil
	}
}

// server is a process under test.
type server struct {
	pid                       int
	addr, httpURL, milterAddr string
	stop                      func()
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitListening(addrs ...string) error {
	for _, a := range addrs {
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			c, err := net.Dial("tcp", a)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("nothing listens on %s", a)
			}
		}
	}
	return nil
}

// startDkimd builds and runs `dkimd serve` on the benchmark's store (the
// SQLite file and key-encryption key in dir), with only the sign endpoint
// and the milter listening.
func startDkimd(dir string) server {
	bin := filepath.Join(dir, "dkimd")
	build := exec.Command("go", "build", "-o", bin, "./cmd/dkimd")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	must(build.Run())
	signAddr := fmt.Sprintf("127.0.0.1:%d", freePort())
	milterAddr := fmt.Sprintf("127.0.0.1:%d", freePort())
	// The API cannot be disabled; it listens on a spare port, idle.
	cmd := exec.Command(bin, "serve", "--data-dir", dir, "--zone", zoneName,
		"--api-addr", fmt.Sprintf("127.0.0.1:%d", freePort()), "--dns-addr", "", "--ops-addr", "",
		"--sign-addr", signAddr, "--milter-addr", milterAddr, "--key-pool-size", "0", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if *serverEnv != "" {
		cmd.Env = append(os.Environ(), strings.Fields(*serverEnv)...)
	}
	must(cmd.Start())
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
	if err := waitListening(signAddr, milterAddr); err != nil {
		stop()
		log.Fatalf("dkimd serve: %v", err)
	}
	return server{pid: cmd.Process.Pid, httpURL: "http://" + signAddr + "/v1/sign", milterAddr: milterAddr, stop: stop}
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

// milterWorker drives one message per call through a milter session, the
// way Postfix does for each message: connect info, envelope, header fields,
// body in chunks, end; it checks that a DKIM-Signature was inserted. The
// client skips the events and the replies the milter negotiated away.
func milterWorker(addr string, msg []byte, full bool) func() (func() error, func()) {
	fields, body := milterFields(msg)
	// Postfix eats the space after the colon unless the milter asks for it
	// (SMFIP_HDR_LEADSPC, as OpenDKIM does).
	spaced := make([][2]string, len(fields))
	for i, f := range fields {
		spaced[i] = [2]string{f[0], " " + f[1]}
	}
	return func() (func() error, func()) {
		client := gomilter.NewClientWithOptions("tcp", addr, gomilter.ClientOptions{
			ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
			ActionMask: miltertest.PostfixActions, ProtocolMask: miltertest.PostfixProtocol,
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
			hfields := fields
			if sess.ProtocolOption(gomilter.OptHeaderLeadingSpace) {
				hfields = spaced
			}
			err := milterMessage(sess, full, hfields, body)
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
		// The client adds the angle brackets.
		if _, err := sess.Mail("alice@"+rsaDom, nil); err != nil {
			return err
		}
		if _, err := sess.Rcpt("bob@example.net", nil); err != nil {
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
func startOpenDKIM(dir string, e *env) server {
	none := server{stop: func() {}}
	if *opendkimBin == "" {
		return none
	}
	if _, err := os.Stat(*opendkimBin); err != nil {
		log.Printf("OpenDKIM comparison skipped: %v (apt-get install opendkim)", err)
		return none
	}
	port := freePort()
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
`, rsaDom, keyFile, port, filepath.Join(dir, "opendkim.pid"))), 0o644))
	cmd := exec.Command(*opendkimBin, "-f", "-x", conf)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	must(cmd.Start())
	stop := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := waitListening(addr); err != nil {
		stop()
		log.Printf("OpenDKIM comparison skipped: %v", err)
		return none
	}
	return server{pid: cmd.Process.Pid, addr: addr, stop: stop}
}
