package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"

	"dkimd/internal/logtest"
	"dkimd/internal/milter/miltertest"
)

// milterPacket frames a milter packet: length, code, data.
func milterPacket(code byte, data string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(data)+1)), append([]byte{code}, data...)...)
}

// optNeg is Postfix's option negotiation (milter_protocol = 6).
var optNeg = milterPacket('O', "\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff")

// TestMilterEdges sends a running serve the milter input that used to
// take the process down (issue 13: go-milter panicked on four zero bytes
// and on strings without their NUL, allocated whatever a length prefix
// said, and never timed a session out), then checks that DNS over UDP and
// TCP, the API and a new milter session that signs all still answer.
func TestMilterEdges(t *testing.T) {
	c := cliEnv{t: t, dataDir: t.TempDir()}
	out, stderr, err := c.run("brand", "create", "acme")
	if err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	secret := strings.TrimSpace(out)
	if _, stderr, err := c.run("maildomain", "add", "acme", "spamtrap.dk"); err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	api, dnsAddr, milterAddr, ops := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	logs := &logtest.Buffer{}
	serve := runServe(t, []string{"serve", "--data-dir", c.dataDir, "--api-addr", api, "--dns-addr", dnsAddr,
		"--sign-addr", "", "--milter-addr", milterAddr, "--ops-addr", ops, "--resolver", "127.0.0.1:9",
		"--key-pool-size", "0", "--milter-timeout", "1s"}, noEnv, logs)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("serve never became ready; log:\n%s", logs.String())
		}
		if ended, err := serve.ended(); ended {
			t.Fatalf("serve ended: %v\n%s", err, logs.String())
		}
		if resp, err := http.Get("http://" + ops + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 && listening(api) && listening(milterAddr) {
				break
			}
		}
	}

	hostile := []struct {
		name, reason string
		wire         []byte
	}{
		{"four zero bytes", "zero-length", []byte{0, 0, 0, 0}},
		{"a 4 GiB length prefix", "too-long", []byte{0xff, 0xff, 0xff, 0xff, 'L'}},
		{"a length of 1 MiB and one byte", "too-long", []byte{0x00, 0x10, 0x00, 0x01}},
		{"connect without NUL", "missing-nul", append(optNeg, milterPacket('C', "client.example")...)},
		{"connect without address family", "short", append(optNeg, milterPacket('C', "client.example\x00")...)},
		{"mail without NUL", "missing-nul", append(optNeg, milterPacket('M', "<a@spamtrap.dk>")...)},
		{"rcpt without NUL", "missing-nul", append(optNeg, milterPacket('R', "<b@example.net>")...)},
		{"header without NUL", "missing-nul", append(optNeg, milterPacket('L', "From\x00a@spamtrap.dk")...)},
		{"unknown command", "unknown-command", append(optNeg, milterPacket('Z', "")...)},
		{"body before negotiation", "unexpected-command", milterPacket('B', "x")},
	}
	for _, h := range hostile {
		t.Run("closed: "+h.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", milterAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write(h.wire); err != nil {
				t.Fatal(err)
			}
			if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, conn); err != nil {
				t.Fatalf("the milter did not close the session: %v", err)
			}
		})
	}
	// Idle sessions, silent or stopped inside a packet, are closed after
	// --milter-timeout (1s here), side by side.
	t.Run("idle", func(t *testing.T) { idleSessionsClose(t, milterAddr) })
	if ended, err := serve.ended(); ended {
		t.Fatalf("serve ended: %v\n%s", err, logs.String())
	}

	t.Run("the API answers", func(t *testing.T) {
		resp, body := httpCall(t, "PUT", "http://"+api+"/cloudapi/v2/mail/dkim/acme/spamtrap.dk", "acme", secret, "", nil)
		if resp.StatusCode != 201 {
			t.Fatalf("PUT: %d %s", resp.StatusCode, body)
		}
	})
	txt := "selector1._domainkey.acme.oxcloud.zone."
	for _, network := range []string{"udp", "tcp"} {
		t.Run("DNS answers over "+network, func(t *testing.T) {
			if _, err := lookupTXT(network, dnsAddr, txt); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("a new milter session signs", func(t *testing.T) {
		mc := gomilter.NewClientWithOptions("tcp", milterAddr, gomilter.ClientOptions{
			ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
			ActionMask: miltertest.PostfixActions, ProtocolMask: miltertest.PostfixProtocol,
		})
		sess, err := mc.Session()
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		fields := [][2]string{{"From", "Alice <alice@spamtrap.dk>"}, {"To", "bob@example.net"}, {"Subject", "after the storm"}}
		var msg bytes.Buffer
		for _, f := range fields {
			if _, err := sess.HeaderField(f[0], f[1]); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := sess.HeaderEnd(); err != nil {
			t.Fatal(err)
		}
		body := "Still signing.\r\n"
		mods, act, err := sess.BodyReadFrom(strings.NewReader(body))
		if err != nil || act.Code != gomilter.ActAccept || len(mods) != 1 {
			t.Fatalf("%+v %+v %v, want one signature and accept", mods, act, err)
		}
		msg.WriteString(mods[0].HeaderName + ": " + strings.ReplaceAll(mods[0].HeaderValue, "\n", "\r\n") + "\r\n")
		for _, f := range fields {
			msg.WriteString(f[0] + ": " + f[1] + "\r\n")
		}
		msg.WriteString("\r\n" + body)
		vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg.Bytes()), &dkim.VerifyOptions{
			LookupTXT: func(name string) ([]string, error) { return lookupTXT("tcp", dnsAddr, name) },
		})
		if err != nil || len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "acme.oxcloud.zone" {
			t.Fatalf("verify: %v %+v\n%s", err, vs, msg.Bytes())
		}
	})
	t.Run("each is counted", func(t *testing.T) {
		resp, body := httpCall(t, "GET", "http://"+ops+"/metrics", "", "", "", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("metrics: %d", resp.StatusCode)
		}
		want := map[string]int{}
		for _, h := range hostile {
			want[`dkimd_milter_protocol_errors_total{reason="`+h.reason+`"}`]++
		}
		want["dkimd_milter_idle_timeouts_total"] = 4
		for series, n := range want {
			if got := metricValue(t, body, series); got != n {
				t.Errorf("%s %d, want %d", series, got, n)
			}
		}
	})
}

// lookupTXT asks dkimd's DNS server for a TXT record.
func lookupTXT(network, addr, name string) ([]string, error) {
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		return nil, err
	}
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			return []string{strings.Join(txt.Txt, "")}, nil
		}
	}
	return nil, fmt.Errorf("%s over %s: %s, no TXT", name, network, dns.RcodeToString[r.Rcode])
}

// metricValue is the value of one series in a /metrics page.
func metricValue(t *testing.T, page []byte, series string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(page)
	if m == nil {
		t.Fatalf("no %s in /metrics", series)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return int(v)
}

// idleSessionsClose opens sessions that go quiet, one each way, and waits
// for the milter to close them all.
func idleSessionsClose(t *testing.T, milterAddr string) {
	for _, idle := range []struct {
		name string
		wire []byte
	}{
		{"silent", nil},
		{"negotiated, then silent", optNeg},
		{"half a packet", append(optNeg, milterPacket('L', "Subject\x00hello\x00")[:9]...)},
		{"a 1 MiB length and nothing more", []byte{0x00, 0x10, 0x00, 0x00}},
	} {
		t.Run(idle.name, func(t *testing.T) {
			t.Parallel()
			conn, err := net.Dial("tcp", milterAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write(idle.wire); err != nil {
				t.Fatal(err)
			}
			if err := conn.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, conn); err != nil {
				t.Fatalf("the idle session was not closed: %v", err)
			}
		})
	}
}

// listening reports whether a TCP listener answers on addr.
func listening(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
	}
	return err == nil
}
