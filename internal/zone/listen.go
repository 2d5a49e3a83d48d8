package zone

import (
	"context"
	"log/slog"
	"net"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"dkimd/internal/keystore"
)

// listenConfig sets SO_REUSEPORT so that several UDP sockets share the port
// and the kernel spreads queries over them, one reading goroutine each.
func listenConfig(reuse bool) *net.ListenConfig {
	if !reuse {
		return &net.ListenConfig{}
	}
	return &net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, reusePort, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
}

// listenLoop holds a dedicated Postgres connection that LISTENs for zone
// changes committed by any replica, reconnecting with back-off. Each
// (re)connect is followed by a Sync, which catches up with whatever was
// missed while the connection was down.
func (s *Server) listenLoop(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("zone change listener lost its connection; reconnecting", slog.Any("error", err), slog.Duration("in", backoff))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (s *Server) listenOnce(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, s.opts.ListenURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+keystore.ZoneChannel); err != nil {
		return err
	}
	s.Kick()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		s.Kick()
	}
}
