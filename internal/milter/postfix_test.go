package milter_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/logtest"
	"dkimd/internal/signer/signertest"
)

// TestPostfixSignsThroughMilter runs a private instance of Debian's Postfix
// on loopback ports with the shipped main.cf snippet pointing at our milter,
// submits mail with swaks (smtpd_milters) and sendmail(1) (non_smtpd_milters),
// lets Postfix relay it to a small SMTP sink, and verifies what arrives with
// go-msgauth and dkimpy through dkimd's DNS.
func TestPostfixSignsThroughMilter(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: skipped with -short")
	}
	requirePostfix(t)
	signertest.RequireDkimpy(t)
	f := signertest.New(t)
	var milterLog logtest.Buffer
	milterAddr := startMilterLog(t, f, prometheus.NewRegistry(),
		slog.New(slog.NewJSONHandler(&milterLog, &slog.HandlerOptions{Level: slog.LevelDebug})))
	sink := startSink(t)
	smtpdAddr := freeAddr(t)
	snippet, err := os.ReadFile("../../deploy/postfix/main.cf.snippet")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(snippet, []byte("inet:127.0.0.1:8891")) {
		t.Fatalf("the shipped snippet no longer points at 127.0.0.1:8891:\n%s", snippet)
	}
	pf := startPostfix(t, smtpdAddr, sink.addr,
		strings.ReplaceAll(string(snippet), "inet:127.0.0.1:8891", "inet:"+milterAddr))

	type mail struct {
		via    string // smtp (swaks to smtpd) or sendmail (pickup)
		from   string
		d      []string // the signatures expected, by d=
		signed bool
	}
	cases := []mail{
		{"smtp", signertest.AlignedEd, []string{signertest.AlignedEd, signertest.AlignedEd}, true},
		{"smtp", signertest.FallbackRSA, []string{signertest.Brand + "." + signertest.Zone}, true},
		{"smtp", signertest.Unknown, nil, false},
	}
	for i, c := range cases {
		out, err := exec.Command("swaks", "--server", smtpdAddr, "--helo", "client.dkimd-test.invalid",
			"--from", "alice@"+c.from, "--to", fmt.Sprintf("bob%d@example.net", i),
			"--header", "From: Alice <alice@"+c.from+">",
			"--header", fmt.Sprintf("Subject: postfix e2e %d, Grüße", i),
			"--header", "List-Unsubscribe: <https://"+c.from+"/u/1>",
			"--body", "Hello through Postfix.\n\nA second paragraph with trailing space   \n",
		).CombinedOutput()
		if err != nil {
			t.Fatalf("swaks: %v\n%s\n%s", err, out, pf.log())
		}
	}
	// Local submission through sendmail(1): pickup, then non_smtpd_milters.
	local := "From: Alice <alice@" + signertest.AlignedRSA + ">\nTo: carol@example.net\nSubject: local submission\n\nSubmitted with sendmail(1).\n"
	sm := exec.Command("/usr/sbin/sendmail", "-C", pf.conf(), "-f", "alice@"+signertest.AlignedRSA, "carol@example.net")
	sm.Stdin = strings.NewReader(local)
	if out, err := sm.CombinedOutput(); err != nil {
		t.Fatalf("sendmail: %v\n%s\n%s", err, out, pf.log())
	}
	cases = append(cases, mail{"sendmail", signertest.AlignedRSA, []string{signertest.AlignedRSA}, true})
	got := sink.wait(t, len(cases), 60*time.Second, pf.log)
	wire := make(map[string][]byte)
	for _, c := range cases {
		var msg []byte
		for _, m := range got {
			if bytes.Contains(m, []byte("From: Alice <alice@"+c.from+">")) {
				msg = m
			}
		}
		if msg == nil {
			t.Fatalf("no message from %s arrived; got %d messages\n%s", c.from, len(got), pf.log())
		}
		t.Run(c.via+"/"+c.from, func(t *testing.T) {
			n := bytes.Count(msg, []byte("\r\nDKIM-Signature:"))
			if bytes.HasPrefix(msg, []byte("DKIM-Signature:")) {
				n++
			}
			if n != len(c.d) {
				t.Fatalf("%d DKIM-Signature fields, want %d:\n%s", n, len(c.d), msg)
			}
			if !c.signed {
				return
			}
			t.Logf("delivered:\n%.700s", msg)
			vs := signertest.VerifyGo(t, f.DNS, msg)
			for i, v := range vs {
				if v.Err != nil || v.Domain != c.d[i] {
					t.Errorf("go-msgauth: d=%s (want %s): %v", v.Domain, c.d[i], v.Err)
				}
			}
			wire[c.from] = msg
		})
	}
	for from, rs := range signertest.VerifyDkimpy(t, f.DNS, wire) {
		for _, r := range rs {
			if !r.OK {
				t.Errorf("dkimpy: mail from %s: d=%s s=%s does not verify %s", from, r.D, r.S, r.Error)
			}
		}
	}
	// Postfix's milter_protocol defaults to 6, with the no-reply options:
	// the milter must have taken them, or each header field costs Postfix
	// a round trip.
	conns := 0
	for line := range strings.Lines(milterLog.String()) {
		var rec struct {
			Msg      string
			Version  int
			Protocol string
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("milter log %q: %v", line, err)
		}
		if rec.Msg != "milter connection" {
			continue
		}
		conns++
		t.Logf("Postfix milter connection: version %d, %s", rec.Version, rec.Protocol)
		if rec.Version != 6 || !strings.Contains(rec.Protocol, "NR_HDR") || !strings.Contains(rec.Protocol, "NR_BODY") {
			t.Errorf("Postfix and the milter agreed on version %d, %s; want 6 with the no-reply options", rec.Version, rec.Protocol)
		}
	}
	if conns == 0 {
		t.Errorf("no milter connection logged:\n%s", milterLog.String())
	}
}

