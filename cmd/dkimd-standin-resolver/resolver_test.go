package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestResolver: the customers' CNAME is followed into the forwarded zone,
// an edit of the records file is seen at the next query, and a name in
// neither is NXDOMAIN.
func TestResolver(t *testing.T) {
	// dkimd's DNS server, played by a miekg/dns server with one TXT.
	zoneSrv := &dns.Server{Addr: "127.0.0.1:0", Net: "udp", Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		if strings.EqualFold(q.Question[0].Name, "selector1-a-dk._domainkey.oxcloud.zone.") {
			rr, _ := dns.NewRR(`selector1-a-dk._domainkey.oxcloud.zone. 3600 IN TXT "v=DKIM1; k=rsa; p=QUJD"`)
			m.Answer = append(m.Answer, rr)
		} else {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	zoneSrv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = zoneSrv.ListenAndServe() }()
	<-started
	t.Cleanup(func() { _ = zoneSrv.Shutdown() })

	records := filepath.Join(t.TempDir(), "customer.zone")
	r := &Resolver{Zone: "oxcloud.zone", Forward: zoneSrv.PacketConn.LocalAddr().String(), Records: records,
		Log: slog.New(slog.DiscardHandler)}
	srv, err := r.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	addr := srv.udp.PacketConn.LocalAddr().String()
	ask := func(name string) *dns.Msg {
		t.Helper()
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeTXT)
		for _, net := range []string{"udp", "tcp"} {
			m, _, err := (&dns.Client{Net: net, Timeout: 2 * time.Second}).Exchange(q, addr)
			if err != nil {
				t.Fatalf("%s %s: %v", net, name, err)
			}
			if net == "tcp" {
				return m
			}
		}
		return nil
	}

	if m := ask("selector1._domainkey.a.dk."); m.Rcode != dns.RcodeNameError || len(m.Answer) != 0 {
		t.Fatalf("before the CNAME: %v", m)
	}
	if err := os.WriteFile(records, []byte("selector1._domainkey.a.dk. 300 IN CNAME selector1-a-dk._domainkey.oxcloud.zone.\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := ask("selector1._domainkey.a.dk.")
	if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 2 || !m.RecursionAvailable {
		t.Fatalf("through the CNAME: %v", m)
	}
	if c, ok := m.Answer[0].(*dns.CNAME); !ok || c.Target != "selector1-a-dk._domainkey.oxcloud.zone." {
		t.Errorf("first answer %v", m.Answer[0])
	}
	if txt, ok := m.Answer[1].(*dns.TXT); !ok || strings.Join(txt.Txt, "") != "v=DKIM1; k=rsa; p=QUJD" {
		t.Errorf("second answer %v", m.Answer[1])
	}
	if m := ask("selector2._domainkey.a.dk."); m.Rcode != dns.RcodeNameError {
		t.Errorf("unknown name: %v", m)
	}
	if err := os.WriteFile(records, []byte("bad line here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if m := ask("selector1._domainkey.a.dk."); m.Rcode != dns.RcodeServerFailure {
		t.Errorf("broken records file: rcode %s", dns.RcodeToString[m.Rcode])
	}
}
