// Package keystore is dkimd's persistent state: brands, their maildomains,
// the DKIM domains with their key slots, the audit log and the zone serial.
// One SQL implementation serves two dialects: embedded SQLite (the zero-setup
// default, one process) and Postgres through pgx (production, many replicas).
//
// It stores private keys only as sealed ciphertext (see package sealbox) and
// never sees them in the clear; it knows no HTTP, DNS or rotation policy.
package keystore

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors, mapped to HTTP statuses in exactly one place in httpapi.
var (
	ErrNotFound    = errors.New("keystore: not found")
	ErrConflict    = errors.New("keystore: conflict")
	ErrStale       = errors.New("keystore: stale version")
	ErrUnavailable = errors.New("keystore: database unavailable")
)

// Domain status values (docs/api.md).
const (
	StatusPendingDNS = "pending-dns"
	StatusActive     = "active"
	StatusDNSError   = "dns-error"
)

// KeyState is the life-cycle state of the key in one selector slot.
type KeyState string

// Key states (docs/rotation.md).
const (
	StateNext     KeyState = "next"     // published, not signing
	StateActive   KeyState = "active"   // signing
	StateRetiring KeyState = "retiring" // published for mail in flight, not signing
	StateRevoked  KeyState = "revoked"  // published with an empty p=, private key destroyed
)

// OwnerKind says whether a key belongs to a customer domain or is a brand's
// fallback key.
type OwnerKind string

// Owner kinds.
const (
	OwnerDomain OwnerKind = "domain"
	OwnerBrand  OwnerKind = "brand"
)

// Brand is a reseller or ISP with API credentials.
type Brand struct {
	Name       string
	SecretHash string
	// RotationInterval overrides the global rotation interval; 0 means default.
	RotationInterval time.Duration
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

// Domain is a maildomain that holds DKIM keys. Zero times mean "not set".
type Domain struct {
	Name           string // IDNA A-label, lower case, no trailing dot
	Label          string // Name with dots replaced by dashes
	Brand          string
	Status         string
	StatusReason   string
	ActiveSelector string
	KeyBits        int
	Ed25519        bool
	// Version increases with every update; UpdateDomain refuses a stale one,
	// so concurrent writers (API and rotation) cannot overwrite each other.
	Version         int64
	CreatedAt       time.Time
	UpdatedAt       time.Time
	LastRotatedAt   time.Time
	NextRotationAt  time.Time
	PendingSwitchAt time.Time
	LastCheckedAt   time.Time
	NextCheckAt     time.Time
	CheckFailures   int
}

// Key is the key in one selector slot of a domain or a brand.
type Key struct {
	OwnerKind OwnerKind
	Owner     string // domain name or brand name
	Selector  string
	State     KeyState
	Algorithm string // dkimkey.RSA or dkimkey.Ed25519
	KeyBits   int
	// PublicKey is what DNS publishes in p=; empty for a revoked key.
	PublicKey []byte
	// SealedPrivateKey is the PKCS#8 key sealed by sealbox under KEKID; nil
	// once the key is destroyed.
	SealedPrivateKey []byte
	KEKID            string
	Fingerprint      string
	CreatedAt        time.Time
	PublishedAt      time.Time
	ActivatedAt      time.Time
	RetiredAt        time.Time
}

// AuditRecord is one mutation, by anyone.
type AuditRecord struct {
	ID          int64
	At          time.Time
	Actor       string // "brand:acme", "operator", "rotation", "cli"
	Action      string // "domain.create", "key.rotate", ...
	Brand       string
	Domain      string
	Selector    string
	Fingerprint string
	RequestID   string
	Detail      string
}

// AuditFilter selects audit records, newest first.
type AuditFilter struct {
	Brand    string
	Domain   string
	BeforeID int64 // 0: from the newest
	Limit    int
}

// Reader is every read of the store.
type Reader interface {
	Brand(ctx context.Context, name string) (Brand, error)
	Brands(ctx context.Context) ([]Brand, error)
	IsMaildomain(ctx context.Context, brand, domain string) (bool, error)
	Maildomains(ctx context.Context, brand string) ([]string, error)
	Domain(ctx context.Context, name string) (Domain, error)
	DomainByLabel(ctx context.Context, label string) (Domain, error)
	// Domains lists a brand's domains ordered by name, those after `after`.
	Domains(ctx context.Context, brand, after string, limit int) ([]Domain, error)
	CountDomains(ctx context.Context, brand string) (int, error)
	// Keys lists the slots of one owner ordered by selector.
	Keys(ctx context.Context, kind OwnerKind, owner string) ([]Key, error)
	// BrandDomainKeys returns the keys of a brand's domains whose names lie
	// in (after, last], by domain name: one query for a page of Domains.
	BrandDomainKeys(ctx context.Context, brand, after, last string) (map[string][]Key, error)
	Audit(ctx context.Context, f AuditFilter) ([]AuditRecord, error)
	Serial(ctx context.Context) (uint32, error)
}

// Tx is a transaction: every read, and the writes.
type Tx interface {
	Reader
	CreateBrand(ctx context.Context, b Brand) (Brand, error)
	UpdateBrand(ctx context.Context, b Brand) (Brand, error)
	// DeleteBrand removes a brand and its maildomains; it is ErrConflict
	// while the brand still holds domains.
	DeleteBrand(ctx context.Context, name string) error
	AddMaildomain(ctx context.Context, brand, domain string) error
	RemoveMaildomain(ctx context.Context, brand, domain string) error
	CreateDomain(ctx context.Context, d Domain) (Domain, error)
	// UpdateDomain writes d if its Version is current and returns it with
	// the next version; ErrStale otherwise.
	UpdateDomain(ctx context.Context, d Domain) (Domain, error)
	DeleteDomain(ctx context.Context, name string) error
	// PutKey creates or replaces the key in a slot: a slot never holds two.
	// Like DeleteKeys, it records a change of the owner's published
	// records: the commit raises the zone serial once, journals the owner
	// and tells the watchers (Watch).
	PutKey(ctx context.Context, k Key) error
	DeleteKeys(ctx context.Context, kind OwnerKind, owner string) error
	// DeleteKey removes one slot; ErrNotFound when it is empty.
	DeleteKey(ctx context.Context, kind OwnerKind, owner, selector string) error
	AppendAudit(ctx context.Context, r AuditRecord) error
}

// Store is the persistent state.
type Store interface {
	Reader
	// Update runs fn in one transaction and commits when it returns nil.
	Update(ctx context.Context, fn func(tx Tx) error) error
	Ping(ctx context.Context) error
	Dialect() string
	Close() error
}
