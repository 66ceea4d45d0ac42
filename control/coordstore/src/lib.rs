//! The coordination server's persistence: [`weft_tailnet::Store`] on SQLite
//! ([`SqliteStore`]) or PostgreSQL ([`PgStore`]); [`open`] picks one from a spec string.
//!
//! Why two backends behind one trait: SQLite is the default (below); PostgreSQL is for an
//! operator who already runs a database server and wants its backups and replication. Both
//! keep the same tables, constraints and text forms through one codec, so the coordinator
//! cannot tell them apart and the same tests run against each.
//!
//! Why SQLite, and why this shape: the coordinator is the only writer of its tailnet's state,
//! so an embedded database in one file is enough, needs no service to run beside it, and is
//! copied or inspected with ordinary tools. What it must not do is lose an acknowledged
//! change: the coordinator writes a batch of [`StoreOp`]s *before* it answers the client, and
//! a node that was told "registered" must still be registered after a crash or power loss.
//! Hence every [`Store::apply`] is one `BEGIN IMMEDIATE … COMMIT` transaction (all ops or
//! none), the journal is a write-ahead log with `synchronous=FULL` (the commit is fsynced
//! before `apply` returns), and foreign keys are enforced so a batch cannot leave a node
//! without its user.
//!
//! The store holds records only — users, pre-auth keys, nodes, API keys and the next free ids.
//! Everything derived from them (the compiled policy, peer sets, primary routes, who is
//! online) is rebuilt by `weft_tailnet::Coordinator` from [`Store::load`] at start, so there is
//! no second copy that could disagree. The semantics are exactly those of [`weft_tailnet::MemoryStore`]: puts
//! insert or replace by id and move the next free id past it, deletes never lower it, and a
//! load returns each table sorted by id. On top of it, this store refuses what the in-memory
//! one cannot notice: duplicate user names, pre-auth key prefixes, API key prefixes, machine
//! keys or node keys, and rows whose user does not exist.
//!
//! The file holds pre-auth and API key hashes and machine keys, so it is created with mode
//! 0600 and its WAL files are kept at 0600 as well. Errors never carry a stored secret: values are
//! bound as parameters (SQLite's messages name columns, not values), and a malformed
//! `secret_hash` is described only by its length.
//!
//! Module map: `schema` (SQLite tables and migrations, version in `PRAGMA user_version`),
//! `pg` (the PostgreSQL store, its schema and migrations), `codec` (records to columns and
//! back for both, with every read checked).
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod codec;
mod pg;
mod schema;

use std::fs::{self, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, Transaction, TransactionBehavior};
use weft_tailnet::{NextIds, Snapshot, Store, StoreError, StoreOp};

pub use pg::{PgStore, PG_SCHEMA_VERSION};
pub use schema::SCHEMA_VERSION;

/// Opens the store a spec names: `postgres://…` or `postgresql://…` URLs and libpq
/// `key=value` strings (`host=/var/run/postgresql dbname=weft`) connect a [`PgStore`];
/// `sqlite:PATH`, or any other string taken as a path, opens a [`SqliteStore`]. (A file whose
/// name looks like `key=value` needs the `sqlite:` prefix.)
///
/// # Errors
/// Those of [`PgStore::connect`] and [`SqliteStore::open`].
pub fn open(spec: &str) -> Result<Box<dyn Store>, StoreError> {
    if let Some(path) = spec.strip_prefix("sqlite:") {
        return Ok(Box::new(SqliteStore::open(Path::new(path))?));
    }
    if is_postgres_spec(spec) {
        return Ok(Box::new(PgStore::connect(spec)?));
    }
    Ok(Box::new(SqliteStore::open(Path::new(spec))?))
}

