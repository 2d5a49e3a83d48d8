// Command load fills a dkimd store with N synthetic domains of one brand for
// the DNS benchmark (scripts/bench-dns.sh), and writes a dnsperf query file:
// about 90% names that exist, 10% that do not.
//
// Each domain gets two RSA-2048 public keys, so that its TXT records are the
// size of real ones; the keys are a few real keys generated here and reused,
// and no private keys are stored (the benchmark serves DNS, it signs nothing).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"dkimd/internal/dkimkey"
	"dkimd/internal/keystore"
)

func main() {
	dataDir := flag.String("data-dir", "", "dkimd data dir (SQLite)")
	dbURL := flag.String("database-url", "", "Postgres URL instead of SQLite")
	n := flag.Int("n", 10000, "domains to create")
	queries := flag.String("queries", "", "dnsperf query file to write")
	nQueries := flag.Int("query-count", 200000, "lines of the query file")
	zone := flag.String("zone", "oxcloud.zone", "the zone")
	flag.Parse()
	if err := run(*dataDir, *dbURL, *n, *queries, *nQueries, *zone); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

func label(i int) string { return fmt.Sprintf("d%07d-example-com", i) }

func run(dataDir, dbURL string, n int, queries string, nQueries int, zone string) error {
	ctx := context.Background()
	store, err := keystore.Open(ctx, dataDir, dbURL)
	if err != nil {
		return err
	}
	defer store.Close()
	if _, err := store.Migrate(ctx); err != nil {
		return err
	}
	var pubs [][]byte
	for range 8 {
		k, err := dkimkey.Generate(dkimkey.RSA, 2048)
		if err != nil {
			return err
		}
		p, err := dkimkey.PublicBytes(k.Public())
		if err != nil {
			return err
		}
		pubs = append(pubs, p)
	}
	now := time.Now()
	start := time.Now()
	err = store.Update(ctx, func(tx keystore.Tx) error {
		_, err := tx.CreateBrand(ctx, keystore.Brand{Name: "bench", SecretHash: "-", CreatedAt: now, UpdatedAt: now})
		return err
	})
	if err != nil {
		return err
	}
	const batch = 20000
	for lo := 0; lo < n; lo += batch {
		err := store.Update(ctx, func(tx keystore.Tx) error {
			for i := lo; i < min(lo+batch, n); i++ {
				name := fmt.Sprintf("d%07d.example.com", i)
				// Far-off check and rotation times keep the rotation loop
				// idle during the benchmark.
				_, err := tx.CreateDomain(ctx, keystore.Domain{Name: name, Label: label(i), Brand: "bench",
					Status: keystore.StatusActive, ActiveSelector: "selector1", KeyBits: 2048, CreatedAt: now, UpdatedAt: now,
					LastRotatedAt: now, NextRotationAt: now.Add(180 * 24 * time.Hour), NextCheckAt: now.Add(365 * 24 * time.Hour)})
				if err != nil {
					return err
				}
				for s, st := range []keystore.KeyState{keystore.StateActive, keystore.StateNext} {
					p := pubs[(2*i+s)%len(pubs)]
					if err := tx.PutKey(ctx, keystore.Key{OwnerKind: keystore.OwnerDomain, Owner: name,
						Selector: fmt.Sprintf("selector%d", s+1), State: st, Algorithm: dkimkey.RSA, KeyBits: 2048,
						PublicKey: p, KEKID: "bench", Fingerprint: dkimkey.Fingerprint(p), CreatedAt: now, PublishedAt: now}); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "load: %d/%d domains (%.0f/s)\n", min(lo+batch, n), n, float64(min(lo+batch, n))/time.Since(start).Seconds())
	}
	if queries == "" {
		return nil
	}
	f, err := os.Create(queries)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	r := rand.New(rand.NewPCG(1, 2))
	for range nQueries {
		i := r.IntN(n)
		if r.IntN(10) == 0 {
			fmt.Fprintf(w, "selector1-missing%07d-example-com._domainkey.%s TXT\n", i, zone)
		} else {
			fmt.Fprintf(w, "selector%d-%s._domainkey.%s TXT\n", 1+r.IntN(2), label(i), zone)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}
