//! [`weft_tailnet::Store`] on PostgreSQL, for a coordinator whose records should live in a
//! database server (shared backups, replication, several coordinators' tailnets in one place).
//!
//! Why a thread of its own: the coordinator calls the store synchronously from tokio worker
//! threads (it holds a std `Mutex` around the tailnet while it writes). The `postgres` client
//! runs its own tokio runtime and panics when it is driven from inside another one, so the
//! client lives on a dedicated std thread and [`PgStore`]'s `load`/`apply` send it a request
//! over a channel and block on the reply, exactly as a call into SQLite blocks. The thread
//! ends when the store is dropped.
//!
//! Durability and atomicity as in the SQLite store: the session runs with
//! `synchronous_commit = on` (checked with `SHOW`, and the server's `fsync` must be on), so a
//! commit is flushed to the server's WAL before `apply` returns; each `apply` is one
//! `SERIALIZABLE` transaction, rolled back on any error. Loads read in one `REPEATABLE READ`
//! snapshot. The schema (see [`MIGRATIONS`]) has the same tables, columns and constraints as
//! the SQLite one and uses the same codec, so records read back identically from either; its
//! version is a row of `weft_schema`, and migrations run in one transaction under an advisory
//! lock so two coordinators starting on a fresh database cannot both create the tables.
//!
//! Errors never carry a stored value: values are bound as parameters, and a server error is
//! reported by its severity, SQLSTATE and primary message only — never its `DETAIL`, which
//! quotes the offending row (a pre-auth key's hash among it).
//!
//! The connection is made without TLS: meant for a Unix socket or a loopback/private link.

use std::str::FromStr;
use std::sync::mpsc;
use std::thread::JoinHandle;

use postgres::{Client, Config, IsolationLevel, NoTls, SimpleQueryMessage, Transaction};
use weft_tailnet::{NextIds, Snapshot, Store, StoreError, StoreOp};

use crate::codec::{self, corrupt, Columns};

/// Version 1: users, pre-auth keys, nodes and the next-id counters, as SQLite's version 1.
///
/// Column types: ids are `BIGINT`, flags `BOOLEAN`, the secret hash `BYTEA`; keys, times and
/// lists are `TEXT` in the codec's forms (not `timestamptz`, which keeps microseconds only,
/// nor `jsonb`, which would rewrite the text). `nodes.auth_key` has no foreign key on purpose,
/// as in SQLite: a node keeps naming a deleted key.
const V1: &str = "
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

/// Version 2: API keys of the HTTP admin API and their id counter, as SQLite's version 2
/// (types as in `preauth_keys`). The counter starts past any id already in the table (none,
/// in a database migrated from version 1).
const V2: &str = "
CREATE TABLE api_keys (
    id          BIGINT  PRIMARY KEY,
    prefix      TEXT    NOT NULL UNIQUE,
    secret_hash BYTEA   NOT NULL CHECK (octet_length(secret_hash) = 32),
    created     TEXT    NOT NULL,
    expiration  TEXT    NOT NULL,
    revoked     BOOLEAN NOT NULL
);

INSERT INTO counters (name, next) SELECT 'api_key', coalesce(max(id), 0) + 1 FROM api_keys;
";

/// The migrations, oldest first: entry `i` takes the schema from version `i` to `i + 1`.
/// Entries are never edited once released; a change is a new entry.
const MIGRATIONS: &[&str] = &[V1, V2];

/// The PostgreSQL schema version this build writes and the newest it can read.
// A handful of entries: the cast cannot truncate.
pub const PG_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The table holding the schema version: exactly one row.
const VERSION_TABLE: &str = "
CREATE TABLE weft_schema (
    singleton BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    version   BIGINT  NOT NULL
);
INSERT INTO weft_schema (version) VALUES (0);
";

/// Advisory lock key serializing migrations of one database ("weftschm").
const MIGRATION_LOCK: i64 = 0x7765_6674_7363_686d;

/// Maps a client or server failure to [`StoreError::Backend`]. A server error contributes its
/// severity, SQLSTATE and message, which name tables and constraints; its detail (which quotes
/// row values) is dropped.
fn pg_error(e: &postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => {
            let mut msg = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
            if let Some(c) = db.constraint() {
                msg.push_str(&format!(" (constraint {c})"));
            }
            StoreError::Backend(msg)
        }
        // The client's own errors ("error connecting to server") keep their cause (an I/O
        // error, a timeout) in `source`.
        None => match std::error::Error::source(e) {
            Some(cause) => StoreError::Backend(format!("{e}: {cause}")),
            None => StoreError::Backend(e.to_string()),
        },
    }
}

