// Command postfix puts dkimd's milter and OpenDKIM (Debian opendkim) behind
// the same real Postfix and prints, for RSA-2048 on 2 KB and 100 KB
// messages, how many messages each signs per second of its own CPU time,
// and the ratio dkimd/OpenDKIM, from one run.
// Run it with `make bench-postfix`; see docs/performance.md, "Signing".
//
// One private Postfix instance (its own config and queue under /dev/shm,
// run as root) has two smtpd listeners on loopback ports, each with its
// own smtpd_milters (master.cf -o overrides): one points at OpenDKIM, the
// other at dkimd serve. Both signers are wired up before the first message
// and stay so, so the run can switch between them every slice without a
// postfix reload (which would leave running smtpd processes on the old
// milter until they exit) and the two rows share the same slices of the
// machine's drift. Mail goes to Postfix's discard transport, except a
// sample, which Postfix relays to a small SMTP sink in this process where
// every DKIM-Signature is verified with go-msgauth.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"dkimd/bench/internal/benchproc"
	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
	"dkimd/internal/provision"
	"dkimd/internal/sealbox"
	"dkimd/internal/signer/signertest"
)

const (
	zoneName = "oxcloud.zone"
	brand    = "bench"
	rsaDom   = "rsa.bench.example"
	// Recipients in sampleDom are relayed to the sink, all others
	// discarded.
	sampleDom = "sample.bench.invalid"
)

var (
	duration    = flag.Duration("duration", 10*time.Second, "how long each signer is measured at each size")
	sliceLen    = flag.Duration("slice", time.Second, "the signers take turns in slices of this length")
	clients     = flag.Int("c", 16, "concurrent SMTP clients (each one SMTP session) per signer")
	sizesFlag   = flag.String("sizes", "2,100", "message sizes in KB, comma-separated")
	sampleEvery = flag.Int("sample", 50, "every Nth message of a client goes to the sink and is verified")
	opendkimBin = flag.String("opendkim", "/usr/sbin/opendkim", "OpenDKIM binary")
	rsaBackend  = flag.String("rsa-backend", "auto", "--rsa-backend of dkimd serve")
)

// cleanups run, last first, at the end and on a fatal error or a signal,
// so that no Postfix, dkimd or opendkim outlives the benchmark.
var (
	cleanupMu sync.Mutex
	cleanups  []func()
)

func atExit(f func()) {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanups = append(cleanups, f)
}

func runCleanups() {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanups = nil
}

func fatalf(format string, args ...any) {
	log.Printf(format, args...)
	runCleanups()
	os.Exit(1)
}

func must(err error) {
	if err != nil {
		fatalf("%v", err)
	}
}

// procCPU is the CPU time of one process (all its threads).
func procCPU(pid int) time.Duration {
	self, _, _, err := benchproc.Stat(pid)
	if err != nil {
		fatalf("process %d: %v", pid, err)
	}
	return self
}

// treeCPU is the CPU time of a process tree: every live process under root,
// and what the reaped ones used (the cutime of their parent). A child that
// exits between two readings moves its time from the first sum to its
// parent's cutime, so the difference of two readings stays right.
func treeCPU(root int) time.Duration {
	entries, err := os.ReadDir("/proc")
	must(err)
	type proc struct {
		ppid int
		cpu  time.Duration
	}
	procs := make(map[int]proc)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		self, children, ppid, err := benchproc.Stat(pid)
		if err != nil {
			continue // gone
		}
		procs[pid] = proc{ppid, self + children}
	}
	var sum time.Duration
	for pid, p := range procs {
		for q := pid; q > 1; q = procs[q].ppid {
			if q == root {
				sum += p.cpu
				break
			}
			if _, ok := procs[q]; !ok {
				break
			}
		}
	}
	return sum
}

func freePort() int {
	port, err := benchproc.FreePort()
	must(err)
	return port
}

// env is the benchmark's store, with one active domain with an RSA-2048
// key, and that key for OpenDKIM and for the sink's verification.
type env struct {
	dir      string // dkimd's data dir (store, key-encryption key)
	odDir    string // OpenDKIM's config, key and pid file
	rsaKey   *rsa.PrivateKey
	selector string // dkimd's selector of the key
}