/// A PostgreSQL URL, or a libpq string whose first word is `keyword=…`.
fn is_postgres_spec(spec: &str) -> bool {
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        return true;
    }
    spec.split_whitespace()
        .next()
        .and_then(|word| word.split_once('='))
        .is_some_and(|(key, _)| {
            !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
}

/// How long a statement waits for another connection's lock (a backup tool, an admin's
/// `sqlite3` shell) before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Mode of the database file and its `-wal`/`-shm` companions: owner read and write only.
const FILE_MODE: u32 = 0o600;

/// Maps an SQLite failure to [`StoreError::Backend`]. Its text names tables, columns and
/// constraints, never bound values.
pub(crate) fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn io_error(doing: &str, path: &Path, e: &io::Error) -> StoreError {
    StoreError::Backend(format!("{doing} {}: {e}", path.display()))
}

/// The coordination server's records in one SQLite file. See the crate documentation.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens the database at `path`, creating it (mode 0600) when it does not exist, and brings
    /// its schema to [`SCHEMA_VERSION`]. The parent directory must exist.
    ///
    /// # Errors
    /// [`StoreError::TooNew`] when a newer build wrote the database; [`StoreError::Backend`]
    /// when the file cannot be created, opened, configured or migrated (including a file that
    /// is not an SQLite database).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        create_private(path)?;
        // No SQLITE_OPEN_CREATE: the file exists now, created by us with the right mode.
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(backend)?;
        configure(&conn)?;
        schema::migrate(&mut conn)?;
        restrict_files(path)?;
        Ok(Self {
            conn,
            path: path.to_owned(),
        })
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The settings durability depends on, as SQLite reports them for this connection:
    /// `synchronous` (`2`, FULL), `journal_mode` (`wal`) and `foreign_keys` (`1`).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when SQLite fails.
    pub fn durability_settings(&self) -> Result<Vec<(&'static str, String)>, StoreError> {
        let synchronous: i64 = self
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .map_err(backend)?;
        let journal_mode: String = self
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(backend)?;
        let foreign_keys: i64 = self
            .conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .map_err(backend)?;
        Ok(vec![
            ("synchronous", synchronous.to_string()),
            ("journal_mode", journal_mode),
            ("foreign_keys", foreign_keys.to_string()),
        ])
    }
}

/// Creates `path` with mode 0600 when it is missing, and narrows an existing regular file to
/// 0600.
fn create_private(path: &Path) -> Result<(), StoreError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Never chmod a directory (or a device) someone passed by mistake.
            let meta = fs::metadata(path).map_err(|e| io_error("inspecting", path, &e))?;
            if !meta.is_file() {
                return Err(StoreError::Backend(format!(
                    "{} is not a regular file",
                    path.display()
                )));
            }
            fs::set_permissions(path, Permissions::from_mode(FILE_MODE))
                .map_err(|e| io_error("restricting", path, &e))
        }
        Err(e) => Err(io_error("creating", path, &e)),
    }
}

/// Sets 0600 on the database's `-wal` and `-shm` files where they exist (SQLite creates them
/// with the database file's mode, but one left by an older process may be wider).
fn restrict_files(path: &Path) -> Result<(), StoreError> {
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let companion = PathBuf::from(name);
        match fs::set_permissions(&companion, Permissions::from_mode(FILE_MODE)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("restricting", &companion, &e)),
        }
    }
    Ok(())
}

/// The per-connection settings durability depends on.
fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(backend)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "journal_mode is {mode}, WAL could not be enabled"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(backend)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(backend)?;
    let fk: i64 = conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .map_err(backend)?;
    if fk != 1 {
        return Err(StoreError::Backend(
            "foreign key enforcement could not be enabled".to_owned(),
        ));
    }
    Ok(())
}

/// Moves counter `name` past `id` (never lowers it).
fn bump(tx: &Transaction<'_>, name: &'static str, id: i64) -> Result<(), StoreError> {
    let next = id
        .checked_add(1)
        .ok_or_else(|| StoreError::Backend(format!("{name} id {id} leaves no next id")))?;
    let changed = tx
        .prepare_cached("UPDATE counters SET next = max(next, ?2) WHERE name = ?1")
        .and_then(|mut s| s.execute(params![name, next]))
        .map_err(backend)?;
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::Corrupt {
            what: "counters",
            detail: format!("no counter row for {name}"),
        })
    }
}