func requirePostfix(t *testing.T) {
	t.Helper()
	signertest.RequireTool(t, func() error {
		for _, tool := range []string{"/usr/sbin/postfix", "swaks"} {
			if _, err := exec.LookPath(tool); err != nil {
				return err
			}
		}
		if os.Geteuid() != 0 {
			return fmt.Errorf("a private Postfix instance must be started as root")
		}
		return nil
	}, "Debian postfix and swaks, run as root")
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

type postfix struct {
	dir string
}

func (p *postfix) conf() string { return filepath.Join(p.dir, "conf") }

func (p *postfix) log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
	return "--- postfix maillog ---\n" + string(b)
}

// startPostfix starts Postfix with its own configuration, queue and data
// directories, listening on smtpdAddr and relaying everything to relayAddr.
func startPostfix(t *testing.T, smtpdAddr, relayAddr, extra string) *postfix {
	t.Helper()
	// Not t.TempDir: Postfix's daemons run as the postfix user and must be
	// able to reach the queue, so every directory on the path is 0755.
	dir, err := os.MkdirTemp("", "dkimd-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	p := &postfix{dir: dir}
	conf, queue, data := filepath.Join(dir, "conf"), filepath.Join(dir, "queue"), filepath.Join(dir, "data")
	for _, d := range []string{dir, conf, queue, data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("chown", "postfix", data).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
	main := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s
data_directory = %[2]s
maillog_file = %[3]s
maillog_file_prefixes = %[4]s
mail_owner = postfix
setgid_group = postdrop
myhostname = mta.dkimd-test.invalid
mydomain = dkimd-test.invalid
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:%[5]s
smtp_dns_support_level = disabled
smtp_tls_security_level = none
smtpd_tls_security_level = none
`, queue, data, filepath.Join(dir, "maillog"), dir, port(t, relayAddr)) + "\n# deploy/postfix/main.cf.snippet:\n" + extra
	master := smtpdAddr + " inet n - n - - smtpd\n" + `pickup    unix  n       -       n       60      1       pickup
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
`
	for name, content := range map[string]string{"main.cf": main, "master.cf": master} {
		if err := os.WriteFile(filepath.Join(conf, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		pid := p.masterPID()
		if out, err := exec.Command("postfix", "-c", conf, "stop").CombinedOutput(); err != nil {
			t.Logf("postfix stop: %v %s", err, out)
		}
		// Wait for the master to go, so that no daemon writes into the
		// directory while it is removed.
		for deadline := time.Now().Add(10 * time.Second); pid > 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
				break
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("remove %s: %v", dir, err)
		}
	})
	if out, err := exec.Command("postfix", "-c", conf, "start").CombinedOutput(); err != nil {
		t.Fatalf("postfix start: %v %s\n%s", err, out, p.log())
	}
	// Wait until smtpd answers.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", smtpdAddr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("postfix smtpd does not answer on %s\n%s", smtpdAddr, p.log())
		}
	}
	return p
}

func (p *postfix) masterPID() int {
	b, err := os.ReadFile(filepath.Join(p.dir, "queue", "pid", "master.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sink is a minimal SMTP server that keeps what it receives: Postfix's
// relay target.
type sink struct {
	addr string
	mu   sync.Mutex
	msgs [][]byte
	got  chan struct{}
}

func startSink(t *testing.T) *sink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{addr: ln.Addr().String(), got: make(chan struct{}, 100)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				go func() { <-ctx.Done(); c.Close() }()
				s.serve(c)
			}()
		}
	}()
	return s
}

func (s *sink) serve(c net.Conn) {
	r := bufio.NewReader(c)
	say := func(line string) bool {
		_, err := c.Write([]byte(line + "\r\n"))
		return err == nil
	}
	if !say("220 sink.dkimd-test.invalid ESMTP") {
		return
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			say("250-sink.dkimd-test.invalid\r\n250 8BITMIME")
		case strings.HasPrefix(cmd, "HELO"), strings.HasPrefix(cmd, "MAIL"), strings.HasPrefix(cmd, "RCPT"),
			strings.HasPrefix(cmd, "RSET"), strings.HasPrefix(cmd, "NOOP"):
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
			s.msgs = append(s.msgs, msg.Bytes())
			s.mu.Unlock()
			s.got <- struct{}{}
			say("250 queued")
		case cmd == "QUIT":
			say("221 bye")
			return
		default:
			say("502 not implemented")
		}
	}
}

func (s *sink) wait(t *testing.T, n int, timeout time.Duration, log func() string) [][]byte {
	t.Helper()
	deadline := time.After(timeout)
	for i := 0; i < n; i++ {
		select {
		case <-s.got:
		case <-deadline:
			t.Fatalf("%d of %d messages arrived within %v\n%s", i, n, timeout, log())
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.msgs...)
}
