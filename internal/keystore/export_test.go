package keystore

// LeaderPID is the Postgres backend of a leader's lock connection, 0
// without one, so that tests can cut it.
func LeaderPID(l Leader) uint32 {
	if pl, ok := l.(*pgLeader); ok {
		return pl.PID()
	}
	return 0
}
