package main

import (
	"math/rand/v2"
	"testing"
	"time"
)

// The loaded rows must look like a service that has run a while: no
// rotation or check already due (the rotation loop would start on a million
// domains at once), and a key's life-cycle times in order.
func TestTimesForLooksSettled(t *testing.T) {
	now := time.Now()
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		d := timesFor(r, now, 24*time.Hour)
		nowUS := now.UnixMicro()
		activeCreated := d.lastRotated - int64(rotationInterval/time.Microsecond)
		switch {
		case d.created > activeCreated:
			t.Fatalf("domain created at %d after its active key (%d)", d.created, activeCreated)
		case d.lastRotated >= nowUS || d.nextRotation <= nowUS:
			t.Fatalf("rotation times %d, %d do not straddle now %d", d.lastRotated, d.nextRotation, nowUS)
		case d.nextCheck < nowUS || d.nextCheck > now.Add(24*time.Hour).UnixMicro():
			t.Fatalf("next check %d outside the window", d.nextCheck)
		case d.lastChecked >= nowUS:
			t.Fatalf("last check %d not in the past", d.lastChecked)
		}
	}
}
