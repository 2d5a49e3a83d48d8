// Package clocktest holds the settable clock that tests inject wherever
// dkimd takes a now func() time.Time. It is for tests only.
package clocktest

import (
	"sync"
	"time"
)

// Clock is a clock that moves only when a test moves it; every part of a
// test may read it from its own goroutine.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// New returns a clock showing t.
func New(t time.Time) *Clock { return &Clock{t: t} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
