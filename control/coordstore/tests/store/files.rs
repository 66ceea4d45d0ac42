//! The SQLite file itself: its mode, a newer schema, hand-edited or foreign contents, its
//! durability settings. (Hand-edited values are checked on both backends.)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rusqlite::Connection;
use weft_coordstore::{SqliteStore, SCHEMA_VERSION};
use weft_tailnet::{Store, StoreError, StoreOp};

use crate::common::{api_key, both_backends, key, node, user, Backend, TempDb};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn companion(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

#[test]
fn database_and_wal_files_are_private() {
    let db = TempDb::new();
    let mut store = db.open();
    store.apply(&[StoreOp::PutUser(user(1))]).unwrap();
    assert_eq!(mode(&db.path), 0o600);
    // WAL mode: both companions exist while the connection is open.
    for suffix in ["-wal", "-shm"] {
        assert_eq!(mode(&companion(&db.path, suffix)), 0o600, "{suffix}");
    }
    drop(store);

    // A file someone widened is narrowed again on open, with its companions.
    fs::set_permissions(&db.path, fs::Permissions::from_mode(0o644)).unwrap();
    let wal = companion(&db.path, "-wal");
    fs::write(&wal, b"").unwrap();
    fs::set_permissions(&wal, fs::Permissions::from_mode(0o644)).unwrap();
    let mut store = db.open();
    assert_eq!(mode(&db.path), 0o600);
    assert_eq!(mode(&wal), 0o600);
    assert_eq!(store.load().unwrap().users.len(), 1);
}

#[test]
fn newer_schema_is_refused() {
    let db = TempDb::new();
    drop(db.open());
    let conn = Connection::open(&db.path).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 41)
        .unwrap();
    drop(conn);
    match SqliteStore::open(&db.path) {
        Err(StoreError::TooNew { found, supported }) => {
            assert_eq!(found, SCHEMA_VERSION + 41);
            assert_eq!(supported, SCHEMA_VERSION);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn reopen_keeps_schema_version() {
    let db = TempDb::new();
    drop(db.open());
    drop(db.open());
    let conn = Connection::open(&db.path).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
}

#[test]
fn durability_settings_are_full_and_wal() {
    let db = TempDb::new();
    let store = db.open();
    let settings = store.durability_settings().unwrap();
    assert_eq!(
        settings,
        vec![
            ("synchronous", "2".to_owned()),
            ("journal_mode", "wal".to_owned()),
            ("foreign_keys", "1".to_owned()),
        ]
    );
    // journal_mode is a property of the file: a second connection sees it too.
    let conn = Connection::open(&db.path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// Stores user 1, key 1, node 1 and API key 1, then runs `sql` on the database behind the store's back.
pub(crate) fn tampered<B: Backend>(root: &B, sql: &str) -> (B, B::S) {
    let db = root.another();
    let mut store = db.open();
    store
        .apply(&[
            StoreOp::PutUser(user(1)),
            StoreOp::PutKey(key(1, 1)),
            StoreOp::PutNode(node(1, 1)),
            StoreOp::PutApiKey(api_key(1)),
        ])
        .unwrap();
    db.tamper(sql);
    (db, store)
}

both_backends!(malformed_values_load_as_corrupt);

fn malformed_values_load_as_corrupt<B: Backend>() {
    let cases: &[(&str, &str)] = &[
        (
            "UPDATE nodes SET node_key = 'nodekey:not-hex'",
            "nodes.node_key",
        ),
        ("UPDATE nodes SET machine = 'nodekey:00'", "nodes.machine"),
        ("UPDATE nodes SET ipv4 = '300.1.2.3'", "nodes.ipv4"),
        ("UPDATE nodes SET hostinfo = '{\"OS\": 3'", "nodes.hostinfo"),
        ("UPDATE nodes SET endpoints = '[\"x\"]'", "nodes.endpoints"),
        (
            "UPDATE nodes SET approved_routes = 'null'",
            "nodes.approved_routes",
        ),
        (
            "UPDATE nodes SET last_seen = 'yesterday'",
            "nodes.last_seen",
        ),
        ("UPDATE users SET created = ''", "users.created"),
        ("UPDATE preauth_keys SET tags = '{}'", "preauth_keys.tags"),
        (
            "UPDATE counters SET next = 1 WHERE name = 'node'",
            "counters",
        ),
        ("DELETE FROM counters WHERE name = 'key'", "counters"),
        ("UPDATE api_keys SET created = 'today'", "api_keys.created"),
        ("UPDATE api_keys SET expiration = ''", "api_keys.expiration"),
        (
            "UPDATE counters SET next = 1 WHERE name = 'api_key'",
            "counters",
        ),
        ("DELETE FROM counters WHERE name = 'api_key'", "counters"),
    ];
    let root = B::fresh();
    for (sql, column) in cases {
        let (_db, mut store) = tampered(&root, sql);
        match store.load() {
            Err(StoreError::Corrupt { what, detail }) => {
                assert_eq!(what, *column, "{sql}: {detail}");
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
}

#[test]
fn corrupt_secret_hash_is_described_by_length_only() {
    // The CHECK constraint keeps a wrong length out; a hand-made table without it does not.
    for table in ["preauth_keys", "api_keys"] {
        let (_db, mut store) = tampered(
            &TempDb::new(),
            &format!(
                "PRAGMA ignore_check_constraints = ON; \
                 UPDATE {table} SET secret_hash = x'a5a5a5';"
            ),
        );
        match store.load() {
            Err(StoreError::Corrupt { what, detail }) => {
                assert_eq!(what, format!("{table}.secret_hash"));
                assert!(
                    !detail.contains("a5") && !detail.contains("165"),
                    "{detail}"
                );
            }
            other => panic!("{table}: {other:?}"),
        }
    }
}

#[test]
fn out_of_range_flag_is_corrupt() {
    let (_db, mut store) = tampered(
        &TempDb::new(),
        "PRAGMA ignore_check_constraints = ON; UPDATE api_keys SET revoked = 2;",
    );
    match store.load() {
        Err(StoreError::Corrupt { what, .. }) => assert_eq!(what, "api_keys.revoked"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn directory_is_refused_and_left_alone() {
    let db = TempDb::new();
    fs::create_dir(&db.path).unwrap();
    fs::set_permissions(&db.path, fs::Permissions::from_mode(0o755)).unwrap();
    match SqliteStore::open(&db.path) {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("not a regular file"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(mode(&db.path), 0o755);
}

#[test]
fn foreign_file_is_a_backend_error() {
    let db = TempDb::new();
    fs::write(
        &db.path,
        b"this is not an SQLite database, it is 48 bytes..",
    )
    .unwrap();
    match SqliteStore::open(&db.path) {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("not a database"), "{msg}"),
        other => panic!("{other:?}"),
    }
}
