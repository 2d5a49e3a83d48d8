package ops_test

import (
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/logtest"
	"dkimd/internal/ops"
)

// flakyListener fails its first accepts with errs, then accepts for real.
type flakyListener struct {
	net.Listener
	errs []error
}

func (f *flakyListener) Accept() (net.Conn, error) {
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		return nil, err
	}
	return f.Listener.Accept()
}

func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

func TestRetryAcceptLogsAndCountsPerListener(t *testing.T) {
	reg := prometheus.NewRegistry()
	logs := &logtest.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	accepted := func(name string, errs ...error) {
		t.Helper()
		base, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln := ops.RetryAccept(reg, log, name, &flakyListener{Listener: base, errs: errs})
		defer ln.Close()
		go func() {
			if c, err := net.Dial("tcp", base.Addr().String()); err == nil {
				c.Close()
			}
		}()
		c, err := ln.Accept()
		if err != nil {
			t.Fatalf("%s: Accept after temporary errors: %v", name, err)
		}
		c.Close()
	}
	accepted("api", acceptErr(syscall.EMFILE), acceptErr(syscall.ECONNABORTED))
	accepted("sign", acceptErr(syscall.ENFILE))
	accepted("ops") // registering again reuses the counter

	for name, want := range map[string]float64{"api": 2, "sign": 1, "ops": 0} {
		if got := acceptErrorCount(t, reg, name); got != want {
			t.Errorf("dkimd_accept_errors_total{listener=%q} = %v, want %v", name, got, want)
		}
	}
	out := logs.String()
	for _, want := range []string{`"component":"api"`, `"component":"sign"`, "too many open files", `"err":`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}

// acceptErrorCount reads one listener's dkimd_accept_errors_total back
// from the registry, as a scrape sees it.
func acceptErrorCount(t *testing.T, reg *prometheus.Registry, listener string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "dkimd_accept_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "listener" && l.GetValue() == listener {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
