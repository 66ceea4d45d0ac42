//! A database written by the previous schema version (1: before API keys) is brought up to
//! this one in place: its records load unchanged, it gains an empty `api_keys` table and an
//! API key counter at 1, and it takes API keys afterwards. A migration that fails leaves the
//! database at version 1, untouched.
//!
//! The version-1 schemas below are frozen copies of what released builds created, not the
//! crate's own migration entries, so an edit to a released entry shows up here as a failure.

use weft_coordstore::{PG_SCHEMA_VERSION, SCHEMA_VERSION};
use weft_tailnet::{ApiKeyRecord, NextIds, Snapshot, Store, StoreOp};

use crate::common::{api_key, both_backends, key, node, user, Backend, PgDb, TempDb};

/// SQLite schema version 1, as released (`PRAGMA user_version = 1`).
const SQLITE_V1: &str = "
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
PRAGMA user_version = 1;
";

/// PostgreSQL schema version 1, as released, with its version row.
const PG_V1: &str = "
CREATE TABLE weft_schema (
    singleton BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    version   BIGINT  NOT NULL
);
INSERT INTO weft_schema (version) VALUES (1);
CREATE TABLE users (
    id           BIGINT PRIMARY KEY,
    name         TEXT   NOT NULL UNIQUE,
    display_name TEXT   NOT NULL,
    created      TEXT   NOT NULL
);

CREATE TABLE preauth_keys (
    id          BIGINT  PRIMARY KEY,
    prefix      TEXT    NOT NULL UNIQUE,
    secret_hash BYTEA   NOT NULL CHECK (octet_length(secret_hash) = 32),
    user_id     BIGINT  NOT NULL REFERENCES users (id),
    reusable    BOOLEAN NOT NULL,
    ephemeral   BOOLEAN NOT NULL,
    tags        TEXT    NOT NULL,
    created     TEXT    NOT NULL,
    expiration  TEXT    NOT NULL,
    used        BOOLEAN NOT NULL,
    revoked     BOOLEAN NOT NULL
);
CREATE INDEX preauth_keys_user_id ON preauth_keys (user_id);

CREATE TABLE nodes (
    id              BIGINT  PRIMARY KEY,
    machine         TEXT    NOT NULL UNIQUE,
    node_key        TEXT    NOT NULL UNIQUE,
    disco_key       TEXT    NOT NULL,
    user_id         BIGINT  NOT NULL REFERENCES users (id),
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
    ephemeral       BOOLEAN NOT NULL,
    auth_key        BIGINT
);
CREATE INDEX nodes_user_id ON nodes (user_id);

CREATE TABLE counters (
    name TEXT   PRIMARY KEY,
    next BIGINT NOT NULL
);
INSERT INTO counters (name, next) VALUES ('user', 1), ('key', 1), ('node', 1);
";

/// A backend whose version-1 database the test can build by hand.
trait Released: Backend {
    /// Builds the version-1 schema in an empty database.
    const V1: &'static str;
    /// The version this build migrates to.
    const CURRENT: i64;
    /// `bytes` as an SQL literal of the hash column's type.
    fn blob(bytes: &[u8]) -> String;
    /// The schema version the database records.
    fn version(&self) -> i64;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Released for TempDb {
    const V1: &'static str = SQLITE_V1;
    const CURRENT: i64 = SCHEMA_VERSION;

    fn blob(bytes: &[u8]) -> String {
        format!("x'{}'", hex(bytes))
    }

    fn version(&self) -> i64 {
        rusqlite::Connection::open(&self.path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }
}

impl Released for PgDb {
    const V1: &'static str = PG_V1;
    const CURRENT: i64 = PG_SCHEMA_VERSION;

    fn blob(bytes: &[u8]) -> String {
        format!("'\\x{}'", hex(bytes))
    }

    fn version(&self) -> i64 {
        self.client()
            .query_one("SELECT version FROM weft_schema", &[])
            .unwrap()
            .get(0)
    }
}

/// A version-1 database holding user 1, key 1 and node 1 as version 1 wrote them, with the
/// node counter past ids since deleted.
fn version_1_database<B: Released>() -> B {
    let db = B::fresh();
    let n = node(1, 1);
    let rows = format!(
        "INSERT INTO users (id, name, display_name, created) \
         VALUES (1, 'user1', 'User 1', '2023-11-14T22:13:21Z'); \
         INSERT INTO preauth_keys (id, prefix, secret_hash, user_id, reusable, ephemeral, tags, \
         created, expiration, used, revoked) VALUES (1, 'pfx1', {hash}, 1, '0', '0', '[]', \
         '2023-11-14T22:15:00Z', '0001-01-01T00:00:00Z', '0', '0'); \
         INSERT INTO nodes (id, machine, node_key, disco_key, user_id, tags, hostname, \
         given_name, ipv4, ipv6, hostinfo, endpoints, key_expiry, created, last_seen, \
         approved_routes, ephemeral, auth_key) VALUES (1, '{machine}', '{node_key}', \
         '{disco}', 1, '[]', 'host1', 'host1', NULL, NULL, NULL, '[]', \
         '0001-01-01T00:00:00Z', '2023-11-14T22:16:40Z', NULL, '[]', '0', NULL); \
         UPDATE counters SET next = 2 WHERE name IN ('user', 'key'); \
         UPDATE counters SET next = 5 WHERE name = 'node';",
        hash = B::blob(&key(1, 1).secret_hash),
        machine = n.machine,
        node_key = n.node_key,
        disco = n.disco_key,
    );
    db.tamper(&format!("{}{rows}", B::V1));
    assert_eq!(db.version(), 1);
    db
}

/// What the version-1 database holds, as this build loads it.
fn version_1_snapshot() -> Snapshot {
    Snapshot {
        users: vec![user(1)],
        keys: vec![key(1, 1)],
        nodes: vec![node(1, 1)],
        api_keys: Vec::new(),
        next_ids: NextIds {
            user: 2,
            key: 2,
            node: 5,
            api_key: 1,
        },
    }
}

both_backends!(
    version_1_database_migrates_in_place,
    failed_migration_leaves_version_1,
);

fn version_1_database_migrates_in_place<B: Released>() {
    assert_eq!(B::CURRENT, 2);
    let db = version_1_database::<B>();
    let mut store = db.open();
    assert_eq!(db.version(), B::CURRENT);
    let mut expected = version_1_snapshot();
    assert_eq!(store.load().unwrap(), expected);

    // The new table works, constraints included, and its counter moves.
    store.apply(&[StoreOp::PutApiKey(api_key(1))]).unwrap();
    let dup = ApiKeyRecord {
        prefix: "api1".into(),
        ..api_key(2)
    };
    assert!(store.apply(&[StoreOp::PutApiKey(dup)]).is_err());
    drop(store);

    let mut store = db.open();
    expected.api_keys = vec![api_key(1)];
    expected.next_ids.api_key = 2;
    assert_eq!(store.load().unwrap(), expected);
    assert_eq!(db.version(), B::CURRENT);
}

fn failed_migration_leaves_version_1<B: Released>() {
    let db = version_1_database::<B>();
    // Something in the way of version 2: its first statement fails.
    db.tamper("CREATE TABLE api_keys (x BIGINT)");
    assert!(weft_coordstore::open(&db.spec()).is_err());
    assert_eq!(db.version(), 1);
    // Nothing was half done: once the obstacle is gone, the migration runs whole.
    db.tamper("DROP TABLE api_keys");
    assert_eq!(db.open().load().unwrap(), version_1_snapshot());
    assert_eq!(db.version(), B::CURRENT);
}
