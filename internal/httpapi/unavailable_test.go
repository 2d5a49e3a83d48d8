package httpapi

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
)

// tcpProxy forwards connections to a backend until it is cut, which closes
// every connection and refuses new ones: a database that went away.
type tcpProxy struct {
	t       *testing.T
	backend string
	addr    string
	mu      sync.Mutex
	ln      net.Listener
	conns   []net.Conn
}

func newTCPProxy(t *testing.T, backend string) *tcpProxy {
	p := &tcpProxy{t: t, backend: backend}
	p.listen("127.0.0.1:0")
	t.Cleanup(p.cut)
	return p
}

func (p *tcpProxy) listen(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", p.backend)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, b)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(b, c); b.Close() }()
			go func() { _, _ = io.Copy(c, b); c.Close() }()
		}
	}()
}

func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// restore listens again on the same address.
func (p *tcpProxy) restore() { p.listen(p.addr) }

// TestDatabaseDown cuts the API off its Postgres and checks that every call
// answers 503 in the envelope, and that it recovers when the database is
// back.
func TestDatabaseDown(t *testing.T) {
	ctx := context.Background()
	dbURL := keystoretest.PostgresURL(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTCPProxy(t, u.Host)
	u.Host = proxy.addr
	store, err := keystore.OpenPostgres(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if _, err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, store)
	e.brand("acme", "spamtrap.dk")
	wantStatus(t, e.do(e.as("acme", "PUT", dkimPath+"/acme/spamtrap.dk")), 201)

	proxy.cut()
	for _, r := range []req{
		e.as("acme", "GET", dkimPath+"/acme"),
		e.as("acme", "GET", dkimPath+"/acme/spamtrap.dk"),
		e.as("acme", "PUT", dkimPath+"/acme/spamtrap.dk"),
		e.as("acme", "DELETE", dkimPath+"/acme/spamtrap.dk"),
		{method: "GET", path: AdminBase + "/brands", bearer: testOperator},
	} {
		t.Run("down "+r.method+" "+r.path, func(t *testing.T) {
			w := e.do(r)
			if w.Code != 503 {
				t.Log(e.logs.String())
			}
			wantError(t, w, 503, "UNAVAILABLE", "unavailable")
		})
	}
	proxy.restore()
	t.Run("back", func(t *testing.T) {
		wantStatus(t, e.do(e.as("acme", "GET", dkimPath+"/acme/spamtrap.dk")), 200)
	})
}
