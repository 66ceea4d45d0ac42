//! What is particular to PostgreSQL: the session's durability settings, the schema version
//! row, hand-made changes SQLite cannot have (a dropped CHECK, a column of another type), an
//! unreachable server, and use from inside a tokio runtime.

use weft_coordstore::{PgStore, PG_SCHEMA_VERSION};
use weft_tailnet::{Store, StoreError, StoreOp};

use crate::common::{api_key, key, node, pg_admin, user, Backend, PgDb};
use crate::files::tampered;

#[test]
fn durability_settings_are_on() {
    let db = PgDb::new();
    let store = db.open();
    assert_eq!(
        store.durability_settings().unwrap(),
        vec![
            ("synchronous_commit", "on".to_owned()),
            ("fsync", "on".to_owned()),
        ]
    );
}

#[test]
fn schema_version_row_and_newer_schema_is_refused() {
    let db = PgDb::new();
    drop(db.open());
    drop(db.open());
    let mut client = db.client();
    let version: i64 = client
        .query_one("SELECT version FROM weft_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, PG_SCHEMA_VERSION);
    client
        .execute(
            "UPDATE weft_schema SET version = $1",
            &[&(PG_SCHEMA_VERSION + 41)],
        )
        .unwrap();
    match PgStore::connect(&db.conninfo) {
        Err(StoreError::TooNew { found, supported }) => {
            assert_eq!(found, PG_SCHEMA_VERSION + 41);
            assert_eq!(supported, PG_SCHEMA_VERSION);
        }
        other => panic!("{other:?}"),
    }
    // A missing version row is corruption, not a fresh database.
    client.batch_execute("DELETE FROM weft_schema").unwrap();
    match PgStore::connect(&db.conninfo) {
        Err(StoreError::Corrupt { what, .. }) => assert_eq!(what, "schema version"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn corrupt_secret_hash_is_described_by_length_only() {
    let root = PgDb::new();
    for table in ["preauth_keys", "api_keys"] {
        let (_db, mut store) = tampered(
            &root,
            &format!(
                "ALTER TABLE {table} DROP CONSTRAINT {table}_secret_hash_check; \
                 UPDATE {table} SET secret_hash = '\\xa5a5a5';"
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
fn column_of_another_type_is_corrupt() {
    let root = PgDb::new();
    for (sql, column) in [
        (
            "ALTER TABLE nodes ALTER COLUMN ephemeral TYPE integer USING 1",
            "nodes.ephemeral",
        ),
        (
            "ALTER TABLE users ALTER COLUMN display_name DROP NOT NULL; \
             UPDATE users SET display_name = NULL",
            "users.display_name",
        ),
        (
            "ALTER TABLE api_keys ALTER COLUMN revoked TYPE text USING 'no'",
            "api_keys.revoked",
        ),
    ] {
        let (_db, mut store) = tampered(&root, sql);
        match store.load() {
            Err(StoreError::Corrupt { what, .. }) => assert_eq!(what, column, "{sql}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
}

#[test]
fn check_violation_error_carries_no_secret() {
    // The server's DETAIL for a failing row quotes every value, the hash among them.
    let db = PgDb::new();
    let mut store = db.open();
    store.apply(&[StoreOp::PutUser(user(1))]).unwrap();
    db.tamper("ALTER TABLE preauth_keys ADD CONSTRAINT no_tags CHECK (tags = 'never')");
    let mut k = key(1, 1);
    k.secret_hash = [0xcd; 32];
    match store.apply(&[StoreOp::PutKey(k)]) {
        Err(StoreError::Backend(msg)) => {
            assert!(msg.contains("no_tags"), "{msg}");
            assert!(!msg.contains("cdcd") && !msg.contains("pfx1"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    db.tamper("ALTER TABLE api_keys ADD CONSTRAINT no_api CHECK (revoked)");
    let mut a = api_key(1);
    a.secret_hash = [0xcd; 32];
    match store.apply(&[StoreOp::PutApiKey(a)]) {
        Err(StoreError::Backend(msg)) => {
            assert!(msg.contains("no_api"), "{msg}");
            assert!(!msg.contains("cdcd") && !msg.contains("api1"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unreachable_server_is_a_backend_error() {
    let dir = tempfile::tempdir().unwrap();
    let conninfo = format!(
        "host={} user=weft password=hunter2 dbname=weft connect_timeout=2",
        dir.path().display()
    );
    match PgStore::connect(&conninfo) {
        Err(StoreError::Backend(msg)) => {
            assert!(!msg.contains("hunter2"), "{msg}");
            // The cause is kept: here, no socket in that directory.
            assert!(msg.contains("No such file"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        PgStore::connect("host=/tmp port=notaport"),
        Err(StoreError::Backend(_))
    ));
}

#[test]
fn open_picks_the_backend_from_the_spec() {
    let db = PgDb::new();
    let mut store = weft_coordstore::open(&db.conninfo).unwrap();
    store.apply(&[StoreOp::PutUser(user(1))]).unwrap();
    drop(store);
    assert_eq!(db.open().load().unwrap().users, vec![user(1)]);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coord.db");
    let spec = format!("sqlite:{}", path.display());
    weft_coordstore::open(&spec)
        .unwrap()
        .apply(&[StoreOp::PutUser(user(2))])
        .unwrap();
    let mut plain = weft_coordstore::open(path.to_str().unwrap()).unwrap();
    assert_eq!(plain.load().unwrap().users, vec![user(2)]);
}

/// The coordinator calls the store from tokio worker threads; the `postgres` client would
/// panic if it were driven there ("Cannot start a runtime from within a runtime").
#[test]
fn usable_from_inside_a_tokio_runtime() {
    // The database guard lives outside the runtime: its drop uses a blocking client too.
    let db = PgDb::new();
    let conninfo = db.conninfo.clone();
    let conninfo2 = db.conninfo.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let loaded = rt.block_on(async move {
        // On a worker thread, as weft-coordd does it: connect, write, read, drop.
        let task = tokio::spawn(async move {
            let mut store = PgStore::connect(&conninfo).unwrap();
            store
                .apply(&[
                    StoreOp::PutUser(user(1)),
                    StoreOp::PutKey(key(1, 1)),
                    StoreOp::PutNode(node(1, 1)),
                ])
                .unwrap();
            let loaded = store.load().unwrap();
            drop(store);
            loaded
        });
        let loaded = task.await.unwrap();
        // And on the thread that runs `block_on`, inside the runtime's context.
        let mut store = PgStore::connect(&conninfo2).unwrap();
        assert_eq!(store.load().unwrap(), loaded);
        drop(store);
        loaded
    });
    assert_eq!(loaded.nodes, vec![node(1, 1)]);
}

#[test]
fn test_databases_are_dropped() {
    let name = {
        let db = PgDb::new();
        drop(db.open());
        db.conninfo.rsplit("dbname=").next().unwrap().to_owned()
    };
    let left: i64 = pg_admin()
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "{name}");
}

/// A server restart (here: the session killed by an admin) costs at most the request that
/// found the connection gone; the next one reconnects, with the durability settings again.
#[test]
fn reconnects_after_the_server_closed_the_session() {
    let db = PgDb::new();
    let mut store = db.open();
    store.apply(&[StoreOp::PutUser(user(1))]).unwrap();
    // Several rounds: whether the client has noticed the closed session by the next request
    // is a race (CI once lost it), and each round is another chance to lose it.
    let rounds = 8;
    for round in 0..rounds {
        let killed: i64 = db
            .client()
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND application_name = 'weft-coordstore'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(killed, 1, "round {round}");
        let next = user(2 + round);
        if let Err(e) = store.apply(&[StoreOp::PutUser(next.clone())]) {
            assert!(matches!(e, StoreError::Backend(_)), "round {round}: {e:?}");
            store
                .apply(&[StoreOp::PutUser(next)])
                .unwrap_or_else(|e| panic!("round {round}: the retry failed too: {e:?}"));
        }
    }
    let want: Vec<_> = (1..=1 + rounds).map(user).collect();
    assert_eq!(store.load().unwrap().users, want);
    assert_eq!(store.durability_settings().unwrap()[0].1, "on");
}
