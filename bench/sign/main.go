// Command sign benchmarks dkimd's signing paths (library, HTTP endpoint,
// milter) on 2 KB and 100 KB messages, next to the hardware's limit measured
// in the same run (`openssl speed rsa2048` on one core between the slices
// of every row; Go's bare Ed25519 for dual signatures), to the same bare
// signatures made in this process, and to OpenDKIM (Debian opendkim)
// driven through the milter protocol by the same client.
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

	"dkimd/bench/internal/benchproc"
	"dkimd/internal/dkim"
	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
	"dkimd/internal/milter/miltertest"
	"dkimd/internal/provision"
	"dkimd/internal/rsasign"
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
	rsaBackend  = flag.String("rsa-backend", "auto", "--rsa-backend of dkimd serve, and the backend of the bare and floor signatures")
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

// procCPU is the CPU time of another process.
func procCPU(pid int) time.Duration {
	self, _, _, err := benchproc.Stat(pid)
	if err != nil {
		log.Fatalf("server process %d: %v", pid, err)
	}
	return self
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
			priv, err := dkimkey.Open(box, k.KEKID, k.SealedPrivateKey, sealbox.AssociatedData(string(k.OwnerKind), k.Owner, k.Selector))
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

// newSigner is the library path's signer, signing RSA as dkimd serve does
// (backend).
func (e *env) newSigner(backend rsasign.Backend) *signer.Signer {
	s, err := signer.New(signer.Options{Store: e.store, Box: e.box, Zone: zoneName, RSA: backend.Signer})
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

	backend, unavailable, err := rsasign.Select(*rsaBackend)
	must(err)
	if unavailable != nil {
		log.Printf("RSA backend: go (%v)", unavailable)
	}
	rsaSigner, err := backend.Signer(e.rsaKey)
	must(err)
	goRSA, err := rsasign.Backend{}.Signer(e.rsaKey)
	must(err)
	digest := sha256.Sum256([]byte("raw crypto"))
	bareSign := func(k crypto.Signer) func() (func() error, func()) {
		return func() (func() error, func()) {
			return func() error {
				_, err := k.Sign(nil, digest[:], crypto.SHA256)
				return err
			}, nil
		}
	}
	bareRSA := bareSign(rsaSigner)
	bareEd := func() (func() error, func()) {
		return func() error { ed25519.Sign(e.edKey, digest[:]); return nil }, nil
	}

	// The hardware's limit: OpenSSL's own `openssl speed` on one core,
	// beside the same signature made in this process by each RSA backend
	// and by Go's Ed25519.
	var sslRSA, sslEd speed
	sslRSA.run("rsa2048")
	sslEd.run("ed25519")
	rawRSA := run("bare RSA-2048, "+backend.Name()+" backend", *concurrency, 0, bareRSA)
	rawGo := run("bare RSA-2048, go backend (crypto/rsa)", *concurrency, 0, bareSign(goRSA))
	rawEd := run("bare Ed25519 (crypto/ed25519)", *concurrency, 0, bareEd)
	fmt.Printf("RSA backend: %s\n\n%-44s %14s %12s\n", backend.Name(), "bare crypto", "per CPU-second", "vs openssl")
	fmt.Printf("%-44s %12.0f/s %12s\n", "openssl speed rsa2048 (one core)", sslRSA.rate(), "1.00")
	for _, r := range []result{rawRSA, rawGo} {
		fmt.Printf("%-44s %12.0f/s %12.2f\n", r.name, r.cpuRate(), r.cpuRate()/sslRSA.rate())
	}
	fmt.Printf("%-44s %12.0f/s %12s\n", "openssl speed ed25519 (one core)", sslEd.rate(), "1.00")
	fmt.Printf("%-44s %12.0f/s %12.2f\n\n", rawEd.name, rawEd.cpuRate(), rawEd.cpuRate()/sslEd.rate())
	ed25519Core(e, bareEd)

	// What a process gets done per second of its own CPU time drifts here
	// by ±10% within seconds (a shared VM), so a ceiling measured apart from
	// a row, even just before and after it, moves that row's ratio by as
	// much. Each row is therefore cut into slices of sliceLen, and its
	// references run between them and at both ends: `openssl speed
	// -seconds 1` (the ceiling; dual rows add Go's bare Ed25519, which is
	// what dkimd signs Ed25519 with) and the same bare signature in this
	// process (the bare column): drift falls on the row and on its ceiling
	// alike.
	const sliceLen = time.Second
	measure := func(dual bool, name string, workers, pid int, w func() (func() error, func())) (r result, ceiling, bare float64) {
		row := startPool(name, workers, w)
		bareR := startPool("bare RSA", *concurrency, bareRSA)
		bareE := startPool("bare Ed25519", *concurrency, bareEd)
		var ssl speed
		var cr, ce result
		r.name = name
		refs := func() {
			ssl.run("rsa2048")
			bareR.timed(sliceLen/4, 0, &cr)
			if dual {
				bareE.timed(sliceLen/8, 0, &ce)
			}
		}
		refs()
		for range max(2, int(*duration/sliceLen)) {
			row.timed(sliceLen, pid, &r)
			refs()
		}
		row.close(&r)
		bareR.close(&cr)
		bareE.close(&ce)
		ceiling, bare = ssl.rate(), cr.cpuRate()
		if dual {
			// A dual signature costs one of each.
			ceiling = 1 / (1/ceiling + 1/ce.cpuRate())
			bare = 1 / (1/bare + 1/ce.cpuRate())
		}
		return r, ceiling, bare
	}

	d := startDkimd(dir, *rsaBackend)
	defer d.stop()
	floor := startFloor(dir, e)
	defer floor.stop()
	od := startOpenDKIM(dir, e)
	defer od.stop()
	lib := e.newSigner(backend)

	fmt.Println("per CPU-s: messages per CPU-second of the server process (dkimd serve, opendkim), or of")
	fmt.Println("this process for the library. openssl: `openssl speed rsa2048` per CPU-second on one core,")
	fmt.Println("run between the row's slices (dual rows: with Go's bare Ed25519 added, one signature of each);")
	fmt.Println("vs openssl divides by it. bare: the same signature(s) made in this process with dkimd's RSA")
	fmt.Println("backend, in the same slices. +client: per CPU-s with the client's CPU added.")
	fmt.Printf("%-34s %9s %9s %9s %11s %11s %10s %11s %8s %11s %11s\n", "path / message / keys", "rate", "p50", "p99", "per CPU-s", "openssl", "vs openssl", "bare", "vs bare", "vs OpenDKIM", "+client")
	sizes, err := benchproc.MessageSizes(*sizesFlag)
	must(err)
	for _, size := range sizes {
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
				r, c, b := measure(alg.dual, fmt.Sprintf("OpenDKIM milter x%d %s", *sessions, label), *sessions, od.pid, milterWorker(od.addr, msg, true))
				printRow(r, c, b, 0)
				r2, c, b := measure(alg.dual, fmt.Sprintf("dkimd milter x%d %s", *sessions, label), *sessions, d.pid, milterWorker(d.milterAddr, msg, true))
				printRow(r2, c, b, r.cpuRate())
				r, c, b = measure(alg.dual, "OpenDKIM milter "+label, *concurrency, od.pid, milterWorker(od.addr, msg, true))
				odRate = r.cpuRate()
				printRow(r, c, b, 0)
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
					r, c, b := measure(false, "floor "+p.name+" "+label, *concurrency, floor.pid, worker)
					printRow(r, c, b, 0)
					if p.name == "milter" {
						r, c, b := measure(false, "floor go-milter "+label, *concurrency, floor.pid, milterWorker(floor.goMilterAddr, msg, true))
						printRow(r, c, b, 0)
					}
				}
				if !strings.Contains(p.name, *only) {
					continue
				}
				r, c, b := measure(alg.dual, "dkimd "+p.name+" "+label, *concurrency, p.pid, p.worker)
				printRow(r, c, b, odRate)
			}
		}
	}
}