func setup(dir, odDir string) *env {
	ctx := context.Background()
	store, err := keystore.OpenSQLite(dir)
	must(err)
	defer store.Close()
	_, err = store.Migrate(ctx)
	must(err)
	box, _, _, err := sealbox.LoadOrCreate(dir)
	must(err)
	svc := &provision.Service{Store: store, Box: box, Keys: provision.DirectGenerator{}, Zone: zoneName, Now: time.Now}
	actor := provision.Actor{Name: "bench"}
	_, err = svc.CreateBrand(ctx, brand, actor)
	must(err)
	must(svc.AddMaildomain(ctx, brand, rsaDom, actor))
	_, keys, _, err := svc.CreateDomain(ctx, brand, rsaDom, provision.DomainOptions{}, actor)
	must(err)
	must(store.Update(ctx, func(tx keystore.Tx) error {
		dom, err := tx.Domain(ctx, rsaDom)
		if err != nil {
			return err
		}
		// Active, and not due for a DNS check during the run: the
		// benchmark has no customer DNS, and a failed check would turn
		// the domain to fallback signing.
		dom.Status = keystore.StatusActive
		dom.NextCheckAt = time.Now().Add(365 * 24 * time.Hour)
		_, err = tx.UpdateDomain(ctx, dom)
		return err
	}))
	e := &env{dir: dir, odDir: odDir}
	for _, k := range keys {
		if k.State != keystore.StateActive || k.Algorithm != dkimkey.RSA {
			continue
		}
		priv, err := dkimkey.Open(box, k.KEKID, k.SealedPrivateKey, sealbox.AssociatedData(string(k.OwnerKind), k.Owner, k.Selector))
		must(err)
		e.rsaKey, e.selector = priv.(*rsa.PrivateKey), k.Selector
	}
	if e.rsaKey == nil {
		fatalf("setup: no active RSA key for %s", rsaDom)
	}
	if e.rsaKey.N.BitLen() != 2048 {
		fatalf("setup: the RSA key has %d bits, want 2048", e.rsaKey.N.BitLen())
	}
	return e
}

// signerProc is a signer under test.
type signerProc struct {
	name, milterAddr string
	pid              int
}

// start runs cmd as a signer that listens on milterAddr; it dies with this
// process (Pdeathsig) and is stopped at exit.
func start(name, milterAddr string, cmd *exec.Cmd) signerProc {
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(cmd.Start())
	atExit(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	if err := benchproc.WaitListening(milterAddr); err != nil {
		fatalf("%s: %v", name, err)
	}
	return signerProc{name: name, milterAddr: milterAddr, pid: cmd.Process.Pid}
}

// startDkimd builds and runs `dkimd serve` on the benchmark's store with
// the milter listening; the API cannot be disabled and idles on a spare
// port.
func startDkimd(e *env) signerProc {
	bin := filepath.Join(filepath.Dir(e.dir), "dkimd-bin")
	build := exec.Command("go", "build", "-o", bin, "./cmd/dkimd")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	must(build.Run())
	milterAddr := fmt.Sprintf("127.0.0.1:%d", freePort())
	return start("dkimd", milterAddr, exec.Command(bin, "serve", "--data-dir", e.dir, "--zone", zoneName,
		"--api-addr", fmt.Sprintf("127.0.0.1:%d", freePort()), "--dns-addr", "", "--ops-addr", "", "--sign-addr", "",
		"--milter-addr", milterAddr, "--key-pool-size", "0", "--log-level", "warn", "--rsa-backend", *rsaBackend))
}

// startOpenDKIM runs opendkim in the foreground with the same RSA key,
// canonicalization and header list as dkimd signs with.
func startOpenDKIM(e *env) signerProc {
	if _, err := os.Stat(*opendkimBin); err != nil {
		fatalf("OpenDKIM: %v (apt-get install opendkim)", err)
	}
	keyFile := filepath.Join(e.odDir, "opendkim.key")
	must(os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(e.rsaKey)}), 0o600))
	port := freePort()
	conf := filepath.Join(e.odDir, "opendkim.conf")
	must(os.WriteFile(conf, []byte(fmt.Sprintf(`Syslog no
Mode s
Domain %s
Selector %s
KeyFile %s
Canonicalization relaxed/relaxed
SignatureAlgorithm rsa-sha256
SignHeaders From,To,Cc,Subject,Date,Message-ID,Reply-To,MIME-Version,Content-Type,In-Reply-To,References,List-Unsubscribe,List-Unsubscribe-Post
OversignHeaders From
Socket inet:%d@127.0.0.1
PidFile %s
RequireSafeKeys no
`, rsaDom, e.selector, keyFile, port, filepath.Join(e.odDir, "opendkim.pid"))), 0o644))
	return start("OpenDKIM", fmt.Sprintf("127.0.0.1:%d", port), exec.Command(*opendkimBin, "-f", "-x", conf))
}

