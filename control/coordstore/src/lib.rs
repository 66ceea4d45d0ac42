//! The coordination server's persistence: [`weft_tailnet::Store`] on SQLite.
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
//! The store holds records only — users, pre-auth keys, nodes and the next free ids. Everything
//! derived from them (the compiled policy, peer sets, primary routes, who is online) is rebuilt
//! by `weft_tailnet::Coordinator` from [`Store::load`] at start, so there is no second copy
//! that could disagree. The semantics are exactly those of [`weft_tailnet::MemoryStore`]: puts
//! insert or replace by id and move the next free id past it, deletes never lower it, and a
//! load returns each table sorted by id. On top of it, this store refuses what the in-memory
//! one cannot notice: duplicate user names, pre-auth key prefixes, machine keys or node keys,
//! and rows whose user does not exist.
//!
//! The file holds pre-auth key hashes and machine keys, so it is created with mode 0600 and
//! its WAL files are kept at 0600 as well. Errors never carry a stored secret: values are
//! bound as parameters (SQLite's messages name columns, not values), and a malformed
//! `secret_hash` is described only by its length.
//!
//! Module map: `schema` (tables and migrations, version in `PRAGMA user_version`), `codec`
//! (records to columns and back, with every read checked).
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
mod schema;

use std::fs::{self, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, Transaction, TransactionBehavior};
use weft_tailnet::{NextIds, Snapshot, Store, StoreError, StoreOp};

pub use schema::SCHEMA_VERSION;

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
    use codec::{bool_int, exact_json_text, json_text, time_text};
    // Upserts, not INSERT OR REPLACE: REPLACE would silently delete *another* row that
    // collides on a unique column (and cascade through foreign keys); an upsert on the id
    // fails instead, which rolls the batch back.
    match op {
        StoreOp::PutUser(u) => {
            exec(
                tx,
                "INSERT INTO users (id, name, display_name, created) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                 display_name = excluded.display_name, created = excluded.created",
                params![
                    u.id.0,
                    u.name,
                    u.display_name,
                    time_text(u.created, "users.created")?
                ],
            )?;
            bump(tx, "user", u.id.0)
        }
        StoreOp::DeleteUser(id) => exec(tx, "DELETE FROM users WHERE id = ?1", [id.0]),
        StoreOp::PutKey(k) => {
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
                    k.id.0,
                    k.prefix,
                    k.secret_hash.as_slice(),
                    k.user.0,
                    bool_int(k.reusable),
                    bool_int(k.ephemeral),
                    json_text(&k.tags, "preauth_keys.tags")?,
                    time_text(k.created, "preauth_keys.created")?,
                    time_text(k.expiration, "preauth_keys.expiration")?,
                    bool_int(k.used),
                    bool_int(k.revoked),
                ],
            )?;
            bump(tx, "key", k.id.0)
        }
        StoreOp::DeleteKey(id) => exec(tx, "DELETE FROM preauth_keys WHERE id = ?1", [id.0]),
        StoreOp::PutNode(n) => {
            let last_seen = n
                .last_seen
                .map(|t| time_text(t, "nodes.last_seen"))
                .transpose()?;
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
                    n.id.0,
                    n.machine.to_string(),
                    n.node_key.to_string(),
                    n.disco_key.to_string(),
                    n.user.0,
                    json_text(&n.tags, "nodes.tags")?,
                    n.hostname,
                    n.given_name,
                    n.ipv4.map(|a| a.to_string()),
                    n.ipv6.map(|a| a.to_string()),
                    n.hostinfo
                        .as_ref()
                        .map(|h| exact_json_text(h, "nodes.hostinfo"))
                        .transpose()?,
                    exact_json_text(&n.endpoints, "nodes.endpoints")?,
                    time_text(n.key_expiry, "nodes.key_expiry")?,
                    time_text(n.created, "nodes.created")?,
                    last_seen,
                    json_text(&n.approved_routes, "nodes.approved_routes")?,
                    bool_int(n.ephemeral),
                    n.auth_key.map(|k| k.0),
                ],
            )?;
            bump(tx, "node", n.id.0)
        }
        StoreOp::DeleteNode(id) => exec(tx, "DELETE FROM nodes WHERE id = ?1", [id.0]),
    }
}

/// Reads every row of one table, sorted by id, through `decode`.
fn read_table<T>(
    tx: &Transaction<'_>,
    columns: &str,
    table: &str,
    decode: fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
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
    max_ids: [(&'static str, Option<i64>); 3],
) -> Result<NextIds, StoreError> {
    let mut stmt = tx
        .prepare("SELECT next FROM counters WHERE name = ?1")
        .map_err(backend)?;
    let mut values = [0i64; 3];
    for ((name, max_id), value) in max_ids.into_iter().zip(values.iter_mut()) {
        let next: Option<i64> = match stmt.query_row([name], |r| r.get(0)) {
            Ok(v) => Some(v),
            Err(rusqlite::Error::QueryReturnedNoRows) => None,
            Err(e) => return Err(backend(e)),
        };
        let next = next.ok_or_else(|| StoreError::Corrupt {
            what: "counters",
            detail: format!("no counter row for {name}"),
        })?;
        if let Some(max_id) = max_id {
            if next <= max_id {
                return Err(StoreError::Corrupt {
                    what: "counters",
                    detail: format!("next {name} id {next} is not above id {max_id} in use"),
                });
            }
        }
        *value = next;
    }
    let [user, key, node] = values;
    Ok(NextIds { user, key, node })
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        // One read transaction: the tables and counters are read at the same instant.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(backend)?;
        let users = read_table(&tx, codec::USER_COLUMNS, "users", codec::user_from_row)?;
        let keys = read_table(&tx, codec::KEY_COLUMNS, "preauth_keys", codec::key_from_row)?;
        let nodes = read_table(&tx, codec::NODE_COLUMNS, "nodes", codec::node_from_row)?;
        let next_ids = read_next_ids(
            &tx,
            [
                ("user", users.last().map(|u| u.id.0)),
                ("key", keys.last().map(|k| k.id.0)),
                ("node", nodes.last().map(|n| n.id.0)),
            ],
        )?;
        tx.commit().map_err(backend)?;
        Ok(Snapshot {
            users,
            keys,
            nodes,
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
