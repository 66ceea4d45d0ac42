//! The database schema and its migrations.
//!
//! Why numbered migrations in `PRAGMA user_version`: a coordinator's database outlives the
//! binary that created it, so every build must be able to bring an older database up to its
//! own schema, and must refuse one written by a newer build rather than misread it. Each entry
//! of [`MIGRATIONS`] moves the schema one version up; they run in order, all in one
//! transaction with the version bump, so a crash mid-upgrade leaves the old version intact.
//! Entries are never edited once released; a change is a new entry.
//!
//! Why these column types: keys are stored in their prefixed text form (`mkey:…`), times as
//! RFC 3339 text and lists as JSON, so the database is readable with the `sqlite3` shell
//! during an incident; `STRICT` tables make SQLite refuse a value of the wrong storage class
//! instead of silently converting it. Unique constraints mirror what the coordinator already
//! guarantees (one user per login name, one pre-auth key and one API key per prefix, one node
//! per machine key and per node key), so a bug there fails a write instead of persisting an
//! inconsistent tailnet.

use rusqlite::{Connection, TransactionBehavior};
use weft_tailnet::StoreError;

use crate::backend;

/// Version 1: users, pre-auth keys, nodes, and the next-id counters.
///
/// `nodes.auth_key` has no foreign key on purpose: a node keeps naming the key it registered
/// with after that key is deleted (the in-memory reference store behaves the same).
const V1: &str = "
CREATE TABLE users (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    display_name TEXT    NOT NULL,
    created      TEXT    NOT NULL
) STRICT;

CREATE TABLE preauth_keys (
    id          INTEGER PRIMARY KEY,
    prefix      TEXT    NOT NULL UNIQUE,
    secret_hash BLOB    NOT NULL CHECK (length(secret_hash) = 32),
    user_id     INTEGER NOT NULL REFERENCES users (id),
    reusable    INTEGER NOT NULL CHECK (reusable IN (0, 1)),
    ephemeral   INTEGER NOT NULL CHECK (ephemeral IN (0, 1)),
    tags        TEXT    NOT NULL,
    created     TEXT    NOT NULL,
    expiration  TEXT    NOT NULL,
    used        INTEGER NOT NULL CHECK (used IN (0, 1)),
    revoked     INTEGER NOT NULL CHECK (revoked IN (0, 1))
) STRICT;
CREATE INDEX preauth_keys_user_id ON preauth_keys (user_id);

CREATE TABLE nodes (
    id              INTEGER PRIMARY KEY,
    machine         TEXT    NOT NULL UNIQUE,
    node_key        TEXT    NOT NULL UNIQUE,
    disco_key       TEXT    NOT NULL,
    user_id         INTEGER NOT NULL REFERENCES users (id),
    tags            TEXT    NOT NULL,
    hostname        TEXT    NOT NULL,
    given_name      TEXT    NOT NULL,
    ipv4            TEXT,
    ipv6            TEXT,
    hostinfo        TEXT,
    endpoints       TEXT    NOT NULL,
    key_expiry      TEXT    NOT NULL,
    created         TEXT    NOT NULL,
    last_seen       TEXT,
    approved_routes TEXT    NOT NULL,
    ephemeral       INTEGER NOT NULL CHECK (ephemeral IN (0, 1)),
    auth_key        INTEGER
) STRICT;
CREATE INDEX nodes_user_id ON nodes (user_id);

CREATE TABLE counters (
    name TEXT    PRIMARY KEY,
    next INTEGER NOT NULL
) STRICT;
INSERT INTO counters (name, next) VALUES ('user', 1), ('key', 1), ('node', 1);
";

/// Version 2: API keys of the HTTP admin API, with their own id counter.
///
/// Encoded as `preauth_keys` is (times as RFC 3339 text, the 32-byte hash as a BLOB, the flag
/// as 0/1). The prefix is unique among API keys, as the coordinator keeps it; an API key and a
/// pre-auth key are separate kinds of key (told apart by their text, kept in separate tables),
/// so no constraint spans both. The counter starts past any id already in the table: in a
/// database coming from version 1 the table is new and empty, so it starts at 1.
const V2: &str = "
CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY,
    prefix      TEXT    NOT NULL UNIQUE,
    secret_hash BLOB    NOT NULL CHECK (length(secret_hash) = 32),
    created     TEXT    NOT NULL,
    expiration  TEXT    NOT NULL,
    revoked     INTEGER NOT NULL CHECK (revoked IN (0, 1))
) STRICT;

INSERT INTO counters (name, next) SELECT 'api_key', coalesce(max(id), 0) + 1 FROM api_keys;
";

/// The migrations, oldest first: entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2];

/// The schema version this build writes and the newest it can read.
// A handful of entries: the cast cannot truncate.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`SCHEMA_VERSION`], in one immediate transaction (so two processes
/// opening a fresh file cannot both create the tables).
///
/// # Errors
/// [`StoreError::TooNew`] when the database is newer than this build, [`StoreError::Corrupt`]
/// for a negative version, [`StoreError::Backend`] when SQLite fails.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend)?;
    let found: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(backend)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let done = usize::try_from(found).map_err(|_| StoreError::Corrupt {
        what: "schema version",
        detail: format!("{found} is negative"),
    })?;
    if done == MIGRATIONS.len() {
        return Ok(());
    }
    for sql in MIGRATIONS.iter().skip(done) {
        tx.execute_batch(sql).map_err(backend)?;
    }
    // PRAGMA takes no bound parameters; the value is our own integer constant.
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
        .map_err(backend)?;
    tx.commit().map_err(backend)
}
