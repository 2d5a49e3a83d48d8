//go:build race

package rotation_test

// raceEnabled: the race detector slows the embedded SQLite (pure Go) about
// twentyfold, so the simulation runs smaller under -race.
const raceEnabled = true
