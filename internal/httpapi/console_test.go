package httpapi

import (
	"testing"
	"time"

	"dkimd/internal/console"
	"dkimd/internal/keystore"
)

// testConsole is the console every test Server mounts, so that the router
// under test is the one serve builds.
func testConsole(t *testing.T, store keystore.Store, now func() time.Time) *console.Console {
	t.Helper()
	c, err := console.New(console.Options{Brands: store, Key: []byte("console session key for the tests, 32+ bytes"), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