/// Runs one statement with the connection's statement cache.
fn exec(tx: &Transaction<'_>, sql: &str, params: impl rusqlite::Params) -> Result<(), StoreError> {
    tx.prepare_cached(sql)
        .and_then(|mut s| s.execute(params))
        .map(|_| ())
        .map_err(backend)
}

/// Applies one op inside the batch's transaction.
fn apply_op(tx: &Transaction<'_>, op: &StoreOp) -> Result<(), StoreError> {
    use codec::bool_int;
    // Upserts, not INSERT OR REPLACE: REPLACE would silently delete *another* row that
    // collides on a unique column (and cascade through foreign keys); an upsert on the id
    // fails instead, which rolls the batch back.
    match op {
        StoreOp::PutUser(u) => {
            let r = codec::user_row(u)?;
            exec(
                tx,
                "INSERT INTO users (id, name, display_name, created) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                 display_name = excluded.display_name, created = excluded.created",
                params![r.id, r.name, r.display_name, r.created],
            )?;
            bump(tx, "user", u.id.0)
        }
        StoreOp::DeleteUser(id) => exec(tx, "DELETE FROM users WHERE id = ?1", [id.0]),
        StoreOp::PutKey(k) => {
            let r = codec::key_row(k)?;
            exec(
                tx,
                "INSERT INTO preauth_keys (id, prefix, secret_hash, user_id, reusable, \
                 ephemeral, tags, created, expiration, used, revoked) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                 ON CONFLICT (id) DO UPDATE SET prefix = excluded.prefix, \
                 secret_hash = excluded.secret_hash, user_id = excluded.user_id, \
                 reusable = excluded.reusable, ephemeral = excluded.ephemeral, \
                 tags = excluded.tags, created = excluded.created, \
                 expiration = excluded.expiration, used = excluded.used, \
                 revoked = excluded.revoked",
                params![
                    r.id,
                    r.prefix,
                    r.secret_hash,
                    r.user_id,
                    bool_int(r.reusable),
                    bool_int(r.ephemeral),
                    r.tags,
                    r.created,
                    r.expiration,
                    bool_int(r.used),
                    bool_int(r.revoked),
                ],
            )?;
            bump(tx, "key", k.id.0)
        }
        StoreOp::DeleteKey(id) => exec(tx, "DELETE FROM preauth_keys WHERE id = ?1", [id.0]),
        StoreOp::PutNode(n) => {
            let r = codec::node_row(n)?;
            exec(
                tx,
                "INSERT INTO nodes (id, machine, node_key, disco_key, user_id, tags, hostname, \
                 given_name, ipv4, ipv6, hostinfo, endpoints, key_expiry, created, last_seen, \
                 approved_routes, ephemeral, auth_key) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
                 ?16, ?17, ?18) \
                 ON CONFLICT (id) DO UPDATE SET machine = excluded.machine, \
                 node_key = excluded.node_key, disco_key = excluded.disco_key, \
                 user_id = excluded.user_id, tags = excluded.tags, \
                 hostname = excluded.hostname, given_name = excluded.given_name, \
                 ipv4 = excluded.ipv4, ipv6 = excluded.ipv6, hostinfo = excluded.hostinfo, \
                 endpoints = excluded.endpoints, key_expiry = excluded.key_expiry, \
                 created = excluded.created, last_seen = excluded.last_seen, \
                 approved_routes = excluded.approved_routes, ephemeral = excluded.ephemeral, \
                 auth_key = excluded.auth_key",
                params![
                    r.id,
                    r.machine,
                    r.node_key,
                    r.disco_key,
                    r.user_id,
                    r.tags,
                    r.hostname,
                    r.given_name,
                    r.ipv4,
                    r.ipv6,
                    r.hostinfo,
                    r.endpoints,
                    r.key_expiry,
                    r.created,
                    r.last_seen,
                    r.approved_routes,
                    bool_int(r.ephemeral),
                    r.auth_key,
                ],
            )?;
            bump(tx, "node", n.id.0)
        }
        StoreOp::DeleteNode(id) => exec(tx, "DELETE FROM nodes WHERE id = ?1", [id.0]),
        StoreOp::PutApiKey(k) => {
            let r = codec::api_key_row(k)?;
            exec(
                tx,
                "INSERT INTO api_keys (id, prefix, secret_hash, created, expiration, revoked) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (id) DO UPDATE SET prefix = excluded.prefix, \
                 secret_hash = excluded.secret_hash, created = excluded.created, \
                 expiration = excluded.expiration, revoked = excluded.revoked",
                params![
                    r.id,
                    r.prefix,
                    r.secret_hash,
                    r.created,
                    r.expiration,
                    bool_int(r.revoked),
                ],
            )?;
            bump(tx, "api_key", k.id.0)
        }
        StoreOp::DeleteApiKey(id) => exec(tx, "DELETE FROM api_keys WHERE id = ?1", [id.0]),
    }
}

