package main

import (
	"log/slog"

	"golang.org/x/sys/unix"
)

// raiseFileLimit lifts the soft limit on open descriptors to the hard one:
// every DNS TCP connection, milter session and HTTP client holds one, and a
// distribution's default soft limit (1024) is what a flood of idle
// connections exhausts first (docs/reliability.md). Go's runtime already
// does this at start (since Go 1.19); doing it here as well makes it hold
// whatever the runtime does, and logs both limits so an operator sees what
// the process may open.
func raiseFileLimit(log *slog.Logger) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("cannot read the descriptor limit", slog.String("err", err.Error()))
		return
	}
	soft := lim.Cur
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			log.Warn("cannot raise the descriptor limit", slog.Uint64("soft", soft), slog.Uint64("hard", lim.Max),
				slog.String("err", err.Error()))
			return
		}
	}
	log.Info("descriptor limit", slog.Uint64("soft_at_start", soft), slog.Uint64("soft", lim.Cur), slog.Uint64("hard", lim.Max))
}
