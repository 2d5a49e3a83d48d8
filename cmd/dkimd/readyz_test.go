package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"dkimd/internal/keystore/keystoretest"
)

// TestReadyzWhileZoneLoads: the first zone load takes tens of seconds at a
// million domains, and neither the DNS nor the API port is open until it
// ends. /readyz must say "not ready" (naming the zone) all that time, or a
// load balancer sends traffic to a replica that refuses it. The test holds
// the load with a lock on the domains table, taken in Postgres, then lets it
// go. (Not the keys table: serve reads which KEKs the keys use before it
// starts any listener.)
func TestReadyzWhileZoneLoads(t *testing.T) {
	url := keystoretest.PostgresURL(t)
	env := postgresEnv(url, writeKEK(t, t.TempDir()))
	dataDir := t.TempDir()
	if err := run(context.Background(), []string{"migrate", "--data-dir", dataDir}, env, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}

	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	lock, err := db.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback()
	if _, err := lock.Exec("LOCK TABLE domains IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}

	ops := freeAddr(t)
	serve := runServe(t, []string{"serve", "--data-dir", dataDir, "--ops-addr", ops, "--api-addr", freeAddr(t),
		"--dns-addr", freeAddr(t), "--sign-addr", "", "--milter-addr", "", "--resolver", "127.0.0.1:9",
		"--key-pool-size", "0"}, env, io.Discard)

	type check struct {
		Name string `json:"name"`
		OK   bool   `json:"ok"`
	}
	readyz := func() (int, []check) {
		resp, err := http.Get("http://" + ops + "/readyz")
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		var body struct{ Checks []check }
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("readyz body: %v", err)
		}
		return resp.StatusCode, body.Checks
	}
	zoneFails := func(checks []check) bool {
		for _, c := range checks {
			if c.Name == "zone" && !c.OK {
				return true
			}
		}
		return false
	}

	// While the load waits for the lock: 503, because of the zone, for as
	// long as it waits.
	var seen int
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && seen < 5; time.Sleep(100 * time.Millisecond) {
		if ended, err := serve.ended(); ended {
			t.Fatalf("serve ended during the load: %v", err)
		}
		status, checks := readyz()
		if status == 0 {
			continue // the ops listener is not up yet
		}
		if status != http.StatusServiceUnavailable || !zoneFails(checks) {
			t.Fatalf("readyz during the zone load: %d %+v, want 503 with the zone check failing", status, checks)
		}
		seen++
	}
	if seen < 5 {
		t.Fatal("the ops listener never answered during the zone load")
	}

	if err := lock.Rollback(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if status, _ := readyz(); status == http.StatusOK {
			return
		}
	}
	status, checks := readyz()
	t.Fatalf("readyz after the load: %d %+v, want 200", status, checks)
}
