package keystore

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// isUnavailable reports errors that mean "the database cannot be reached
// right now", as opposed to a bad query: the API answers 503 for these and
// the caller may retry.
func isUnavailable(err error) bool {
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &connectErr):
		// Whatever the server said while we connected (not accepting
		// connections, starting up), the database is not there for us.
		return true
	case errors.As(err, &pgErr):
		// Class 08 is connection exception, 57P0x is operator intervention
		// (shutdown, crash), 53 is insufficient resources.
		c := pgErr.Code
		return len(c) >= 2 && (c[:2] == "08" || c[:2] == "53" || c == "57P01" || c == "57P02" || c == "57P03")
	case errors.As(err, &netErr):
		return true
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, context.DeadlineExceeded):
		return true
	}
	return pgconn.SafeToRetry(err)
}
