package zone

import (
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// The label values of dkimd_dns_queries_total, resolved to counters once at
// start so that the hot path indexes an array instead of looking up labels.
var (
	qtypeLabels = []string{"A", "NS", "SOA", "TXT", "AAAA", "ANY", "AXFR", "IXFR", "other"}
	rcodeLabels = []string{"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "NOTAUTH", "BADVERS", "other"}
)

func qtypeIndex(t uint16) int {
	switch t {
	case dns.TypeA:
		return 0
	case dns.TypeNS:
		return 1
	case dns.TypeSOA:
		return 2
	case dns.TypeTXT:
		return 3
	case dns.TypeAAAA:
		return 4
	case dns.TypeANY:
		return 5
	case dns.TypeAXFR:
		return 6
	case dns.TypeIXFR:
		return 7
	}
	return 8
}

func rcodeIndex(r int) int {
	switch r {
	case dns.RcodeSuccess, dns.RcodeFormatError, dns.RcodeServerFailure, dns.RcodeNameError, dns.RcodeNotImplemented, dns.RcodeRefused:
		return r
	case dns.RcodeNotAuth:
		return 6
	case dns.RcodeBadVers:
		return 7
	}
	return 8
}

type metrics struct {
	queries  [9][9]prometheus.Counter
	duration prometheus.Histogram
	records  prometheus.Gauge
	serial   prometheus.Gauge
	full     prometheus.Counter
	incr     prometheus.Counter
	failed   prometheus.Counter
	notifies *prometheus.CounterVec
	xfrs     *prometheus.CounterVec

	rrlDropped, rrlSlipped prometheus.Counter
	readErrors             prometheus.Counter
	tcpRejected            prometheus.Counter
}

// durationSample: one query in this many is timed. Reading the clock twice
// per query costs more than the rest of a cached answer.
const durationSample = 64

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	queries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dkimd_dns_queries_total", Help: "DNS queries answered, by query type and response code.",
	}, []string{"qtype", "rcode"})
	m := &metrics{
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dkimd_dns_query_duration_seconds",
			Help:    "Time to answer a DNS query over UDP, from reading to having sent the answer; sampled about once per 64 queries, a batch read together counting as its time divided by its size.",
			Buckets: []float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2},
		}),
		records: prometheus.NewGauge(prometheus.GaugeOpts{Name: "dkimd_dns_zone_records", Help: "TXT records in the served zone."}),
		serial:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "dkimd_dns_zone_serial", Help: "SOA serial of the served zone."}),
		notifies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dkimd_dns_notifies_total", Help: "NOTIFY messages sent to secondaries, by result.",
		}, []string{"result"}),
		xfrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dkimd_dns_transfers_total", Help: "Zone transfer requests, by result.",
		}, []string{"result"}),
		readErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dkimd_dns_udp_read_errors_total", Help: "Failed reads of a UDP socket; each is followed by a pause (5 ms doubling to 1 s while they persist).",
		}),
		tcpRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dkimd_dns_tcp_rejected_total", Help: "DNS TCP connections closed at once because --dns-tcp-max connections were open.",
		}),
	}
	rrl := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dkimd_dns_rrl_total", Help: "UDP answers held back by response-rate limiting (--dns-rrl): dropped, or slipped (sent empty with TC so the client retries over TCP).",
	}, []string{"action"})
	m.rrlDropped, m.rrlSlipped = rrl.WithLabelValues("dropped"), rrl.WithLabelValues("slipped")
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dkimd_dns_reloads_total", Help: "Zone snapshot rebuilds, by kind (full, incremental) and failures.",
	}, []string{"kind"})
	m.full, m.incr, m.failed = reloads.WithLabelValues("full"), reloads.WithLabelValues("incremental"), reloads.WithLabelValues("failed")
	// Known label values exist from the start: dashboards see zeros.
	for _, r := range []string{"ok", "failed"} {
		m.notifies.WithLabelValues(r)
	}
	for _, r := range []string{"axfr", "ixfr", "current", "refused", "failed"} {
		m.xfrs.WithLabelValues(r)
	}
	for i, qt := range qtypeLabels {
		for j, rc := range rcodeLabels {
			m.queries[i][j] = queries.WithLabelValues(qt, rc)
		}
	}
	for _, c := range []prometheus.Collector{queries, m.duration, m.records, m.serial, reloads, m.notifies, m.xfrs,
		rrl, m.readErrors, m.tcpRejected} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) count(st Stat) {
	m.queries[qtypeIndex(st.Qtype)][rcodeIndex(st.Rcode)].Inc()
}
