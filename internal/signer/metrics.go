package signer

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	signed *prometheus.CounterVec
	// The signed counter of each mode, looked up once: a label lookup per
	// message hashes the label values.
	signedAligned, signedFallback prometheus.Counter

	refused  *prometheus.CounterVec
	errors   prometheus.Counter
	reads    prometheus.Counter
	duration prometheus.Histogram
	keyLoads prometheus.Counter
	stale    prometheus.Counter
	outage   prometheus.Counter
}

// newMetrics makes the dkimd_sign_* metrics of the process's one Signer;
// the transports count their own requests (dkimd_sign_http_*,
// dkimd_sign_milter_*).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		signed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dkimd_sign_messages_total",
			Help: "Messages signed, by mode (aligned: the From domain's key; fallback: the brand's key).",
		}, []string{"mode"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dkimd_sign_refused_total",
			Help: "Messages not signed, by reason code (no-from, unknown-domain, ...).",
		}, []string{"code"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dkimd_sign_errors_total",
			Help: "Messages not signed because of a failure of dkimd (store, key, signing), not the message.",
		}),
		reads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dkimd_sign_read_errors_total",
			Help: "Messages not signed because reading them failed: a client that went away, a truncated or oversized upload.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dkimd_sign_duration_seconds",
			Help:    "Time from the header block to the finished signatures of a signed message.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, 1},
		}),
		keyLoads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dkimd_sign_key_loads_total",
			Help: "Private keys unsealed and parsed into the signing cache.",
		}),
		stale: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dkimd_sign_stale_plans_total",
			Help: "Key choices served from memory past their age because the store failed.",
		}),
		outage: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dkimd_sign_outage_fallback_total",
			Help: "Messages from a domain not resolved before the store failed, signed with its brand's fallback key from the outage directory.",
		}),
	}
	m.signedAligned = m.signed.WithLabelValues(ModeAligned)
	m.signedFallback = m.signed.WithLabelValues(ModeFallback)
	if reg != nil {
		for _, c := range []prometheus.Collector{m.signed, m.refused, m.errors, m.reads, m.duration, m.keyLoads, m.stale, m.outage} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) observeSigned(r Result, d time.Duration) {
	switch r.Mode {
	case ModeAligned:
		m.signedAligned.Inc()
	case ModeFallback:
		m.signedFallback.Inc()
	default:
		m.signed.WithLabelValues(r.Mode).Inc()
	}
	m.duration.Observe(d.Seconds())
}

func (m *metrics) observeError(err error) {
	var r *Refusal
	switch {
	case errors.As(err, &r):
		m.refused.WithLabelValues(r.Code).Inc()
	case errors.Is(err, ErrRead):
		m.reads.Inc()
	default:
		m.errors.Inc()
	}
}
