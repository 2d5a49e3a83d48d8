// Package cutproxy is a TCP proxy for tests that can cut every connection
// and refuse new ones on demand: a database, or any backend, that goes away
// and comes back, without stopping the real one.
package cutproxy

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards connections from Addr to a backend while it is up.
type Proxy struct {
	ln      net.Listener
	backend string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
}

// Start listens on a loopback port and forwards to backend (host:port)
// until the test ends.
func Start(t testing.TB, backend string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, backend: backend, conns: make(map[net.Conn]struct{})}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.SetDown(true)
	})
	return p
}

// Addr is the proxy's host:port, to connect to instead of the backend.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetDown(true) closes every connection through the proxy and closes new
// ones at once; SetDown(false) forwards again.
func (p *Proxy) SetDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
			delete(p.conns, c)
		}
	}
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

func (p *Proxy) forward(c net.Conn) {
	if !p.track(c) {
		c.Close()
		return
	}
	b, err := net.Dial("tcp", p.backend)
	if err != nil || !p.track(b) {
		if b != nil {
			b.Close()
		}
		p.drop(c)
		return
	}
	go func() { _, _ = io.Copy(b, c); p.drop(b) }()
	_, _ = io.Copy(c, b)
	p.drop(c)
}

// track records an open connection; false when the proxy is down.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) drop(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}
