package ops

import (
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/accept"
)

// acceptErrorsOpts names the one counter every listener's temporary accept
// errors go to (docs/reliability.md, "Network edges").
var acceptErrorsOpts = prometheus.CounterOpts{
	Name: "dkimd_accept_errors_total",
	Help: "Temporary accept errors (EMFILE, ENFILE, ECONNABORTED, ENOBUFS…) a TCP listener retried after a pause, by listener.",
}

// acceptErrors returns the dkimd_accept_errors_total counter registered on
// reg, registering it on first use: each listener wraps itself from its own
// start function, and they share the one counter without a start order.
func acceptErrors(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(acceptErrorsOpts, []string{"listener"})
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	switch {
	case err == nil:
		return c
	case errors.As(err, &are):
		if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
			return existing
		}
	}
	// Only a programming error gets here (another collector with this
	// name): fail at start-up as MustRegister does.
	panic("ops: register dkimd_accept_errors_total: " + err.Error())
}

// RetryAccept wraps ln (the listener named listener: "api", "sign", "ops",
// "milter", "dns-tcp") so that a temporary accept error pauses and retries
// (package accept) instead of ending serve, logs a warning with the
// component and the error, and counts it in dkimd_accept_errors_total.
func RetryAccept(reg prometheus.Registerer, log *slog.Logger, listener string, ln net.Listener) net.Listener {
	counter := acceptErrors(reg).WithLabelValues(listener)
	log = log.With(slog.String("component", listener))
	return accept.Wrap(ln, func(err error, pause time.Duration) {
		counter.Inc()
		log.Warn("accept failed; retrying after a pause", slog.String("err", err.Error()), slog.Duration("pause", pause))
	})
}
