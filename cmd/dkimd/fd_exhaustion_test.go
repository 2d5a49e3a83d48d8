//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"dkimd/internal/logtest"
)

// childServeArgs, when set in the environment, makes TestChildServe run
// `dkimd <args>` (JSON) in this process: the test binary is the dkimd
// binary of the test that starts it, with its own descriptor limit.
const childServeArgs = "DKIMD_TEST_CHILD_SERVE"

// TestChildServe is the child of TestDescriptorExhaustion; run alone it
// does nothing.
func TestChildServe(t *testing.T) {
	raw := os.Getenv(childServeArgs)
	if raw == "" {
		t.Skip("the child of TestDescriptorExhaustion")
	}
	var args []string
	if err := json.Unmarshal([]byte(raw), &args); err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := run(ctx, args, func(string) string { return "" }, os.Stdout, os.Stderr); err != nil {
		t.Fatal(err)
	}
}

// A `dkimd serve` in a process of its own, limited to fdLimit descriptors
// (prlimit sets soft and hard, so serve's raise finds nothing to raise),
// is flooded with idle DNS TCP connections until it runs out of
// descriptors: accept fails with EMFILE. Every listener must keep going,
// and once the idle connections are gone answer again: DNS over UDP and
// TCP, the API, the ops endpoint, the sign endpoint and the milter.
func TestDescriptorExhaustion(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit (util-linux) is not installed")
	}
	const fdLimit = 64
	dir := t.TempDir()
	api, dnsAddr, ops, sign, milter := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	args, _ := json.Marshal([]string{"serve", "--data-dir", dir, "--api-addr", api, "--dns-addr", dnsAddr,
		"--ops-addr", ops, "--sign-addr", sign, "--milter-addr", milter, "--resolver", "127.0.0.1:9",
		"--key-pool-size", "0", "--log-level", "info"})
	cmd := exec.Command(prlimit, "--nofile="+itoa(fdLimit)+":"+itoa(fdLimit), "--",
		os.Args[0], "-test.run=^TestChildServe$", "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), childServeArgs+"="+string(args), "GOMAXPROCS=2")
	logs := &logtest.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("the child serve did not stop on SIGTERM")
		}
	})
	alive := func() {
		t.Helper()
		select {
		case err := <-exited:
			t.Fatalf("serve ended: %v\n%s", err, logs.String())
		default:
		}
	}

	listeners := []struct {
		name   string
		answer func() error
	}{
		{"dns udp", func() error { return dnsAnswers("udp", dnsAddr) }},
		{"dns tcp", func() error { return dnsAnswers("tcp", dnsAddr) }},
		{"api", func() error { return httpAnswers("http://" + api + "/openapi.json") }},
		{"ops", func() error { return httpAnswers("http://" + ops + "/readyz") }},
		{"sign", func() error { return httpAnswers("http://" + sign + "/") }},
		{"milter", func() error { return milterAnswers(milter) }},
	}
	waitAll := func(when string) {
		t.Helper()
		for _, l := range listeners {
			var err error
			for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				alive()
				if err = l.answer(); err == nil {
					break
				}
			}
			if err != nil {
				t.Fatalf("%s: %s does not answer: %v\n%s", when, l.name, err, logs.String())
			}
		}
	}
	waitAll("at start")
	if !strings.Contains(logs.String(), `"hard":`+itoa(fdLimit)) {
		t.Fatalf("serve did not log its descriptor limit of %d:\n%s", fdLimit, logs.String())
	}

	// Idle DNS TCP connections, far more than the limit: the kernel
	// completes their handshakes in the listen queue whether or not serve
	// can accept them.
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range 2 * fdLimit {
		c, err := net.Dial("tcp", dnsAddr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "too many open files"); time.Sleep(20 * time.Millisecond) {
		alive()
		if time.Now().After(deadline) {
			t.Fatalf("serve never ran out of descriptors:\n%s", logs.String())
		}
	}
	// While it is out of descriptors, a connection to any other listener
	// waits in its queue and that listener's accept fails too; each must
	// log it and go on. UDP needs no descriptor and is still answered.
	// A descriptor that serve frees for a moment (the store's write probe
	// closing its file) may go to that listener's accept instead: then
	// the next connection is tried.
	for _, addr := range []string{api, ops, sign, milter} {
		failed := "accept tcp " + addr + ": accept4: too many open files"
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), failed); time.Sleep(200 * time.Millisecond) {
			alive()
			if time.Now().After(deadline) {
				t.Fatalf("the listener on %s never failed to accept:\n%s", addr, logs.String())
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("%s: %v\n%s", addr, err, logs.String())
			}
			idle = append(idle, c)
		}
	}
	if err := dnsAnswers("udp", dnsAddr); err != nil {
		t.Fatalf("DNS over UDP while out of descriptors: %v", err)
	}
	alive()

	for _, c := range idle {
		c.Close()
	}
	idle = nil
	waitAll("after the idle connections closed")
	alive()
}

func itoa(n int) string { return strconv.Itoa(n) }

// dnsAnswers asks for the zone's SOA.
func dnsAnswers(network, addr string) error {
	m := new(dns.Msg).SetQuestion("oxcloud.zone.", dns.TypeSOA)
	r, _, err := (&dns.Client{Net: network, Timeout: time.Second}).Exchange(m, addr)
	if err != nil {
		return err
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		return &net.AddrError{Err: "unexpected answer " + r.String(), Addr: addr}
	}
	return nil
}

// httpAnswers is any HTTP response at all: the listener accepted and served.
func httpAnswers(url string) error {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// milterAnswers sends the milter option negotiation (SMFIC_OPTNEG, protocol
// version 6, every action and protocol bit offered) and wants one back.
func milterAnswers(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	pkt := []byte{0, 0, 0, 13, 'O'}
	pkt = binary.BigEndian.AppendUint32(pkt, 6)
	pkt = binary.BigEndian.AppendUint32(pkt, 0x1FF)
	pkt = binary.BigEndian.AppendUint32(pkt, 0x1FFFFF)
	if _, err := c.Write(pkt); err != nil {
		return err
	}
	var hdr [5]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return err
	}
	if hdr[4] != 'O' {
		return &net.AddrError{Err: "milter answered " + string(hdr[4:]) + " to OPTNEG", Addr: addr}
	}
	return nil
}
