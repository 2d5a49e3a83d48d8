package zone

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Limits of DNS over TCP (RFC 7766): a connection that sends nothing for
// tcpIdle is closed (its §6.2.3 suggests seconds, NSD's tcp-timeout is
// 120 s, but a cap of connections makes an idle one expensive), and at
// most tcpMax are open at once; one beyond that is closed as soon as it is
// accepted, so that a flood of idle connections costs descriptors only up
// to the cap and never stops the other listeners (docs/reliability.md).
const (
	defaultTCPMax  = 1000
	defaultTCPIdle = 10 * time.Second
)

// capListener hands out at most max connections at once; the ones beyond
// are closed at once and counted.
type capListener struct {
	net.Listener
	max      int64
	open     *atomic.Int64
	rejected func()
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			c.Close()
			l.rejected()
			continue
		}
		return &cappedConn{Conn: c, open: l.open}, nil
	}
}

// cappedConn gives its place back when it is closed (miekg/dns closes every
// connection it has served, after the idle timeout at the latest).
type cappedConn struct {
	net.Conn
	open *atomic.Int64
	once sync.Once
}

func (c *cappedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.open.Add(-1) })
	return err
}
