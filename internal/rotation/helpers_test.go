package rotation_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"dkimd/internal/clocktest"
	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
	"dkimd/internal/provision"
	"dkimd/internal/provision/provisiontest"
	"dkimd/internal/rotation"
)

const zone = "oxcloud.zone"

var (
	lead     = 96 * time.Hour
	interval = 180 * 24 * time.Hour
	grace    = 7 * 24 * time.Hour
	start    = time.Date(2027, 1, 4, 9, 0, 0, 0, time.UTC)
)

type env struct {
	store *keystore.SQL
	clk   *clocktest.Clock
	prov  *provision.Service
	dns   *publicDNS
	rot   *rotation.Service
	reg   *prometheus.Registry
}

// fastSQLite opens a migrated SQLite store in memory-backed /dev/shm when
// the machine has it: the simulation commits tens of thousands of
// transactions, and fsync on a disk would dominate its run time.
func fastSQLite(t testing.TB) *keystore.SQL {
	t.Helper()
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	dir, err := os.MkdirTemp(base, "dkimd-rotation-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s, err := keystore.OpenSQLite(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// newEnv builds a store of the dialect ("" for fast SQLite), a provisioning
// service, a fake public DNS driven by customer, and the rotation service.
func newEnv(t testing.TB, dialect string, cfg rotation.Config, customer func(domain, selector string, t time.Time) cnameMode) *env {
	t.Helper()
	e := &env{clk: clocktest.New(start), reg: prometheus.NewRegistry()}
	if dialect == "" {
		e.store = fastSQLite(t)
	} else {
		e.store = keystoretest.Open(t, dialect)
	}
	e.prov = provisiontest.Service(t, e.store, zone, e.clk.Now)
	e.dns = startPublicDNS(t, e.store, zone, e.clk.Now, customer)
	checker, err := rotation.NewChecker(e.dns.addr, zone)
	if err != nil {
		t.Fatal(err)
	}
	checker.Timeout = 150 * time.Millisecond
	if cfg.PublishLeadTime == 0 {
		cfg.PublishLeadTime, cfg.RotationInterval, cfg.RetireGrace = lead, interval, grace
	}
	e.rot, err = rotation.New(e.store, e.prov, checker, cfg, e.clk.Now, nil, e.reg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

var operator = provision.Actor{Name: "operator"}

func (e *env) brand(t testing.TB, name string) {
	t.Helper()
	if _, err := e.prov.CreateBrand(context.Background(), name, operator); err != nil {
		t.Fatal(err)
	}
}

func (e *env) domain(t testing.TB, brand, name string, ed bool) keystore.Domain {
	t.Helper()
	ctx := context.Background()
	if err := e.prov.AddMaildomain(ctx, brand, name, operator); err != nil {
		t.Fatal(err)
	}
	d, _, _, err := e.prov.CreateDomain(ctx, brand, name, provision.DomainOptions{Ed25519: ed}, provision.Actor{Name: "brand:" + brand})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (e *env) step(t testing.TB) {
	t.Helper()
	if err := e.rot.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (e *env) keys(t testing.TB, kind keystore.OwnerKind, owner string) map[string]keystore.Key {
	t.Helper()
	keys, err := e.store.Keys(context.Background(), kind, owner)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]keystore.Key{}
	for _, k := range keys {
		m[k.Selector] = k
	}
	return m
}

func (e *env) get(t testing.TB, name string) keystore.Domain {
	t.Helper()
	d, err := e.store.Domain(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// counter reads a metric from the registry, 0 when absent.
func (e *env) counter(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	return 0
}
