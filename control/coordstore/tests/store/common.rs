//! Records and temporary databases (an SQLite file, a PostgreSQL database) shared by the
//! tests, and the [`Backend`] seam that runs one test body against either.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use weft_coordstore::{PgStore, SqliteStore};
use weft_tailcfg::{DiscoPublic, MachinePublic, NodePublic, Time};
use weft_tailnet::Store;
use weft_tailnet::{ApiKeyRecord, KeyId, NodeId, NodeRecord, PreAuthKeyRecord, UserId, UserRecord};

/// A database file in a fresh temporary directory, removed (with the directory) on drop.
pub struct TempDb {
    // Kept for its Drop.
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TempDb {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("weft-coordstore-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("coord.db");
        Self { _dir: dir, path }
    }

    pub fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.path).unwrap()
    }
}

/// A fresh, empty database of one backend, removed on drop.
pub trait Backend {
    type S: Store;
    /// A fresh database.
    fn fresh() -> Self;
    /// Another fresh database, possibly sharing `self`'s resources (a PostgreSQL schema in
    /// the same database: far cheaper than a new database).
    fn another(&self) -> Self;
    /// Opens (or reopens) the store on it.
    fn open(&self) -> Self::S;
    /// What `weft_coordstore::open` takes to open the same store.
    fn spec(&self) -> String;
    /// Runs `sql` on the database behind the store's back.
    fn tamper(&self, sql: &str);
}

impl Backend for TempDb {
    type S = SqliteStore;

    fn fresh() -> Self {
        Self::new()
    }

    fn another(&self) -> Self {
        Self::new()
    }

    fn open(&self) -> SqliteStore {
        TempDb::open(self)
    }

    fn spec(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn tamper(&self, sql: &str) {
        let conn = rusqlite::Connection::open(&self.path).unwrap();
        conn.execute_batch(sql).unwrap();
    }
}

/// The PostgreSQL server the tests use: `$WEFT_TEST_PG`, a libpq `key=value` string naming a
/// role that may create databases (scripts/setup.sh makes one for root).
pub fn pg_base() -> String {
    std::env::var("WEFT_TEST_PG")
        .unwrap_or_else(|_| "host=/var/run/postgresql user=root dbname=postgres".to_owned())
}

/// Connects to the server's admin database, or fails the test saying how to get a server.
pub fn pg_admin() -> postgres::Client {
    let base = pg_base();
    postgres::Client::connect(&base, postgres::NoTls).unwrap_or_else(|e| {
        panic!(
            "cannot reach the test PostgreSQL server with WEFT_TEST_PG=`{base}`: {e:?}\n\
             run scripts/setup.sh as root (it installs and starts PostgreSQL and creates the \
             role), or point WEFT_TEST_PG at a server where this role may CREATE DATABASE"
        )
    })
}

/// A database of its own on the test server, dropped (with force) when the last [`PgDb`]
/// using it is dropped, however the test ends.
struct PgDatabase {
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let drop_it = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = pg_admin().batch_execute(&drop_it) {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// A fresh PostgreSQL database, or a fresh schema in a shared one (see [`PgDb::sibling`]).
#[derive(Clone)]
pub struct PgDb {
    db: Arc<PgDatabase>,
    pub conninfo: String,
}

static PG_SEQ: AtomicU32 = AtomicU32::new(0);

/// Drops the test databases of test processes that are gone (killed before their guards
/// ran: a timeout, a SIGKILL), so they do not pile up on a reused machine.
fn drop_orphans(admin: &mut postgres::Client) {
    let Ok(rows) = admin.query(
        "SELECT datname FROM pg_database WHERE datname LIKE 'weft\\_t\\_%'",
        &[],
    ) else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ =
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

impl PgDb {
    pub fn new() -> Self {
        let name = format!(
            "weft_t_{}_{}",
            std::process::id(),
            PG_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = pg_admin();
        drop_orphans(&mut admin);
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let conninfo = format!("{} dbname={name}", pg_base());
        Self {
            db: Arc::new(PgDatabase { name }),
            conninfo,
        }
    }

    /// A fresh schema in the same database (much cheaper than a database: for proptest
    /// cases), found first on the search path of every connection made with its `conninfo`.
    pub fn sibling(&self) -> Self {
        let schema = format!("s{}", PG_SEQ.fetch_add(1, Ordering::Relaxed));
        let base = format!("{} dbname={}", pg_base(), self.db.name);
        let mut client = postgres::Client::connect(&base, postgres::NoTls).unwrap();
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .unwrap();
        Self {
            db: Arc::clone(&self.db),
            conninfo: format!("{base} options=-csearch_path={schema}"),
        }
    }

    pub fn open(&self) -> PgStore {
        PgStore::connect(&self.conninfo).unwrap()
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.conninfo, postgres::NoTls).unwrap()
    }
}

impl Backend for PgDb {
    type S = PgStore;

    fn fresh() -> Self {
        Self::new()
    }

    fn another(&self) -> Self {
        self.sibling()
    }

    fn open(&self) -> PgStore {
        PgDb::open(self)
    }

    fn spec(&self) -> String {
        self.conninfo.clone()
    }

    fn tamper(&self, sql: &str) {
        self.client().batch_execute(sql).unwrap();
    }
}

/// Runs the generic test body `$name::<B>()` as two tests, `$name::sqlite` and `$name::pg`.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name::<$crate::common::TempDb>();
            }

            #[test]
            fn pg() {
                super::$name::<$crate::common::PgDb>();
            }
        }
    )*};
}
pub(crate) use both_backends;

