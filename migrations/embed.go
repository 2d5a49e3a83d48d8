// Package migrations embeds the ordered SQL migrations of each dialect.
// Files are named NNNN_what.sql; each runs in its own transaction.
package migrations

import "embed"

// FS holds sqlite/*.sql and postgres/*.sql.
//
//go:embed sqlite/*.sql postgres/*.sql
var FS embed.FS