// ed25519Core prints the whole DKIM signature of a 2 KB message with an
// Ed25519 key alone (dkimd's signing core: header parse, h= selection,
// relaxed canonicalization, body hash, the field) beside bare
// ed25519.Sign, interleaved. dkimd never signs with Ed25519 alone (RFC 8463
// keys go with an RSA one, docs/decisions.md), so this is the Ed25519
// share of a dual signature, measured where it can be seen.
func ed25519Core(e *env, bareEd func() (func() error, func())) {
	msg := signertest.Message(edDom, 2<<10)
	i := bytes.Index(msg, []byte("\r\n\r\n"))
	head, body := msg[:i+4], msg[i+4:]
	core := func() (func() error, func()) {
		var h dkim.Header
		bh := dkim.NewBodyHash()
		var list []string
		var data, sum []byte
		return func() error {
			if err := h.Parse(head); err != nil {
				return err
			}
			list, data = h.Select(list[:0], data[:0])
			bh.Reset()
			if _, err := bh.Write(body); err != nil {
				return err
			}
			sum = bh.Sum(sum[:0])
			_, err := dkim.Sign(data, sum, &dkim.Signature{Domain: edDom, Selector: "selector1-ed25519", Key: e.edKey, Time: time.Now(), Headers: list})
			return err
		}, nil
	}
	c, b := startPool("core", *concurrency, core), startPool("bare", *concurrency, bareEd)
	var cr, br result
	for range max(4, int(4**duration/time.Second)) {
		c.timed(250*time.Millisecond, 0, &cr)
		b.timed(250*time.Millisecond, 0, &br)
	}
	c.close(&cr)
	b.close(&br)
	if cr.failures > 0 {
		log.Fatalf("Ed25519 through the signing core failed %d times", cr.failures)
	}
	fmt.Printf("%-44s %12.0f/s %12.2f of bare Ed25519 in the same slices\n\n", "dkimd core, Ed25519 alone, 2KB message", cr.cpuRate(), cr.cpuRate()/br.cpuRate())
}

