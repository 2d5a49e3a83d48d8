package milter

import (
	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/signer"
)

// Outcomes of a message, the label of dkimd_sign_milter_messages_total.
const (
	outcomeSigned   = "signed"
	outcomeRefused  = "unsigned"   // not signable: passed on unchanged
	outcomeError    = "error"      // a failure of dkimd: passed on unchanged
	outcomeTempfail = "tempfailed" // not signed, and --milter-on-error tempfail
	outcomeAborted  = "aborted"    // the MTA gave up on the message
)

// reasonError is the dkimd_milter_unsigned_total reason of a message that
// dkimd failed to sign (a store away, a signing error); the other reasons
// are the signer's refusal codes.
const reasonError = "error"

var unsignedReasons = []string{signer.CodeNoFrom, signer.CodeMultipleFrom, signer.CodeBadFrom,
	signer.CodeHeaderUnparseable, signer.CodeHeaderTooLarge, signer.CodeUnknownDomain,
	signer.CodeAmbiguousDomain, signer.CodeNoActiveKey, reasonError}

type metrics struct {
	messages *prometheus.CounterVec
	// signed is the messages counter of outcomeSigned, looked up once: a
	// label lookup per message hashes the label value.
	signed         prometheus.Counter
	unsigned       *prometheus.CounterVec
	protocolErrors *prometheus.CounterVec
	sessions       prometheus.Gauge
	refused        prometheus.Counter
	timeouts       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dkimd_sign_milter_messages_total",
			Help: "Messages the milter saw, by outcome (signed, unsigned, error, tempfailed, aborted).",
		}, []string{"outcome"}),
		unsigned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dkimd_milter_unsigned_total",
			Help: "Messages the milter passed on unsigned (--milter-on-error accept), by reason: the signer's refusal code, or error.",
		}, []string{"reason"}),
		protocolErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dkimd_milter_protocol_errors_total",
			Help: "Milter sessions closed because the peer broke the protocol, by reason.",
		}, []string{"reason"}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dkimd_milter_sessions",
			Help: "Milter sessions open now.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dkimd_milter_sessions_refused_total",
			Help: "Milter connections closed at once because --milter-max-conns sessions were open.",
		}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dkimd_milter_idle_timeouts_total",
			Help: "Milter sessions closed after --milter-timeout without a whole packet.",
		}),
	}
	// Zeros from the start, for dashboards and alerts.
	for _, o := range []string{outcomeSigned, outcomeRefused, outcomeError, outcomeTempfail, outcomeAborted} {
		m.messages.WithLabelValues(o)
	}
	m.signed = m.messages.WithLabelValues(outcomeSigned)
	for _, r := range unsignedReasons {
		m.unsigned.WithLabelValues(r)
	}
	for _, r := range protocolReasons {
		m.protocolErrors.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.messages, m.unsigned, m.protocolErrors, m.sessions, m.refused,
			m.timeouts} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
