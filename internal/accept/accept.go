// Package accept keeps a TCP listener accepting through the errors that pass
// by themselves. When the process runs out of descriptors (EMFILE, ENFILE),
// of kernel buffers (ENOBUFS, ENOMEM), or a client resets a connection
// still in the queue (ECONNABORTED), Accept fails, yet the listener is
// sound: net/http's Server.Serve sleeps 5 ms, doubling to 1 s, and tries
// again. Every listener of dkimd gets that behaviour from Listener, so that
// no listener's bad moment ends serve and with it every other listener
// (docs/reliability.md, "Hostile input").
//
// It owns only the retrying; what a connection is for is its server's.
package accept

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// First and Max bound the pause after a temporary accept error.
const (
	First = 5 * time.Millisecond
	Max   = time.Second
)

// Listener wraps a net.Listener so that Accept retries temporary errors
// with back-off and returns only a connection, a closed listener's error,
// or an error that retrying cannot mend.
type Listener struct {
	net.Listener
	// OnError, when set, hears of each temporary error before the pause
	// (for a log line and a metric). It is called from Accept's goroutine.
	OnError func(err error, pause time.Duration)

	closeOnce sync.Once
	closed    chan struct{}
}

// Wrap returns ln retrying temporary accept errors.
func Wrap(ln net.Listener, onError func(err error, pause time.Duration)) *Listener {
	return &Listener{Listener: ln, OnError: onError, closed: make(chan struct{})}
}

// Accept waits for the next connection.
func (l *Listener) Accept() (net.Conn, error) {
	pause := time.Duration(0)
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return c, nil
		}
		if !Temporary(err) {
			return nil, err
		}
		if pause == 0 {
			pause = First
		} else {
			pause = min(2*pause, Max)
		}
		if l.OnError != nil {
			l.OnError(err, pause)
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-l.closed:
			t.Stop()
			return nil, net.ErrClosed
		}
	}
}

// Close closes the listener and ends a pause in progress.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// Temporary reports whether an accept error is one that passes by itself:
// the listener is sound and a later Accept may succeed.
func Temporary(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
