package rotation_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"dkimd/internal/keystore"
	"dkimd/internal/provision"
	"dkimd/internal/provision/provisiontest"
	"dkimd/internal/sealbox"
)

// TestSIGKILL runs the real dkimd with rotation intervals of a second, kills
// it with SIGKILL at random points many times over, and checks after each
// kill that every domain has exactly one published active key that was
// published for the lead time before it signed, and at the end that
// rotation carried on across the kills.
func TestSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs dkimd")
	}
	ctx := context.Background()
	bin := filepath.Join(t.TempDir(), "dkimd")
	if out, err := exec.Command("go", "build", "-o", bin, "dkimd/cmd/dkimd").CombinedOutput(); err != nil {
		t.Fatalf("build dkimd: %v\n%s", err, out)
	}

	dataDir := t.TempDir()
	store, err := keystore.OpenSQLite(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	box, _, _, err := sealbox.LoadOrCreate(dataDir) // the KEK dkimd serve will load
	if err != nil {
		t.Fatal(err)
	}
	gen, err := provisiontest.NewGenerator()
	if err != nil {
		t.Fatal(err)
	}
	prov := &provision.Service{Store: store, Box: box, Keys: gen, Zone: zone, Now: time.Now}
	if _, err := prov.CreateBrand(ctx, "acme", operator); err != nil {
		t.Fatal(err)
	}
	const nDomains = 12
	for i := range nDomains {
		name := fmt.Sprintf("k%02d.example", i)
		if err := prov.AddMaildomain(ctx, "acme", name, operator); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := prov.CreateDomain(ctx, "acme", name, provision.DomainOptions{Ed25519: i%3 == 0}, operator); err != nil {
			t.Fatal(err)
		}
	}
	dns := startPublicDNS(t, store, zone, time.Now, allOK)
	dns.mu.Lock()
	dns.noCache = true
	dns.mu.Unlock()

	const killLead = 400 * time.Millisecond
	ops := freeAddr(t)
	args := []string{"serve", "--data-dir", dataDir, "--zone", zone, "--api-addr", "127.0.0.1:0", "--dns-addr", "",
		"--sign-addr", "", "--milter-addr", "", "--ops-addr", ops, "--resolver", dns.addr, "--key-pool-size", "0",
		"--publish-lead-time", killLead.String(), "--rotation-interval", "1s", "--retire-grace", "300ms", "--log-level", "warn"}
	rng := rand.New(rand.NewPCG(9, 9))
	// At least minRounds kills, and more while the rotations they allowed
	// are fewer than the domains: on a loaded machine serve spends more of
	// each round starting up, and the point is to kill it mid-rotation, not
	// to time it.
	const minRounds, maxRounds = 15, 60
	rounds := 0
	for round := 0; round < maxRounds && (round < minRounds || rotations(t, store) < nDomains); round++ {
		rounds++
		cmd := exec.Command(bin, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Every other round counts its moment from the end of start-up, so
		// that on a loaded machine, where start-up eats the window, rounds
		// still kill serve in the middle of rotations; the others may kill
		// it anywhere, start-up included.
		if round%2 == 1 {
			waitHealthy(ops, 10*time.Second)
		}
		time.Sleep(time.Duration(200+rng.IntN(900)) * time.Millisecond)
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait() // "signal: killed"
		if bytes.Contains(stderr.Bytes(), []byte(`"level":"ERROR"`)) {
			t.Logf("round %d: dkimd logged errors:\n%s", round, stderr.String())
		}
		checkAfterKill(t, store, killLead, round)
	}

	recs := rotations(t, store)
	if recs < nDomains {
		t.Fatalf("only %d rotations across %d kills", recs, rounds)
	}
	t.Logf("%d domain rotations across %d kills", recs, rounds)
}

// rotations counts the domain rotations in the audit log.
func rotations(t *testing.T, store *keystore.SQL) int {
	t.Helper()
	recs := 0
	for f := (keystore.AuditFilter{}); ; {
		page, err := store.Audit(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return recs
		}
		for _, r := range page {
			if r.Action == "domain.rotate" {
				recs++
			}
		}
		f.BeforeID = page[len(page)-1].ID
	}
}

func checkAfterKill(t *testing.T, store *keystore.SQL, lead time.Duration, round int) {
	t.Helper()
	ctx := context.Background()
	domains, err := store.Domains(ctx, "acme", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range domains {
		keys, err := store.Keys(ctx, keystore.OwnerDomain, d.Name)
		if err != nil {
			t.Fatal(err)
		}
		want := 2
		if d.Ed25519 {
			want = 4
		}
		if len(keys) != want {
			t.Errorf("round %d: %s has %d slots, want %d", round, d.Name, len(keys), want)
		}
		active := 0
		for _, k := range keys {
			if len(k.PublicKey) == 0 || k.SealedPrivateKey == nil {
				t.Errorf("round %d: %s/%s (%s) unpublished or without private key", round, d.Name, k.Selector, k.State)
			}
			if k.State != keystore.StateActive {
				continue
			}
			active++
			if k.Selector != d.ActiveSelector && k.Selector != edSelectorOf(d.ActiveSelector) {
				t.Errorf("round %d: %s: %s active, domain says %s", round, d.Name, k.Selector, d.ActiveSelector)
			}
			// The first keys are minted just before their domain row.
			initial := k.ActivatedAt.Equal(k.PublishedAt) && k.PublishedAt.Equal(k.CreatedAt) && d.LastRotatedAt.IsZero() &&
				d.CreatedAt.Sub(k.CreatedAt).Abs() < 5*time.Second
			if !initial && k.ActivatedAt.Before(k.PublishedAt.Add(lead)) {
				t.Errorf("round %d: %s/%s signs since %v, published only at %v", round, d.Name, k.Selector, k.ActivatedAt, k.PublishedAt)
			}
		}
		if active != want/2 {
			t.Errorf("round %d: %s has %d active keys, want %d", round, d.Name, active, want/2)
		}
	}
}

func edSelectorOf(sel string) string { return sel + "-ed25519" }

// freeAddr is a loopback TCP address free at the time of the call.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitHealthy waits until serve's ops listener answers /healthz, at most d.
func waitHealthy(addr string, d time.Duration) {
	c := &http.Client{Timeout: 200 * time.Millisecond}
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		resp, err := c.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
	}
}