// postfix is the private Postfix instance.
type postfix struct {
	dir   string
	smtpd map[string]string // signer name: the address of its smtpd listener
}

func (p *postfix) conf() string { return filepath.Join(p.dir, "conf") }

func (p *postfix) log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return "--- end of postfix maillog ---\n" + string(b)
}

func (p *postfix) masterPID() int {
	b, err := os.ReadFile(filepath.Join(p.dir, "queue", "pid", "master.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// queued is how many messages wait in Postfix's queue.
func (p *postfix) queued() int {
	n := 0
	for _, q := range []string{"maildrop", "incoming", "active", "deferred"} {
		filepath.WalkDir(filepath.Join(p.dir, "queue", q), func(_ string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				n++
			}
			return nil
		})
	}
	return n
}

// drain waits until Postfix has delivered (or discarded) what it accepted,
// so that its CPU for a slice's messages falls in that slice.
func (p *postfix) drain() {
	for deadline := time.Now().Add(10 * time.Second); p.queued() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			log.Printf("postfix: %d messages still queued after 10s", p.queued())
			return
		}
	}
}

// startPostfix starts Postfix with its own configuration and queue (on
// tmpfs when there is one: the figures are about the signers, not the
// disk's fsync), one smtpd listener per signer with smtpd_milters pointing
// at it, everything discarded but sampleDom, which is relayed to sinkAddr.
func startPostfix(signers []signerProc, sinkAddr string) *postfix {
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	// Postfix's daemons run as the postfix user and must reach the queue,
	// so every directory on the path is 0755.
	dir, err := os.MkdirTemp(base, "dkimd-bench-postfix-")
	must(err)
	p := &postfix{dir: dir, smtpd: make(map[string]string)}
	conf, queue, data := filepath.Join(dir, "conf"), filepath.Join(dir, "queue"), filepath.Join(dir, "data")
	for _, d := range []string{dir, conf, queue, data} {
		must(os.MkdirAll(d, 0o755))
		must(os.Chmod(d, 0o755))
	}
	if out, err := exec.Command("chown", "postfix", data).CombinedOutput(); err != nil {
		fatalf("chown: %v %s", err, out)
	}
	_, sinkPort, err := net.SplitHostPort(sinkAddr)
	must(err)
	// milter_default_action = tempfail: a message a signer fails on is
	// refused, and counted as a failure, rather than passed unsigned.
	// in_flow_delay = 0: Postfix would otherwise slow the clients down
	// whenever the queue manager lags, which is Postfix's cost, not the
	// signers'.
	main := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s
data_directory = %[2]s
maillog_file = %[3]s
maillog_file_prefixes = %[4]s
mail_owner = postfix
setgid_group = postdrop
myhostname = mta.bench.invalid
mydomain = bench.invalid
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_tls_security_level = none
smtpd_tls_security_level = none
default_transport = discard
transport_maps = inline:{%[6]s=smtp:[127.0.0.1]:%[5]s}
in_flow_delay = 0s
milter_default_action = tempfail
`, queue, data, filepath.Join(dir, "maillog"), dir, sinkPort, sampleDom)
	var master strings.Builder
	for _, s := range signers {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort())
		p.smtpd[s.name] = addr
		fmt.Fprintf(&master, "%s inet n - n - - smtpd -o syslog_name=postfix-%s -o smtpd_milters=inet:%s\n", addr, strings.ToLower(s.name), s.milterAddr)
	}
	master.WriteString(`pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`)
	must(os.WriteFile(filepath.Join(conf, "main.cf"), []byte(main), 0o644))
	must(os.WriteFile(filepath.Join(conf, "master.cf"), []byte(master.String()), 0o644))
	atExit(func() {
		pid := p.masterPID()
		if out, err := exec.Command("postfix", "-c", conf, "stop").CombinedOutput(); err != nil {
			log.Printf("postfix stop: %v %s", err, out)
		}
		// Wait for the master to go, so that no daemon writes into the
		// directory while it is removed.
		for deadline := time.Now().Add(10 * time.Second); pid > 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
				break
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			log.Printf("remove %s: %v", dir, err)
		}
	})
	if out, err := exec.Command("postfix", "-c", conf, "start").CombinedOutput(); err != nil {
		fatalf("postfix start: %v %s\n%s", err, out, p.log())
	}
	for _, addr := range p.smtpd {
		if err := benchproc.WaitListening(addr); err != nil {
			fatalf("postfix smtpd: %v\n%s", err, p.log())
		}
	}
	if p.masterPID() == 0 {
		fatalf("postfix: no master.pid\n%s", p.log())
	}
	return p
}

// sink is the SMTP server Postfix relays the sample to; it keeps each
// message with its recipient.
type sink struct {
	addr string
	mu   sync.Mutex
	msgs []delivered
}

type delivered struct {
	rcpt string
	msg  []byte
}

func startSink() *sink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	s := &sink{addr: ln.Addr().String()}
	atExit(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *sink) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	say := func(line string) bool {
		_, err := c.Write([]byte(line + "\r\n"))
		return err == nil
	}
	if !say("220 sink.bench.invalid ESMTP") {
		return
	}
	var rcpt string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			say("250-sink.bench.invalid\r\n250 8BITMIME")
		case strings.HasPrefix(cmd, "RCPT TO:"):
			rcpt = strings.Trim(strings.TrimSpace(line)[len("RCPT TO:"):], "<> ")
			say("250 ok")
		case strings.HasPrefix(cmd, "HELO"), strings.HasPrefix(cmd, "MAIL"), strings.HasPrefix(cmd, "RSET"), strings.HasPrefix(cmd, "NOOP"):
			say("250 ok")
		case cmd == "DATA":
			say("354 go ahead")
			var msg bytes.Buffer
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				msg.WriteString(strings.TrimPrefix(l, ".")) // dot-unstuffing
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, delivered{rcpt, msg.Bytes()})
			s.mu.Unlock()
			say("250 queued")
		case cmd == "QUIT":
			say("221 bye")
			return
		default:
			say("502 not implemented")
		}
	}
}

func (s *sink) take() []delivered {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.msgs
	s.msgs = nil
	return m
}

// pool is a signer's SMTP clients, each holding one SMTP session to the
// signer's smtpd across the slices of a measurement and idle between them.
type pool struct {
	name    string
	starts  []chan time.Time // one per client: send until this time
	slice   sync.WaitGroup   // clients still in the current slice
	exited  sync.WaitGroup
	ops     atomic.Int64
	sampled atomic.Int64 // messages accepted for the sink
	fails   atomic.Int64
}

func startPool(name, smtpdAddr string, msg []byte) *pool {
	p := &pool{name: name}
	for i := range *clients {
		start := make(chan time.Time)
		p.starts = append(p.starts, start)
		p.exited.Add(1)
		go func() {
			defer p.exited.Done()
			var c *smtp.Client
			defer func() {
				if c != nil {
					_ = c.Quit()
				}
			}()
			n := 0
			for stop := range start {
				for time.Now().Before(stop) {
					n++
					sample := n%*sampleEvery == 1%*sampleEvery
					rcpt := fmt.Sprintf("bob%d@example.net", i)
					if sample {
						rcpt = fmt.Sprintf("%s-%d@%s", strings.ToLower(name), i, sampleDom)
					}
					err := send(&c, smtpdAddr, rcpt, msg)
					if err != nil {
						if c != nil {
							c.Close()
							c = nil
						}
						if p.fails.Add(1) <= 3 {
							log.Printf("%s: %v", name, err)
						}
						time.Sleep(10 * time.Millisecond)
						continue
					}
					p.ops.Add(1)
					if sample {
						p.sampled.Add(1)
					}
				}
				p.slice.Done()
			}
		}()
	}
	return p
}

// send submits one message over *c, dialling first when there is no
// session.
func send(c **smtp.Client, addr, rcpt string, msg []byte) error {
	if *c == nil {
		cl, err := smtp.Dial(addr)
		if err != nil {
			return err
		}
		if err := cl.Hello("client.bench.invalid"); err != nil {
			cl.Close()
			return err
		}
		*c = cl
	}
	if err := (*c).Mail("alice@" + rsaDom); err != nil {
		return err
	}
	if err := (*c).Rcpt(rcpt); err != nil {
		return err
	}
	w, err := (*c).Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	return w.Close()
}

// measurement is what one signer did at one size.
type measurement struct {
	ops      int
	elapsed  time.Duration
	signer   time.Duration // CPU time of the signer process
	postfix  time.Duration // CPU time of the whole Postfix instance
	sampled  int           // messages sent to the sink, the warm-up's too
	verified int
	failures int
}

func (m measurement) perCPU() float64 { return float64(m.ops) / m.signer.Seconds() }

// timed runs the pool's clients for d, then lets Postfix empty its queue,
// and adds what was done and what it cost to m.
func (p *pool) timed(d time.Duration, signerPID, masterPID int, pf *postfix, m *measurement) {
	sig0, pf0, ops0 := procCPU(signerPID), treeCPU(masterPID), p.ops.Load()
	start := time.Now()
	stop := start.Add(d)
	p.slice.Add(len(p.starts))
	for _, s := range p.starts {
		s <- stop
	}
	p.slice.Wait()
	m.elapsed += time.Since(start)
	m.ops += int(p.ops.Load() - ops0)
	// The signer's work for a message ends before Postfix answers DATA;
	// Postfix's own goes on until the message has left the queue.
	m.signer += procCPU(signerPID) - sig0
	pf.drain()
	m.postfix += treeCPU(masterPID) - pf0
}

func (p *pool) close(m *measurement) {
	for _, s := range p.starts {
		close(s)
	}
	p.exited.Wait()
	m.failures, m.sampled = int(p.fails.Load()), int(p.sampled.Load())
}

// verifier checks a sampled message: it must carry exactly one
// DKIM-Signature, by rsaDom, that verifies against the benchmark's key.
type verifier struct {
	records map[string]string
}

func newVerifier(e *env) *verifier {
	der, err := x509.MarshalPKIXPublicKey(&e.rsaKey.PublicKey)
	must(err)
	return &verifier{records: map[string]string{
		e.selector + "._domainkey." + rsaDom: "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der),
	}}
}

func (v *verifier) check(msg []byte) error {
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if r, ok := v.records[name]; ok {
				return []string{r}, nil
			}
			return nil, fmt.Errorf("no TXT record %s", name)
		},
	})
	if err != nil {
		return err
	}
	if len(vs) != 1 {
		return fmt.Errorf("%d DKIM-Signature fields, want 1", len(vs))
	}
	if vs[0].Err != nil {
		return vs[0].Err
	}
	if vs[0].Domain != rsaDom {
		return fmt.Errorf("signed by d=%s, want %s", vs[0].Domain, rsaDom)
	}
	return nil
}

func main() {
	flag.Parse()
	log.SetFlags(0)
	if *sampleEvery < 1 || *clients < 1 {
		fatalf("-sample and -c must be at least 1")
	}
	if os.Geteuid() != 0 {
		fatalf("a private Postfix instance must be started as root")
	}
	if _, err := exec.LookPath("postfix"); err != nil {
		fatalf("postfix: %v (apt-get install postfix)", err)
	}
	// The signers die with the thread that started them (Pdeathsig): keep
	// main on one thread.
	runtime.LockOSThread()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fatalf("%v", s)
	}()
	tmp, err := os.MkdirTemp("", "dkimd-bench-postfix-")
	must(err)
	atExit(func() { os.RemoveAll(tmp) })
	dir, odDir := filepath.Join(tmp, "dkimd"), filepath.Join(tmp, "opendkim")
	must(os.Mkdir(dir, 0o700))
	must(os.Mkdir(odDir, 0o700))
	e := setup(dir, odDir)
	od := startOpenDKIM(e)
	dk := startDkimd(e)
	signers := []signerProc{od, dk}
	sk := startSink()
	pf := startPostfix(signers, sk.addr)
	masterPID := pf.masterPID()
	v := newVerifier(e)
	out, _ := exec.Command("postconf", "-c", pf.conf(), "-h", "mail_version").Output()
	fmt.Printf("dkimd behind Postfix benchmark: Postfix %s, %s; RSA-2048, %d SMTP clients per signer, %v per signer and size in slices of %v (the signers take turns), dkimd --rsa-backend %s\n\n",
		strings.TrimSpace(string(out)), *opendkimBin, *clients, *duration, *sliceLen, *rsaBackend)

	fmt.Println("rate: messages Postfix accepted (DATA answered 250, signed by the milter) per second of wall time.")
	fmt.Println("signer CPU: CPU-seconds of the signer process (dkimd serve; opendkim), from /proc/<pid>/stat.")
	fmt.Println("per CPU-s: messages per signer CPU-second. Postfix CPU: the whole instance's, for reference.")
	fmt.Println("verified: sampled messages relayed to the sink whose DKIM-Signature verifies (go-msgauth).")
	fmt.Printf("%-22s %8s %9s %11s %11s %12s %13s %10s %10s\n", "signer / message", "messages", "rate", "signer CPU", "per CPU-s", "Postfix CPU", "Postfix/msg", "verified", "failures")
	var failed []string
	sizes, err := benchproc.MessageSizes(*sizesFlag)
	must(err)
	for _, size := range sizes {
		msg := signertest.Message(rsaDom, size)
		pools := make([]*pool, len(signers))
		ms := make([]measurement, len(signers))
		for i, s := range signers {
			pools[i] = startPool(s.name, pf.smtpd[s.name], msg)
		}
		// Warm up: sessions open, smtpd and cleanup processes forked, the
		// milter connections made.
		for i, s := range signers {
			var warm measurement
			pools[i].timed(*sliceLen/2, s.pid, masterPID, pf, &warm)
		}
		for range max(1, int(*duration / *sliceLen)) {
			for i, s := range signers {
				pools[i].timed(*sliceLen, s.pid, masterPID, pf, &ms[i])
			}
		}
		for i := range signers {
			pools[i].close(&ms[i])
		}
		// The sample of each signer arrives at the sink within moments of
		// the queue draining.
		want := 0
		for i := range signers {
			want += ms[i].sampled
		}
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			sk.mu.Lock()
			n := len(sk.msgs)
			sk.mu.Unlock()
			if n >= want && pf.queued() == 0 {
				break
			}
		}
		for _, d := range sk.take() {
			i := -1
			for j, s := range signers {
				if strings.HasPrefix(d.rcpt, strings.ToLower(s.name)+"-") {
					i = j
				}
			}
			if i < 0 {
				fatalf("sink: message for %q, which no signer's client sent", d.rcpt)
			}
			if err := v.check(d.msg); err != nil {
				failed = append(failed, fmt.Sprintf("%s %dKB: %v", signers[i].name, size>>10, err))
				continue
			}
			ms[i].verified++
		}
		for i, s := range signers {
			m := ms[i]
			fmt.Printf("%-22s %8d %7.0f/s %10.2fs %9.0f/s %11.2fs %11.0fµs %5d/%-4d %10d\n", fmt.Sprintf("%s %dKB", s.name, size>>10),
				m.ops, float64(m.ops)/m.elapsed.Seconds(), m.signer.Seconds(), m.perCPU(), m.postfix.Seconds(),
				float64(m.postfix.Microseconds())/float64(max(1, m.ops)), m.verified, m.sampled, m.failures)
			if m.failures > 0 {
				failed = append(failed, fmt.Sprintf("%s %dKB: %d messages refused", s.name, size>>10, m.failures))
			}
			if m.verified == 0 || m.verified < m.sampled {
				failed = append(failed, fmt.Sprintf("%s %dKB: %d of %d sampled messages verified", s.name, size>>10, m.verified, m.sampled))
			}
		}
		fmt.Printf("%-22s %60.2fx\n", fmt.Sprintf("dkimd/OpenDKIM %dKB", size>>10), ms[1].perCPU()/ms[0].perCPU())
	}
	if len(failed) > 0 {
		log.Print(pf.log())
	}
	runCleanups()
	if len(failed) > 0 {
		for _, f := range failed {
			log.Print(f)
		}
		log.Fatal(errors.New("some sampled messages did not verify"))
	}
}