/// The store's side of the worker's reply channel being gone: the worker thread ended.
fn worker_gone() -> StoreError {
    StoreError::Backend("the PostgreSQL connection thread has stopped".to_owned())
}

/// A request to the connection thread, with where to send the answer.
enum Request {
    Load(mpsc::SyncSender<Result<Snapshot, StoreError>>),
    Apply(Vec<StoreOp>, mpsc::SyncSender<Result<(), StoreError>>),
    Settings(mpsc::SyncSender<Result<Vec<(&'static str, String)>, StoreError>>),
}

/// The coordination server's records in a PostgreSQL database.
///
/// The connection lives on a thread of its own; `load` and `apply` hand it the work and block
/// until it is done, so the store may be called from tokio worker threads (where the
/// `postgres` client itself would panic). Each `apply` is one `SERIALIZABLE` transaction,
/// committed with `synchronous_commit = on` on a server with `fsync = on` (both checked at
/// connect); a connection the server closed is reopened on the next call. No TLS: use a Unix
/// socket or a trusted link.
#[derive(Debug)]
pub struct PgStore {
    /// Requests to the connection thread; `None` only while dropping.
    requests: Option<mpsc::Sender<Request>>,
    /// The connection thread; `None` only while dropping.
    worker: Option<JoinHandle<()>>,
}

impl PgStore {
    /// Connects with a libpq-style connection string (`host=/var/run/postgresql user=weft
    /// dbname=weft`, or a `postgresql://` URL), sets and checks the session's durability
    /// settings, and brings the schema to [`PG_SCHEMA_VERSION`]. Safe to call from inside a
    /// tokio runtime: the connection is made and used on a thread of its own.
    ///
    /// # Errors
    /// [`StoreError::TooNew`] when a newer build wrote the database; [`StoreError::Backend`]
    /// when the string does not parse, the server cannot be reached or refuses the login, the
    /// server runs with `fsync = off`, or the migration fails.
    pub fn connect(conninfo: &str) -> Result<Self, StoreError> {
        let mut config = Config::from_str(conninfo).map_err(|e| pg_error(&e))?;
        if config.get_application_name().is_none() {
            config.application_name("weft-coordstore");
        }
        let (requests, inbox) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let worker = std::thread::Builder::new()
            .name("weft-coordstore-pg".to_owned())
            .spawn(move || match Connection::open(config) {
                Ok(conn) => {
                    if ready_tx.send(Ok(())).is_ok() {
                        conn.serve(&inbox);
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| StoreError::Backend(format!("starting the connection thread: {e}")))?;
        let store = Self {
            requests: Some(requests),
            worker: Some(worker),
        };
        ready_rx.recv().map_err(|_| worker_gone())??;
        Ok(store)
    }

    /// Sends `make(reply)` to the connection thread and waits for its answer.
    fn call<T>(
        &self,
        make: impl FnOnce(mpsc::SyncSender<Result<T, StoreError>>) -> Request,
    ) -> Result<T, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.requests
            .as_ref()
            .ok_or_else(worker_gone)?
            .send(make(reply))
            .map_err(|_| worker_gone())?;
        answer.recv().map_err(|_| worker_gone())?
    }

    /// The settings durability depends on, as the server reports them for this session:
    /// `synchronous_commit` and `fsync` (both `on` for a connected store).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the server cannot be asked.
    pub fn durability_settings(&self) -> Result<Vec<(&'static str, String)>, StoreError> {
        self.call(Request::Settings)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; it closes the connection as it returns.
        drop(self.requests.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl Store for PgStore {
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.call(Request::Load)
    }

    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.call(|reply| Request::Apply(ops.to_vec(), reply))
    }
}

/// The connection thread's state: the client, and the configuration to reconnect with when
/// the server closed the connection (a restart, an idle timeout).
struct Connection {
    config: Config,
    client: Client,
    /// The last request failed. The failure may have been the server closing the session,
    /// which the client only notices a moment later (its connection task ends after the
    /// request's error is delivered), so the next request checks the session first.
    suspect: bool,
}

/// How long the check of a suspect session may take before it counts as gone.
const VALIDATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Connection {
    /// Connects, configures the session and migrates the schema.
    fn open(config: Config) -> Result<Self, StoreError> {
        let client = connect(&config)?;
        let mut conn = Self {
            config,
            client,
            suspect: false,
        };
        migrate(&mut conn.client)?;
        Ok(conn)
    }

    /// Answers requests until the store is dropped. A failed send means the caller gave up
    /// waiting, which only happens as it unwinds; there is nobody to tell.
    fn serve(mut self, inbox: &mpsc::Receiver<Request>) {
        for request in inbox {
            match request {
                Request::Load(reply) => {
                    let result = self.client().and_then(load);
                    self.suspect = result.is_err();
                    let _ = reply.send(result);
                }
                Request::Apply(ops, reply) => {
                    let result = self.client().and_then(|c| apply(c, &ops));
                    self.suspect = result.is_err();
                    let _ = reply.send(result);
                }
                Request::Settings(reply) => {
                    let result = self.client().and_then(durability_settings);
                    self.suspect = result.is_err();
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// The client, reconnected first when the server closed the connection, or when the
    /// session no longer answers after a failed request.
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        let gone = self.client.is_closed()
            || (self.suspect && self.client.is_valid(VALIDATE_TIMEOUT).is_err());
        if gone {
            self.client = connect(&self.config)?;
        }
        Ok(&mut self.client)
    }
}

/// Opens a session and makes sure a commit is durable when it returns.
fn connect(config: &Config) -> Result<Client, StoreError> {
    let mut client = config.connect(NoTls).map_err(|e| pg_error(&e))?;
    client
        .batch_execute("SET synchronous_commit = on")
        .map_err(|e| pg_error(&e))?;
    for (name, value) in durability_settings(&mut client)? {
        if value != "on" {
            return Err(StoreError::Backend(format!(
                "the server's {name} is {value}, not on: a committed change could be lost"
            )));
        }
    }
    Ok(client)
}

/// `SHOW`s each setting durability depends on.
fn durability_settings(client: &mut Client) -> Result<Vec<(&'static str, String)>, StoreError> {
    ["synchronous_commit", "fsync"]
        .into_iter()
        .map(|name| {
            // The names are our constants: no quoting needed.
            let messages = client
                .simple_query(&format!("SHOW {name}"))
                .map_err(|e| pg_error(&e))?;
            messages
                .iter()
                .find_map(|m| match m {
                    SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                    _ => None,
                })
                .map(|value| (name, value))
                .ok_or_else(|| StoreError::Backend(format!("SHOW {name} returned no value")))
        })
        .collect()
}

/// Brings the database to [`PG_SCHEMA_VERSION`] in one transaction.
///
/// # Errors
/// [`StoreError::TooNew`] when the database is newer than this build, [`StoreError::Corrupt`]
/// for a missing or negative version, [`StoreError::Backend`] when the server fails.
fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction().map_err(|e| pg_error(&e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(|e| pg_error(&e))?;
    let exists = tx
        .query_one("SELECT to_regclass('weft_schema') IS NOT NULL", &[])
        .map_err(|e| pg_error(&e))?;
    let exists: bool = exists.try_get(0).map_err(|e| pg_error(&e))?;
    if !exists {
        tx.batch_execute(VERSION_TABLE).map_err(|e| pg_error(&e))?;
    }
    let rows = tx
        .query("SELECT version FROM weft_schema", &[])
        .map_err(|e| pg_error(&e))?;
    let found = match rows.as_slice() {
        [row] => row.int("version", "schema version")?,
        _ => {
            return Err(corrupt(
                "schema version",
                format!("weft_schema has {} rows, want 1", rows.len()),
            ))
        }
    };
    if found > PG_SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found,
            supported: PG_SCHEMA_VERSION,
        });
    }
    let done = usize::try_from(found)
        .map_err(|_| corrupt("schema version", format!("{found} is negative")))?;
    if done == MIGRATIONS.len() {
        return tx.commit().map_err(|e| pg_error(&e));
    }
    for sql in MIGRATIONS.iter().skip(done) {
        tx.batch_execute(sql).map_err(|e| pg_error(&e))?;
    }
    tx.execute("UPDATE weft_schema SET version = $1", &[&PG_SCHEMA_VERSION])
        .map_err(|e| pg_error(&e))?;
    tx.commit().map_err(|e| pg_error(&e))
}

/// Reads one column of a PostgreSQL row. The SELECT lists are ours, so any failure (a NULL,
/// a column of another type after a hand-made change) is a malformed stored value.
fn get<'a, T: postgres::types::FromSql<'a>>(
    row: &'a postgres::Row,
    name: &str,
    what: &'static str,
) -> Result<T, StoreError> {
    row.try_get::<_, T>(name).map_err(|e| corrupt(what, e))
}

impl Columns for postgres::Row {
    fn text(&self, name: &str, what: &'static str) -> Result<String, StoreError> {
        get(self, name, what)
    }

    fn opt_text(&self, name: &str, what: &'static str) -> Result<Option<String>, StoreError> {
        get(self, name, what)
    }

    fn int(&self, name: &str, what: &'static str) -> Result<i64, StoreError> {
        get(self, name, what)
    }

    fn opt_int(&self, name: &str, what: &'static str) -> Result<Option<i64>, StoreError> {
        get(self, name, what)
    }

    fn bytes(&self, name: &str, what: &'static str) -> Result<Vec<u8>, StoreError> {
        get(self, name, what)
    }

    fn boolean(&self, name: &str, what: &'static str) -> Result<bool, StoreError> {
        get(self, name, what)
    }
}

/// Reads every row of one table, sorted by id, through `decode`.
fn read_table<T>(
    tx: &mut Transaction<'_>,
    columns: &str,
    table: &str,
    decode: impl Fn(&postgres::Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    tx.query(&format!("SELECT {columns} FROM {table} ORDER BY id"), &[])
        .map_err(|e| pg_error(&e))?
        .iter()
        .map(decode)
        .collect()
}

/// Everything stored, read in one snapshot.
fn load(client: &mut Client) -> Result<Snapshot, StoreError> {
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(|e| pg_error(&e))?;
    let users = read_table(&mut tx, codec::USER_COLUMNS, "users", |r| {
        codec::user_from_row(r)
    })?;
    let keys = read_table(&mut tx, codec::KEY_COLUMNS, "preauth_keys", |r| {
        codec::key_from_row(r)
    })?;
    let nodes = read_table(&mut tx, codec::NODE_COLUMNS, "nodes", |r| {
        codec::node_from_row(r)
    })?;
    let api_keys = read_table(&mut tx, codec::API_KEY_COLUMNS, "api_keys", |r| {
        codec::api_key_from_row(r)
    })?;
    let counters = tx
        .query("SELECT name, next FROM counters", &[])
        .map_err(|e| pg_error(&e))?;
    let next_of = |name: &'static str| -> Result<Option<i64>, StoreError> {
        for row in &counters {
            if row.text("name", "counters")? == name {
                return row.int("next", "counters").map(Some);
            }
        }
        Ok(None)
    };
    let next_ids = NextIds {
        user: codec::check_next("user", next_of("user")?, users.last().map(|u| u.id.0))?,
        key: codec::check_next("key", next_of("key")?, keys.last().map(|k| k.id.0))?,
        node: codec::check_next("node", next_of("node")?, nodes.last().map(|n| n.id.0))?,
        api_key: codec::check_next(
            "api_key",
            next_of("api_key")?,
            api_keys.last().map(|k| k.id.0),
        )?,
    };
    tx.commit().map_err(|e| pg_error(&e))?;
    Ok(Snapshot {
        users,
        keys,
        nodes,
        api_keys,
        next_ids,
    })
}

/// Applies `ops` in one serializable transaction; dropping it on an error rolls back.
fn apply(client: &mut Client, ops: &[StoreOp]) -> Result<(), StoreError> {
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::Serializable)
        .start()
        .map_err(|e| pg_error(&e))?;
    for op in ops {
        apply_op(&mut tx, op)?;
    }
    tx.commit().map_err(|e| pg_error(&e))
}

/// Runs one statement.
fn exec(
    tx: &mut Transaction<'_>,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<u64, StoreError> {
    tx.execute(sql, params).map_err(|e| pg_error(&e))
}

/// Moves counter `name` past `id` (never lowers it).
fn bump(tx: &mut Transaction<'_>, name: &'static str, id: i64) -> Result<(), StoreError> {
    let next = id
        .checked_add(1)
        .ok_or_else(|| StoreError::Backend(format!("{name} id {id} leaves no next id")))?;
    let changed = exec(
        tx,
        "UPDATE counters SET next = GREATEST(next, $2) WHERE name = $1",
        &[&name, &next],
    )?;
    if changed == 1 {
        Ok(())
    } else {
        Err(corrupt("counters", format!("no counter row for {name}")))
    }
}

/// Applies one op inside the batch's transaction. Upserts on the id, as in SQLite: a
/// collision on another unique column fails the batch instead of replacing a second row.
fn apply_op(tx: &mut Transaction<'_>, op: &StoreOp) -> Result<(), StoreError> {
    match op {
        StoreOp::PutUser(u) => {
            let r = codec::user_row(u)?;
            exec(
                tx,
                "INSERT INTO users (id, name, display_name, created) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                 display_name = excluded.display_name, created = excluded.created",
                &[&r.id, &r.name, &r.display_name, &r.created],
            )?;
            bump(tx, "user", r.id)
        }
        StoreOp::DeleteUser(id) => {
            exec(tx, "DELETE FROM users WHERE id = $1", &[&id.0]).map(|_| ())
        }
        StoreOp::PutKey(k) => {
            let r = codec::key_row(k)?;
            exec(
                tx,
                "INSERT INTO preauth_keys (id, prefix, secret_hash, user_id, reusable, \
                 ephemeral, tags, created, expiration, used, revoked) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (id) DO UPDATE SET prefix = excluded.prefix, \
                 secret_hash = excluded.secret_hash, user_id = excluded.user_id, \
                 reusable = excluded.reusable, ephemeral = excluded.ephemeral, \
                 tags = excluded.tags, created = excluded.created, \
                 expiration = excluded.expiration, used = excluded.used, \
                 revoked = excluded.revoked",
                &[
                    &r.id,
                    &r.prefix,
                    &r.secret_hash,
                    &r.user_id,
                    &r.reusable,
                    &r.ephemeral,
                    &r.tags,
                    &r.created,
                    &r.expiration,
                    &r.used,
                    &r.revoked,
                ],
            )?;
            bump(tx, "key", r.id)
        }
        StoreOp::DeleteKey(id) => {
            exec(tx, "DELETE FROM preauth_keys WHERE id = $1", &[&id.0]).map(|_| ())
        }
        StoreOp::PutNode(n) => {
            let r = codec::node_row(n)?;
            exec(
                tx,
                "INSERT INTO nodes (id, machine, node_key, disco_key, user_id, tags, hostname, \
                 given_name, ipv4, ipv6, hostinfo, endpoints, key_expiry, created, last_seen, \
                 approved_routes, ephemeral, auth_key) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                 $16, $17, $18) \
                 ON CONFLICT (id) DO UPDATE SET machine = excluded.machine, \
                 node_key = excluded.node_key, disco_key = excluded.disco_key, \
                 user_id = excluded.user_id, tags = excluded.tags, \
                 hostname = excluded.hostname, given_name = excluded.given_name, \
                 ipv4 = excluded.ipv4, ipv6 = excluded.ipv6, hostinfo = excluded.hostinfo, \
                 endpoints = excluded.endpoints, key_expiry = excluded.key_expiry, \
                 created = excluded.created, last_seen = excluded.last_seen, \
                 approved_routes = excluded.approved_routes, ephemeral = excluded.ephemeral, \
                 auth_key = excluded.auth_key",
                &[
                    &r.id,
                    &r.machine,
                    &r.node_key,
                    &r.disco_key,
                    &r.user_id,
                    &r.tags,
                    &r.hostname,
                    &r.given_name,
                    &r.ipv4,
                    &r.ipv6,
                    &r.hostinfo,
                    &r.endpoints,
                    &r.key_expiry,
                    &r.created,
                    &r.last_seen,
                    &r.approved_routes,
                    &r.ephemeral,
                    &r.auth_key,
                ],
            )?;
            bump(tx, "node", r.id)
        }
        StoreOp::DeleteNode(id) => {
            exec(tx, "DELETE FROM nodes WHERE id = $1", &[&id.0]).map(|_| ())
        }
        StoreOp::PutApiKey(k) => {
            let r = codec::api_key_row(k)?;
            exec(
                tx,
                "INSERT INTO api_keys (id, prefix, secret_hash, created, expiration, revoked) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (id) DO UPDATE SET prefix = excluded.prefix, \
                 secret_hash = excluded.secret_hash, created = excluded.created, \
                 expiration = excluded.expiration, revoked = excluded.revoked",
                &[
                    &r.id,
                    &r.prefix,
                    &r.secret_hash,
                    &r.created,
                    &r.expiration,
                    &r.revoked,
                ],
            )?;
            bump(tx, "api_key", r.id)
        }
        StoreOp::DeleteApiKey(id) => {
            exec(tx, "DELETE FROM api_keys WHERE id = $1", &[&id.0]).map(|_| ())
        }
    }
}
