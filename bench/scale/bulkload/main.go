// Command bulkload is the fast path that fills an empty dkimd Postgres
// database with N domains of one brand, for scale tests and for seeding a
// staging copy: one transaction of three COPYs instead of N API calls.
//
// The rows are what dkimd itself would have written: a brand created through
// provision (its secret is printed once on stdout, like `dkimd brand
// create`), a maildomains row per domain, and per domain selector1 (active)
// and selector2 (next) RSA-2048 keys. The key pairs are a few real keys
// generated here and reused across domains (generating two million would take
// hours), but every private key is sealed per row with the data dir's
// key-encryption key and the row's associated data, so GET, signing and
// rotation work for any domain. Spare maildomains without keys (-spare) are
// there for PUTs to create.
//
// It refuses a database that already holds domains or the brand: it is a
// first fill, not a merge. The load raises the zone serial once and journals
// the brand; start dkimd after it (a replica already running picks the
// domains up at its next full reconcile).
//
//	bulkload -database-url postgres://… -data-dir ./data -n 1000000 >secret
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"time"

	"github.com/jackc/pgx/v5"

	"dkimd/internal/dkimkey"
	"dkimd/internal/domainname"
	"dkimd/internal/keystore"
	"dkimd/internal/provision"
	"dkimd/internal/sealbox"
)

type options struct {
	dbURL, dataDir, kekFile string
	brand, zone             string
	n, spare, keyPairs      int
	domainFmt, spareFmt     string
	checkWindow             time.Duration
	queries                 string
	queryCount              int
}

func main() {
	var o options
	flag.StringVar(&o.dbURL, "database-url", os.Getenv("DKIMD_DATABASE_URL"), "Postgres URL (env DKIMD_DATABASE_URL)")
	flag.StringVar(&o.dataDir, "data-dir", envOr("DKIMD_DATA_DIR", "./data"), "dkimd data dir holding master.key (created if missing)")
	flag.StringVar(&o.kekFile, "master-key-file", os.Getenv("DKIMD_MASTER_KEY_FILE"), "key-encryption key file (default <data-dir>/master.key)")
	flag.StringVar(&o.brand, "brand", "scale", "brand that owns the domains (created here)")
	flag.StringVar(&o.zone, "zone", "oxcloud.zone", "the service's zone, for the query file")
	flag.IntVar(&o.n, "n", 1000000, "domains with keys")
	flag.IntVar(&o.spare, "spare", 1000, "extra maildomains without keys, for PUTs")
	flag.IntVar(&o.keyPairs, "key-pairs", 16, "distinct RSA-2048 key pairs, reused across domains")
	flag.StringVar(&o.domainFmt, "domain-format", "d%07d.example.com", "name of domain i")
	flag.StringVar(&o.spareFmt, "spare-format", "p%07d.example.com", "name of spare maildomain i")
	flag.DurationVar(&o.checkWindow, "check-window", 24*time.Hour, "next DNS checks spread over this window from now (the settled check interval)")
	flag.StringVar(&o.queries, "queries", "", "write a dnsperf query file here (90% existing names)")
	flag.IntVar(&o.queryCount, "query-count", 200000, "lines of the query file")
	flag.Parse()
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "bulkload:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bulkload: "+format+"\n", args...)
}

// keyPair is one generated RSA key in the forms the rows need.
type keyPair struct {
	pub, der    []byte
	fingerprint string
}