/// Reads every row of one table, sorted by id, through `decode`.
fn read_table<T>(
    tx: &Transaction<'_>,
    columns: &str,
    table: &str,
    decode: impl Fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = tx
        .prepare(&format!("SELECT {columns} FROM {table} ORDER BY id"))
        .map_err(backend)?;
    let rows = stmt.query_map([], |row| Ok(decode(row))).map_err(backend)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(backend)??);
    }
    Ok(out)
}

/// Reads the counters and checks that none is at or below an id in use (which would hand
/// out that id again).
fn read_next_ids(
    tx: &Transaction<'_>,
    max_ids: [(&'static str, Option<i64>); 4],
) -> Result<NextIds, StoreError> {
    let mut stmt = tx
        .prepare("SELECT next FROM counters WHERE name = ?1")
        .map_err(backend)?;
    let mut values = [0i64; 4];
    for ((name, max_id), value) in max_ids.into_iter().zip(values.iter_mut()) {
        let next: Option<i64> = match stmt.query_row([name], |r| r.get(0)) {
            Ok(v) => Some(v),
            Err(rusqlite::Error::QueryReturnedNoRows) => None,
            Err(e) => return Err(backend(e)),
        };
        let next = codec::check_next(name, next, max_id)?;
        *value = next;
    }
    let [user, key, node, api_key] = values;
    Ok(NextIds {
        user,
        key,
        node,
        api_key,
    })
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        // One read transaction: the tables and counters are read at the same instant.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(backend)?;
        let users = read_table(&tx, codec::USER_COLUMNS, "users", |r| {
            codec::user_from_row(r)
        })?;
        let keys = read_table(&tx, codec::KEY_COLUMNS, "preauth_keys", |r| {
            codec::key_from_row(r)
        })?;
        let nodes = read_table(&tx, codec::NODE_COLUMNS, "nodes", |r| {
            codec::node_from_row(r)
        })?;
        let api_keys = read_table(&tx, codec::API_KEY_COLUMNS, "api_keys", |r| {
            codec::api_key_from_row(r)
        })?;
        let next_ids = read_next_ids(
            &tx,
            [
                ("user", users.last().map(|u| u.id.0)),
                ("key", keys.last().map(|k| k.id.0)),
                ("node", nodes.last().map(|n| n.id.0)),
                ("api_key", api_keys.last().map(|k| k.id.0)),
            ],
        )?;
        tx.commit().map_err(backend)?;
        Ok(Snapshot {
            users,
            keys,
            nodes,
            api_keys,
            next_ids,
        })
    }

    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        // IMMEDIATE takes the write lock up front, so the batch cannot fail half-way with
        // SQLITE_BUSY on a lock upgrade. Dropping `tx` on an error rolls everything back.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        for op in ops {
            apply_op(&tx, op)?;
        }
        tx.commit().map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::is_postgres_spec;

    #[test]
    fn spec_kinds() {
        for pg in [
            "postgres://weft@db/weft",
            "postgresql:///weft?host=/var/run/postgresql",
            "host=/var/run/postgresql user=weft dbname=weft",
            "dbname=weft",
        ] {
            assert!(is_postgres_spec(pg), "{pg}");
        }
        for file in ["/var/lib/weft/coord.db", "coord.db", "./a=b.db", "", "=x"] {
            assert!(!is_postgres_spec(file), "{file}");
        }
    }
}
