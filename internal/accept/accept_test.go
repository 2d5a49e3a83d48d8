package accept_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"dkimd/internal/accept"
)

// flaky fails its first accepts with the given errors, then accepts from
// the real listener underneath.
type flaky struct {
	net.Listener
	errs []error
}

func (f *flaky) Accept() (net.Conn, error) {
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		return nil, err
	}
	return f.Listener.Accept()
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func opErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

func TestTemporaryErrorsAreRetriedWithBackoff(t *testing.T) {
	base := listen(t)
	var pauses []time.Duration
	ln := accept.Wrap(&flaky{Listener: base, errs: []error{
		opErr(syscall.EMFILE), opErr(syscall.ENFILE), opErr(syscall.ECONNABORTED), opErr(syscall.ENOBUFS),
	}}, func(_ error, pause time.Duration) { pauses = append(pauses, pause) })
	go func() {
		c, err := net.Dial("tcp", base.Addr().String())
		if err == nil {
			c.Close()
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept after temporary errors: %v", err)
	}
	c.Close()
	want := []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond}
	if fmt.Sprint(pauses) != fmt.Sprint(want) {
		t.Errorf("pauses %v, want %v", pauses, want)
	}
}

func TestPermanentErrorEndsAccept(t *testing.T) {
	bad := errors.New("listener broken for good")
	ln := accept.Wrap(&flaky{Listener: listen(t), errs: []error{bad}}, nil)
	if _, err := ln.Accept(); !errors.Is(err, bad) {
		t.Fatalf("Accept = %v, want %v", err, bad)
	}
}

func TestCloseEndsPause(t *testing.T) {
	errs := make([]error, 100)
	for i := range errs {
		errs[i] = opErr(syscall.EMFILE)
	}
	ln := accept.Wrap(&flaky{Listener: listen(t), errs: errs}, nil)
	done := make(chan error, 1)
	go func() { _, err := ln.Accept(); done <- err }()
	time.Sleep(50 * time.Millisecond)
	ln.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still pausing after Close")
	}
}

func TestClosedListenerIsNotTemporary(t *testing.T) {
	base := listen(t)
	base.Close()
	_, err := accept.Wrap(base, nil).Accept()
	if !errors.Is(err, net.ErrClosed) || accept.Temporary(err) {
		t.Fatalf("Accept on a closed listener = %v (temporary %v)", err, accept.Temporary(err))
	}
}
