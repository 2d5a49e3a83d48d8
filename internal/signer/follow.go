package signer

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"dkimd/internal/keystore"
)

// FollowPostgres keeps a connection to the Postgres at url that LISTENs on
// keystore.ZoneChannel, and drops the cached key choices whenever any
// replica commits a key change, so that a rotation or an emergency
// revocation on one replica reaches this one's signatures at once rather
// than after MaxAge. It reconnects with back-off, invalidating after each
// (re)connect to cover what it missed, and returns when ctx ends.
//
// MaxAge still bounds what NOTIFY does not carry: a domain's status change
// (its DNS check passing) is not a key change.
func (s *Signer) FollowPostgres(ctx context.Context, url string) {
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		err := s.followOnce(ctx, url)
		if ctx.Err() != nil {
			return
		}
		s.opts.Log.Warn("signer's key change listener lost its connection; reconnecting",
			slog.Any("error", err), slog.Duration("in", backoff))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (s *Signer) followOnce(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+keystore.ZoneChannel); err != nil {
		return err
	}
	s.Invalidate()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		s.Invalidate()
	}
}