pub fn t(secs: i64, nanos: u32) -> Time {
    Time::from_unix(secs, nanos).unwrap()
}

/// A user whose name is derived from its id (so names never collide across ids).
pub fn user(id: i64) -> UserRecord {
    UserRecord {
        id: UserId(id),
        name: format!("user{id}"),
        display_name: format!("User {id}"),
        created: t(1_700_000_000 + id, 0),
    }
}

/// A key whose prefix is derived from its id.
pub fn key(id: i64, user: i64) -> PreAuthKeyRecord {
    PreAuthKeyRecord {
        id: KeyId(id),
        prefix: format!("pfx{id}"),
        secret_hash: [0xa5; 32],
        user: UserId(user),
        reusable: false,
        ephemeral: false,
        tags: Vec::new(),
        created: t(1_700_000_100, 0),
        expiration: Time::ZERO,
        used: false,
        revoked: false,
    }
}

/// An API key whose prefix is derived from its id.
pub fn api_key(id: i64) -> ApiKeyRecord {
    ApiKeyRecord {
        id: KeyId(id),
        prefix: format!("api{id}"),
        secret_hash: [0x3c; 32],
        created: t(1_700_000_400, 0),
        expiration: Time::ZERO,
        revoked: false,
    }
}

/// 32 key bytes unique to (`kind`, `id`, `variant`).
pub fn key_bytes(kind: u8, id: i64, variant: u8) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0] = kind;
    b[1..9].copy_from_slice(&id.to_le_bytes());
    b[9] = variant;
    b
}

/// A minimal node: keys derived from its id, nothing optional set.
pub fn node(id: i64, user: i64) -> NodeRecord {
    NodeRecord {
        id: NodeId(id),
        machine: MachinePublic::from_bytes(key_bytes(1, id, 0)),
        node_key: NodePublic::from_bytes(key_bytes(2, id, 0)),
        disco_key: DiscoPublic::ZERO,
        user: UserId(user),
        tags: Vec::new(),
        hostname: format!("host{id}"),
        given_name: format!("host{id}"),
        ipv4: None,
        ipv6: None,
        hostinfo: None,
        endpoints: Vec::new(),
        key_expiry: Time::ZERO,
        created: t(1_700_000_200, 0),
        last_seen: None,
        approved_routes: Vec::new(),
        ephemeral: false,
        auth_key: None,
    }
}