func run(ctx context.Context, o options) error {
	if o.dbURL == "" {
		return errors.New("-database-url is required: the fast path is Postgres COPY")
	}
	if o.n < 0 || o.spare < 0 || o.keyPairs < 1 {
		return errors.New("-n and -spare must be >= 0 and -key-pairs >= 1")
	}
	if err := domainname.ValidBrand(o.brand); err != nil {
		return fmt.Errorf("-brand: %w", err)
	}
	// Names must be what the API would store: normalised, and labels that fit.
	for _, f := range []string{o.domainFmt, o.spareFmt} {
		name := fmt.Sprintf(f, max(o.n, o.spare))
		norm, err := domainname.Normalize(name, o.zone)
		if err != nil || norm != name {
			return fmt.Errorf("format %q gives %q, which is not a normalised domain name (%v)", f, name, err)
		}
		if err := domainname.CheckLabelFits(domainname.Label(name), false); err != nil {
			return fmt.Errorf("format %q: %w", f, err)
		}
	}

	store, err := keystore.Open(ctx, "", o.dbURL)
	if err != nil {
		return err
	}
	defer store.Close()
	if _, err := store.Migrate(ctx); err != nil {
		return err
	}
	var nDomains int
	if err := store.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM domains`).Scan(&nDomains); err != nil {
		return fmt.Errorf("count domains: %w", err)
	}
	if nDomains > 0 {
		return fmt.Errorf("refusing to load: the database already holds %d domains; bulkload only fills an empty database (drop and recreate it, or use the API)", nDomains)
	}
	if _, err := store.Brand(ctx, o.brand); err == nil {
		return fmt.Errorf("refusing to load: brand %q already exists; bulkload creates its brand itself", o.brand)
	} else if !errors.Is(err, keystore.ErrNotFound) {
		return err
	}

	box, err := loadKEK(o)
	if err != nil {
		return err
	}
	start := time.Now()
	pairs, err := generate(o.keyPairs)
	if err != nil {
		return err
	}
	logf("generated %d RSA-2048 key pairs in %.1fs", len(pairs), time.Since(start).Seconds())

	svc := &provision.Service{Store: store, Box: box, Keys: provision.DirectGenerator{}, Zone: o.zone, Now: time.Now}
	secret, err := svc.CreateBrand(ctx, o.brand, provision.Actor{Name: "bulkload"})
	if err != nil {
		return err
	}
	fmt.Println(secret)

	conn, err := pgx.Connect(ctx, o.dbURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	t0 := time.Now()
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return load(ctx, tx, o, box, pairs, t0) })
	if err != nil {
		return fmt.Errorf("brand %s was created, the domains were not (rolled back): %w", o.brand, err)
	}
	logf("committed %d domains, %d keys, %d maildomains in %.1fs", o.n, 2*o.n, o.n+o.spare, time.Since(t0).Seconds())
	// Fresh tables of a million rows: give the planner statistics now rather
	// than whenever autovacuum gets to them.
	t1 := time.Now()
	if _, err := conn.Exec(ctx, `ANALYZE maildomains, domains, keys`); err != nil {
		return fmt.Errorf("analyze: %w", err)
	}
	logf("analyzed in %.1fs; total %.1fs", time.Since(t1).Seconds(), time.Since(start).Seconds())
	if o.queries != "" {
		return writeQueries(o)
	}
	return nil
}

func loadKEK(o options) (*sealbox.Box, error) {
	if o.kekFile != "" && o.kekFile != sealbox.DefaultPath(o.dataDir) {
		return sealbox.LoadFile(o.kekFile)
	}
	box, path, created, err := sealbox.LoadOrCreate(o.dataDir)
	if err != nil {
		return nil, err
	}
	if created {
		logf("generated a new key-encryption key at %s; dkimd must use the same data dir", path)
	}
	return box, nil
}

// generate makes n RSA-2048 key pairs on every core.
func generate(n int) ([]keyPair, error) {
	out := make([]keyPair, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i := range out {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			k, err := dkimkey.Generate(dkimkey.RSA, dkimkey.DefaultRSABits)
			if err == nil {
				out[i].pub, err = dkimkey.PublicBytes(k.Public())
			}
			if err == nil {
				out[i].der, err = dkimkey.MarshalPrivate(k)
			}
			out[i].fingerprint = dkimkey.Fingerprint(out[i].pub)
			errs <- err
		}()
	}
	var all []error
	for range n {
		all = append(all, <-errs)
	}
	return out, errors.Join(all...)
}

// domainTimes are one domain's life-cycle times, spread as in a service
// that has run for a while: rotations spread over the last interval, DNS
// checks spread over the check window ahead.
type domainTimes struct {
	created, lastRotated, nextRotation, lastChecked, nextCheck int64
}

const rotationInterval = 180 * 24 * time.Hour

func timesFor(r *rand.Rand, now time.Time, checkWindow time.Duration) domainTimes {
	lastRot := now.Add(-time.Duration(r.Int64N(int64(rotationInterval - 10*24*time.Hour))))
	nextCheck := now.Add(time.Duration(r.Int64N(int64(checkWindow) + 1)))
	return domainTimes{
		created:      lastRot.Add(-rotationInterval - time.Duration(r.Int64N(int64(365*24*time.Hour)))).UnixMicro(),
		lastRotated:  lastRot.UnixMicro(),
		nextRotation: lastRot.Add(rotationInterval).UnixMicro(),
		lastChecked:  nextCheck.Add(-checkWindow).UnixMicro(),
		nextCheck:    nextCheck.UnixMicro(),
	}
}

// source adapts a row function to pgx.CopyFromSource, with progress.
type source struct {
	what   string
	n, i   int
	row    func(i int) ([]any, error)
	cur    []any
	err    error
	start  time.Time
	report int
}

func (s *source) Next() bool {
	if s.i >= s.n || s.err != nil {
		return false
	}
	s.cur, s.err = s.row(s.i)
	s.i++
	if s.i%s.report == 0 || s.i == s.n {
		logf("%s: %d/%d rows (%.0f/s)", s.what, s.i, s.n, float64(s.i)/time.Since(s.start).Seconds())
	}
	return s.err == nil
}
func (s *source) Values() ([]any, error) { return s.cur, s.err }
func (s *source) Err() error             { return s.err }

func copyRows(ctx context.Context, tx pgx.Tx, table string, cols []string, n int, row func(int) ([]any, error)) error {
	src := &source{what: table, n: n, row: row, start: time.Now(), report: max(n/10, 1)}
	got, err := tx.CopyFrom(ctx, pgx.Identifier{table}, cols, src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", table, err)
	}
	if int(got) != n {
		return fmt.Errorf("copy %s: %d rows written, want %d", table, got, n)
	}
	return nil
}

func load(ctx context.Context, tx pgx.Tx, o options, box *sealbox.Box, pairs []keyPair, t0 time.Time) error {
	now := time.Now()
	nowUS := now.UnixMicro()
	// Lock the serial row first: a replica that raises it meanwhile waits
	// for this load instead of journaling a serial below ours.
	var serial int64
	if err := tx.QueryRow(ctx, `UPDATE zone_serial SET serial = serial + 1 WHERE id = 1 RETURNING serial`).Scan(&serial); err != nil {
		return fmt.Errorf("raise serial: %w", err)
	}

	err := copyRows(ctx, tx, "maildomains", []string{"brand", "domain", "created_at"}, o.n+o.spare, func(i int) ([]any, error) {
		if i < o.n {
			return []any{o.brand, fmt.Sprintf(o.domainFmt, i), nowUS}, nil
		}
		return []any{o.brand, fmt.Sprintf(o.spareFmt, i-o.n), nowUS}, nil
	})
	if err != nil {
		return err
	}

	// The same seed gives the keys COPY the times the domains COPY used.
	const seed = 42
	r := rand.New(rand.NewPCG(seed, 1))
	err = copyRows(ctx, tx, "domains", []string{"name", "label", "brand", "status", "status_reason", "active_selector",
		"key_bits", "ed25519", "version", "created_at", "updated_at", "last_rotated_at", "next_rotation_at",
		"pending_switch_at", "last_checked_at", "next_check_at", "check_failures"}, o.n, func(i int) ([]any, error) {
		name := fmt.Sprintf(o.domainFmt, i)
		t := timesFor(r, now, o.checkWindow)
		return []any{name, domainname.Label(name), o.brand, keystore.StatusActive, "", provision.Selector1,
			dkimkey.DefaultRSABits, false, int64(1), t.created, t.lastRotated, t.lastRotated, t.nextRotation,
			int64(0), t.lastChecked, t.nextCheck, 0}, nil
	})
	if err != nil {
		return err
	}

	r = rand.New(rand.NewPCG(seed, 1))
	var t domainTimes
	err = copyRows(ctx, tx, "keys", []string{"owner_kind", "owner", "selector", "state", "algorithm", "key_bits",
		"public_key", "sealed_private_key", "kek_id", "fingerprint", "created_at", "published_at", "activated_at",
		"retired_at"}, 2*o.n, func(j int) ([]any, error) {
		i, slot := j/2, j%2
		if slot == 0 {
			t = timesFor(r, now, o.checkWindow)
		}
		name := fmt.Sprintf(o.domainFmt, i)
		p := pairs[j%len(pairs)]
		sel, state := provision.Selector1, keystore.StateActive
		// The active key was published as "next" a rotation before it
		// switched; the next key was published when that switch happened.
		created, activated := t.lastRotated-int64(rotationInterval/time.Microsecond), t.lastRotated
		if slot == 1 {
			sel, state = provision.Selector2, keystore.StateNext
			created, activated = t.lastRotated, 0
		}
		kekID, sealed, err := box.Seal(p.der, sealbox.AssociatedData(string(keystore.OwnerDomain), name, sel))
		if err != nil {
			return nil, err
		}
		return []any{string(keystore.OwnerDomain), name, sel, string(state), dkimkey.RSA, dkimkey.DefaultRSABits,
			p.pub, sealed, kekID, p.fingerprint, created, created, activated, int64(0)}, nil
	})
	if err != nil {
		return err
	}

	if _, err := tx.Exec(ctx, `INSERT INTO zone_changes (serial, owner_kind, owner) VALUES ($1, $2, $3)`,
		serial, string(keystore.OwnerBrand), o.brand); err != nil {
		return fmt.Errorf("journal zone change: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO audit_log (at, actor, action, brand, detail) VALUES ($1, $2, $3, $4, $5)`,
		nowUS, "bulkload", "domain.bulk-create", o.brand,
		fmt.Sprintf("%d domains with selector1 active and selector2 next, %d spare maildomains", o.n, o.spare)); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, keystore.ZoneChannel, fmt.Sprint(serial)); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	logf("rows written in %.1fs, committing serial %d", time.Since(t0).Seconds(), serial)
	return nil
}

// writeQueries writes the dnsperf query file: 90% names that exist (either
// selector), 10% that do not.
func writeQueries(o options) error {
	f, err := os.Create(o.queries)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	r := rand.New(rand.NewPCG(1, 2))
	for range o.queryCount {
		i := r.IntN(max(o.n, 1))
		if r.IntN(10) == 0 || o.n == 0 {
			fmt.Fprintf(w, "selector1-missing-%s._domainkey.%s TXT\n", domainname.Label(fmt.Sprintf(o.domainFmt, i)), o.zone)
		} else {
			fmt.Fprintf(w, "selector%d-%s._domainkey.%s TXT\n", 1+r.IntN(2), domainname.Label(fmt.Sprintf(o.domainFmt, i)), o.zone)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