// speed adds up runs of `openssl speed -seconds 1 -mr ALG`: the signatures
// it made and the CPU time it counted for them (its own user time, which
// the machine-readable +R line gives to 10 ms).
type speed struct {
	sigs int
	cpu  float64
}

func (s *speed) rate() float64 { return float64(s.sigs) / s.cpu }

func (s *speed) run(alg string) {
	out, err := exec.Command("openssl", "speed", "-seconds", "1", "-mr", alg).CombinedOutput()
	if err != nil {
		log.Fatalf("openssl speed %s: %v\n%s", alg, err, out)
	}
	// +R1:count:2048:seconds for RSA signing, +R8:count:253:Ed25519:seconds
	// for Ed25519.
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) < 4 || (f[0] != "+R1" && f[0] != "+R8") {
			continue
		}
		n, err1 := strconv.Atoi(f[1])
		t, err2 := strconv.ParseFloat(f[len(f)-1], 64)
		if err1 != nil || err2 != nil {
			break
		}
		s.sigs += n
		s.cpu += t
		return
	}
	log.Fatalf("openssl speed %s: no signing line in\n%s", alg, out)
}

func printRow(r result, ceiling, bare, opendkim float64) {
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
	fmt.Printf("%-34s %7.0f/s %9s %9s %9.0f/s %9.0f/s %10.2f %9.0f/s %8.2f %11s %11s%s\n", r.name, r.rate(), r.pct(0.5).Round(10*time.Microsecond),
		r.pct(0.99).Round(10*time.Microsecond), r.cpuRate(), ceiling, r.cpuRate()/ceiling, bare, r.cpuRate()/bare, vsOD, all, fail)
}

// server is a process under test.
type server struct {
	pid                       int
	addr, httpURL, milterAddr string
	goMilterAddr              string // the transport floor's go-milter server
	stop                      func()
}

func freePort() int {
	port, err := benchproc.FreePort()
	must(err)
	return port
}

// startDkimd builds and runs `dkimd serve` on the benchmark's store (the
// SQLite file and key-encryption key in dir), with only the sign endpoint
// and the milter listening.
func startDkimd(dir, rsaBackend string) server {
	bin := filepath.Join(dir, "dkimd")
	build := exec.Command("go", "build", "-o", bin, "./cmd/dkimd")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	must(build.Run())
	signAddr := fmt.Sprintf("127.0.0.1:%d", freePort())
	milterAddr := fmt.Sprintf("127.0.0.1:%d", freePort())
	// The API cannot be disabled; it listens on a spare port, idle.
	cmd := exec.Command(bin, "serve", "--data-dir", dir, "--zone", zoneName,
		"--api-addr", fmt.Sprintf("127.0.0.1:%d", freePort()), "--dns-addr", "", "--ops-addr", "",
		"--sign-addr", signAddr, "--milter-addr", milterAddr, "--key-pool-size", "0", "--log-level", "warn",
		"--rsa-backend", rsaBackend)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = diesWithBench()
	if *serverEnv != "" {
		cmd.Env = append(os.Environ(), strings.Fields(*serverEnv)...)
	}
	must(cmd.Start())
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
	if err := benchproc.WaitListening(signAddr, milterAddr); err != nil {
		stop()
		log.Fatalf("dkimd serve: %v", err)
	}
	return server{pid: cmd.Process.Pid, httpURL: "http://" + signAddr + "/v1/sign", milterAddr: milterAddr, stop: stop}
}

// diesWithBench has a server the benchmark starts killed when the
// benchmark dies (log.Fatal, a signal), so that no orphan keeps its ports,
// its CPU or a lock its parent held.
func diesWithBench() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
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
	cmd.SysProcAttr = diesWithBench()
	must(cmd.Start())
	stop := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := benchproc.WaitListening(addr); err != nil {
		stop()
		log.Printf("OpenDKIM comparison skipped: %v", err)
		return none
	}
	return server{pid: cmd.Process.Pid, addr: addr, stop: stop}
}
