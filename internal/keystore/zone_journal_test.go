package keystore_test

import (
	"context"
	"testing"

	"dkimd/internal/keystore"
	"dkimd/internal/keystore/keystoretest"
)

func TestZoneJournalPrune(t *testing.T) {
	keystoretest.ForEach(t, func(t *testing.T, s *keystore.SQL) {
		ctx := context.Background()
		if _, ok, err := s.ZoneJournalFloor(ctx); err != nil || ok {
			t.Fatalf("empty journal: ok %v, %v", ok, err)
		}
		for _, b := range []string{"a1", "a2", "a3", "a4", "a5"} {
			mustUpdate(t, s, func(tx keystore.Tx) error {
				k := key(b, "selector1", keystore.StateActive)
				k.OwnerKind = keystore.OwnerBrand
				return tx.PutKey(ctx, k)
			})
		}
		serial, _ := s.Serial(ctx)
		floor, ok, err := s.ZoneJournalFloor(ctx)
		if err != nil || !ok || floor != serial-4 {
			t.Fatalf("floor %d ok %v err %v; serial %d", floor, ok, err, serial)
		}
		n, err := s.PruneZoneJournal(ctx, 2)
		if err != nil || n != 3 {
			t.Fatalf("pruned %d, %v; want 3", n, err)
		}
		if floor, _, _ := s.ZoneJournalFloor(ctx); floor != serial-1 {
			t.Fatalf("floor after prune %d, want %d", floor, serial-1)
		}
		changes, err := s.ZoneChangesSince(ctx, serial-2, serial)
		if err != nil || len(changes) != 2 {
			t.Fatalf("changes kept: %v, %v", changes, err)
		}
		if n, err := s.PruneZoneJournal(ctx, 1000); err != nil || n != 0 {
			t.Fatalf("prune with a large keep: %d, %v", n, err)
		}
	})
}
