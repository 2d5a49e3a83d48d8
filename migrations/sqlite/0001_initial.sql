-- Times are unix microseconds (0 = unset) in both dialects, so that one set
-- of queries serves SQLite and Postgres without per-dialect time handling.
CREATE TABLE brands (
    name                      TEXT PRIMARY KEY,
    secret_hash               TEXT NOT NULL,
    rotation_interval_seconds BIGINT NOT NULL DEFAULT 0,
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL
);

-- The guide's prerequisite: keys only for domains the brand has mail users in.
CREATE TABLE maildomains (
    brand      TEXT NOT NULL REFERENCES brands(name) ON DELETE CASCADE,
    domain     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (brand, domain)
);
CREATE INDEX maildomains_domain ON maildomains(domain);

CREATE TABLE domains (
    name              TEXT PRIMARY KEY,
    label             TEXT NOT NULL UNIQUE,
    brand             TEXT NOT NULL REFERENCES brands(name),
    status            TEXT NOT NULL,
    status_reason     TEXT NOT NULL DEFAULT '',
    active_selector   TEXT NOT NULL,
    key_bits          INTEGER NOT NULL,
    ed25519           BOOLEAN NOT NULL,
    version           BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    last_rotated_at   BIGINT NOT NULL DEFAULT 0,
    next_rotation_at  BIGINT NOT NULL DEFAULT 0,
    pending_switch_at BIGINT NOT NULL DEFAULT 0,
    last_checked_at   BIGINT NOT NULL DEFAULT 0,
    next_check_at     BIGINT NOT NULL DEFAULT 0,
    check_failures    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX domains_brand ON domains(brand, name);
CREATE INDEX domains_next_check ON domains(next_check_at);

-- One row per slot: the primary key is what guarantees that no selector ever
-- has two TXT records.
CREATE TABLE keys (
    owner_kind         TEXT NOT NULL,
    owner              TEXT NOT NULL,
    selector           TEXT NOT NULL,
    state              TEXT NOT NULL,
    algorithm          TEXT NOT NULL,
    key_bits           INTEGER NOT NULL,
    public_key         BLOB NOT NULL,
    sealed_private_key BLOB,
    kek_id             TEXT NOT NULL,
    fingerprint        TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    published_at       BIGINT NOT NULL DEFAULT 0,
    activated_at       BIGINT NOT NULL DEFAULT 0,
    retired_at         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (owner_kind, owner, selector)
);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    brand       TEXT NOT NULL DEFAULT '',
    domain      TEXT NOT NULL DEFAULT '',
    selector    TEXT NOT NULL DEFAULT '',
    fingerprint TEXT NOT NULL DEFAULT '',
    request_id  TEXT NOT NULL DEFAULT '',
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_brand ON audit_log(brand, id);
CREATE INDEX audit_log_domain ON audit_log(domain, id);

-- The SOA serial lives in the database so that it never goes backwards across
-- restarts and is the same on every replica.
CREATE TABLE zone_serial (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    serial BIGINT NOT NULL
);
INSERT INTO zone_serial (id, serial) VALUES (1, 1);

-- Which owners changed at which serial: lets DNS servers apply a change
-- without reloading the whole zone, and is the journal behind IXFR.
CREATE TABLE zone_changes (
    serial     BIGINT NOT NULL,
    owner_kind TEXT NOT NULL,
    owner      TEXT NOT NULL
);
CREATE INDEX zone_changes_serial ON zone_changes(serial);
