//! Records to column values and back, for both backends.
//!
//! Why one codec for SQLite and PostgreSQL: both store the same text forms (prefixed keys,
//! RFC 3339 times, JSON lists), so a record reads back identically from either, and the rules
//! below are written and tested once. Reads go through [`Columns`], writes through the
//! `*_row` encoders whose values each backend binds as parameters.
//!
//! Why every read is checked: the database is outside the process's control (an admin
//! with the `sqlite3` shell or `psql`, a disk error, a downgrade), and the coordinator must refuse to
//! start on a value it cannot trust rather than panic or invent a default. Every malformed
//! value becomes [`StoreError::Corrupt`] naming the column. Error details never carry a
//! secret: key parse errors do not echo their input, and `secret_hash` is only ever described
//! by its length (a JSON error may quote a fragment of a tag list or a Hostinfo, which are
//! not secret).
//!
//! Writes are checked the other way: a value that would not read back exactly (a time Go's
//! RFC 3339 cannot express, a Hostinfo with a non-finite number, an endpoint with IPv6 flow
//! info) is refused when it is put, so the database never holds a value that a load would
//! reject or read back changed.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use rusqlite::types::FromSql;
use rusqlite::Row;
use serde::de::DeserializeOwned;
use serde::Serialize;
use weft_tailcfg::{DiscoPublic, Hostinfo, IpPrefix, MachinePublic, NodePublic, Time};
use weft_tailnet::{
    ApiKeyRecord, KeyId, NodeId, NodeRecord, PreAuthKeyRecord, StoreError, UserId, UserRecord,
};

use crate::backend;

/// The SELECT list [`user_from_row`] reads.
pub(crate) const USER_COLUMNS: &str = "id, name, display_name, created";

/// The SELECT list [`key_from_row`] reads.
pub(crate) const KEY_COLUMNS: &str = "id, prefix, secret_hash, user_id, reusable, ephemeral, \
     tags, created, expiration, used, revoked";

/// The SELECT list [`api_key_from_row`] reads.
pub(crate) const API_KEY_COLUMNS: &str = "id, prefix, secret_hash, created, expiration, revoked";

/// The SELECT list [`node_from_row`] reads.
pub(crate) const NODE_COLUMNS: &str = "id, machine, node_key, disco_key, user_id, tags, \
     hostname, given_name, ipv4, ipv6, hostinfo, endpoints, key_expiry, created, last_seen, \
     approved_routes, ephemeral, auth_key";

pub(crate) fn corrupt(what: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: detail.to_string(),
    }
}

/// A value that cannot be written so that it reads back unchanged. The detail names the
/// column and the reason, never the value.
fn unstorable(what: &'static str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{what} cannot be stored: {detail}"))
}

/// Time as RFC 3339 text. A time whose offset RFC 3339 cannot express (seconds in the offset)
/// is stored as the same instant in UTC; records compare times by instant, so it still reads
/// back equal.
pub(crate) fn time_text(t: Time, what: &'static str) -> Result<String, StoreError> {
    match t.format() {
        Ok(s) => Ok(s),
        Err(first) => Time::from_unix(t.unix_seconds(), t.get().nanosecond())
            .ok()
            .and_then(|utc| utc.format().ok())
            .ok_or_else(|| unstorable(what, first)),
    }
}

/// A value as JSON text.
pub(crate) fn json_text<T: Serialize + ?Sized>(
    v: &T,
    what: &'static str,
) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| unstorable(what, e))
}

/// JSON text that is known to read back equal to `v`; refused otherwise (a Hostinfo with a
/// non-finite number, a socket address with IPv6 flow info, which the text form drops).
pub(crate) fn exact_json_text<T>(v: &T, what: &'static str) -> Result<String, StoreError>
where
    T: Serialize + DeserializeOwned + PartialEq,
{
    let text = json_text(v, what)?;
    match serde_json::from_str::<T>(&text) {
        Ok(back) if back == *v => Ok(text),
        _ => Err(unstorable(what, "it would not read back as written")),
    }
}

/// A bool as the INTEGER 0 or 1.
pub(crate) fn bool_int(b: bool) -> i64 {
    i64::from(b)
}

/// Checks counter `name`'s stored value `next` (None: its row is missing) against the
/// largest id in use: a counter at or below it would hand out that id again.
pub(crate) fn check_next(
    name: &'static str,
    next: Option<i64>,
    max_id: Option<i64>,
) -> Result<i64, StoreError> {
    let next = next.ok_or_else(|| corrupt("counters", format!("no counter row for {name}")))?;
    match max_id {
        Some(max_id) if next <= max_id => Err(corrupt(
            "counters",
            format!("next {name} id {next} is not above id {max_id} in use"),
        )),
        _ => Ok(next),
    }
}

/// One row of a query, as either backend returns it. Each method reads the named column; a
/// NULL where a value is required, a value of the wrong type or out of range is
/// [`StoreError::Corrupt`] naming `what`.
pub(crate) trait Columns {
    /// A TEXT column.
    fn text(&self, name: &str, what: &'static str) -> Result<String, StoreError>;
    /// A nullable TEXT column.
    fn opt_text(&self, name: &str, what: &'static str) -> Result<Option<String>, StoreError>;
    /// An integer column.
    fn int(&self, name: &str, what: &'static str) -> Result<i64, StoreError>;
    /// A nullable integer column.
    fn opt_int(&self, name: &str, what: &'static str) -> Result<Option<i64>, StoreError>;
    /// A byte-string column.
    fn bytes(&self, name: &str, what: &'static str) -> Result<Vec<u8>, StoreError>;
    /// A boolean column (SQLite: INTEGER 0 or 1; PostgreSQL: BOOLEAN).
    fn boolean(&self, name: &str, what: &'static str) -> Result<bool, StoreError>;
}

/// Reads one SQLite column. A value of the wrong storage class or range is corruption;
/// anything else SQLite reports is a backend failure.
fn col<T: FromSql>(row: &Row<'_>, name: &str, what: &'static str) -> Result<T, StoreError> {
    row.get::<_, T>(name).map_err(|e| match e {
        rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => corrupt(what, e),
        other => backend(other),
    })
}

impl Columns for Row<'_> {
    fn text(&self, name: &str, what: &'static str) -> Result<String, StoreError> {
        col(self, name, what)
    }

    fn opt_text(&self, name: &str, what: &'static str) -> Result<Option<String>, StoreError> {
        col(self, name, what)
    }

    fn int(&self, name: &str, what: &'static str) -> Result<i64, StoreError> {
        col(self, name, what)
    }

    fn opt_int(&self, name: &str, what: &'static str) -> Result<Option<i64>, StoreError> {
        col(self, name, what)
    }

    fn bytes(&self, name: &str, what: &'static str) -> Result<Vec<u8>, StoreError> {
        col(self, name, what)
    }

    fn boolean(&self, name: &str, what: &'static str) -> Result<bool, StoreError> {
        match col::<i64>(self, name, what)? {
            0 => Ok(false),
            1 => Ok(true),
            n => Err(corrupt(what, format!("{n} is not 0 or 1"))),
        }
    }
}

fn time_col(row: &impl Columns, name: &str, what: &'static str) -> Result<Time, StoreError> {
    let text = row.text(name, what)?;
    Time::parse(&text).map_err(|e| corrupt(what, e))
}

fn opt_time_col(
    row: &impl Columns,
    name: &str,
    what: &'static str,
) -> Result<Option<Time>, StoreError> {
    row.opt_text(name, what)?
        .map(|t| Time::parse(&t).map_err(|e| corrupt(what, e)))
        .transpose()
}

fn json_col<T: DeserializeOwned>(
    row: &impl Columns,
    name: &str,
    what: &'static str,
) -> Result<T, StoreError> {
    let text = row.text(name, what)?;
    serde_json::from_str(&text).map_err(|e| corrupt(what, e))
}

fn parsed_col<T>(row: &impl Columns, name: &str, what: &'static str) -> Result<T, StoreError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text = row.text(name, what)?;
    text.parse().map_err(|e| corrupt(what, e))
}

fn opt_parsed_col<T>(
    row: &impl Columns,
    name: &str,
    what: &'static str,
) -> Result<Option<T>, StoreError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    row.opt_text(name, what)?
        .map(|t| t.parse().map_err(|e| corrupt(what, e)))
        .transpose()
}

/// Reads a row selected with [`USER_COLUMNS`].
pub(crate) fn user_from_row(row: &impl Columns) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: UserId(row.int("id", "users.id")?),
        name: row.text("name", "users.name")?,
        display_name: row.text("display_name", "users.display_name")?,
        created: time_col(row, "created", "users.created")?,
    })
}

/// Reads a 32-byte secret hash. A value of another length is described by its length only:
/// its bytes are (part of) a secret.
fn hash_col(row: &impl Columns, name: &str, what: &'static str) -> Result<[u8; 32], StoreError> {
    let hash = row.bytes(name, what)?;
    <[u8; 32]>::try_from(hash.as_slice())
        .map_err(|_| corrupt(what, format!("{} bytes, want 32", hash.len())))
}

/// Reads a row selected with [`KEY_COLUMNS`].
pub(crate) fn key_from_row(row: &impl Columns) -> Result<PreAuthKeyRecord, StoreError> {
    let secret_hash = hash_col(row, "secret_hash", "preauth_keys.secret_hash")?;
    Ok(PreAuthKeyRecord {
        id: KeyId(row.int("id", "preauth_keys.id")?),
        prefix: row.text("prefix", "preauth_keys.prefix")?,
        secret_hash,
        user: UserId(row.int("user_id", "preauth_keys.user_id")?),
        reusable: row.boolean("reusable", "preauth_keys.reusable")?,
        ephemeral: row.boolean("ephemeral", "preauth_keys.ephemeral")?,
        tags: json_col(row, "tags", "preauth_keys.tags")?,
        created: time_col(row, "created", "preauth_keys.created")?,
        expiration: time_col(row, "expiration", "preauth_keys.expiration")?,
        used: row.boolean("used", "preauth_keys.used")?,
        revoked: row.boolean("revoked", "preauth_keys.revoked")?,
    })
}

/// Reads a row selected with [`API_KEY_COLUMNS`].
pub(crate) fn api_key_from_row(row: &impl Columns) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: KeyId(row.int("id", "api_keys.id")?),
        prefix: row.text("prefix", "api_keys.prefix")?,
        secret_hash: hash_col(row, "secret_hash", "api_keys.secret_hash")?,
        created: time_col(row, "created", "api_keys.created")?,
        expiration: time_col(row, "expiration", "api_keys.expiration")?,
        revoked: row.boolean("revoked", "api_keys.revoked")?,
    })
}

/// Reads a row selected with [`NODE_COLUMNS`].
pub(crate) fn node_from_row(row: &impl Columns) -> Result<NodeRecord, StoreError> {
    let hostinfo = row
        .opt_text("hostinfo", "nodes.hostinfo")?
        .map(|h| serde_json::from_str::<Hostinfo>(&h).map_err(|e| corrupt("nodes.hostinfo", e)))
        .transpose()?;
    Ok(NodeRecord {
        id: NodeId(row.int("id", "nodes.id")?),
        machine: parsed_col::<MachinePublic>(row, "machine", "nodes.machine")?,
        node_key: parsed_col::<NodePublic>(row, "node_key", "nodes.node_key")?,
        disco_key: parsed_col::<DiscoPublic>(row, "disco_key", "nodes.disco_key")?,
        user: UserId(row.int("user_id", "nodes.user_id")?),
        tags: json_col(row, "tags", "nodes.tags")?,
        hostname: row.text("hostname", "nodes.hostname")?,
        given_name: row.text("given_name", "nodes.given_name")?,
        ipv4: opt_parsed_col::<Ipv4Addr>(row, "ipv4", "nodes.ipv4")?,
        ipv6: opt_parsed_col::<Ipv6Addr>(row, "ipv6", "nodes.ipv6")?,
        hostinfo,
        endpoints: json_col::<Vec<SocketAddr>>(row, "endpoints", "nodes.endpoints")?,
        key_expiry: time_col(row, "key_expiry", "nodes.key_expiry")?,
        created: time_col(row, "created", "nodes.created")?,
        last_seen: opt_time_col(row, "last_seen", "nodes.last_seen")?,
        approved_routes: json_col::<Vec<IpPrefix>>(
            row,
            "approved_routes",
            "nodes.approved_routes",
        )?,
        ephemeral: row.boolean("ephemeral", "nodes.ephemeral")?,
        auth_key: row.opt_int("auth_key", "nodes.auth_key")?.map(KeyId),
    })
}

/// A user's column values, in [`USER_COLUMNS`] order, ready to bind.
pub(crate) struct UserRow<'a> {
    pub(crate) id: i64,
    pub(crate) name: &'a str,
    pub(crate) display_name: &'a str,
    pub(crate) created: String,
}

/// Encodes a user; refuses a value that would not read back exactly.
pub(crate) fn user_row(u: &UserRecord) -> Result<UserRow<'_>, StoreError> {
    Ok(UserRow {
        id: u.id.0,
        name: &u.name,
        display_name: &u.display_name,
        created: time_text(u.created, "users.created")?,
    })
}

/// A pre-auth key's column values, in [`KEY_COLUMNS`] order, ready to bind.
pub(crate) struct KeyRow<'a> {
    pub(crate) id: i64,
    pub(crate) prefix: &'a str,
    pub(crate) secret_hash: &'a [u8],
    pub(crate) user_id: i64,
    pub(crate) reusable: bool,
    pub(crate) ephemeral: bool,
    pub(crate) tags: String,
    pub(crate) created: String,
    pub(crate) expiration: String,
    pub(crate) used: bool,
    pub(crate) revoked: bool,
}

/// Encodes a pre-auth key; refuses a value that would not read back exactly.
pub(crate) fn key_row(k: &PreAuthKeyRecord) -> Result<KeyRow<'_>, StoreError> {
    Ok(KeyRow {
        id: k.id.0,
        prefix: &k.prefix,
        secret_hash: k.secret_hash.as_slice(),
        user_id: k.user.0,
        reusable: k.reusable,
        ephemeral: k.ephemeral,
        tags: json_text(&k.tags, "preauth_keys.tags")?,
        created: time_text(k.created, "preauth_keys.created")?,
        expiration: time_text(k.expiration, "preauth_keys.expiration")?,
        used: k.used,
        revoked: k.revoked,
    })
}

/// An API key's column values, in [`API_KEY_COLUMNS`] order, ready to bind.
pub(crate) struct ApiKeyRow<'a> {
    pub(crate) id: i64,
    pub(crate) prefix: &'a str,
    pub(crate) secret_hash: &'a [u8],
    pub(crate) created: String,
    pub(crate) expiration: String,
    pub(crate) revoked: bool,
}

/// Encodes an API key; refuses a value that would not read back exactly.
pub(crate) fn api_key_row(k: &ApiKeyRecord) -> Result<ApiKeyRow<'_>, StoreError> {
    Ok(ApiKeyRow {
        id: k.id.0,
        prefix: &k.prefix,
        secret_hash: k.secret_hash.as_slice(),
        created: time_text(k.created, "api_keys.created")?,
        expiration: time_text(k.expiration, "api_keys.expiration")?,
        revoked: k.revoked,
    })
}

/// A node's column values, in [`NODE_COLUMNS`] order, ready to bind.
pub(crate) struct NodeRow<'a> {
    pub(crate) id: i64,
    pub(crate) machine: String,
    pub(crate) node_key: String,
    pub(crate) disco_key: String,
    pub(crate) user_id: i64,
    pub(crate) tags: String,
    pub(crate) hostname: &'a str,
    pub(crate) given_name: &'a str,
    pub(crate) ipv4: Option<String>,
    pub(crate) ipv6: Option<String>,
    pub(crate) hostinfo: Option<String>,
    pub(crate) endpoints: String,
    pub(crate) key_expiry: String,
    pub(crate) created: String,
    pub(crate) last_seen: Option<String>,
    pub(crate) approved_routes: String,
    pub(crate) ephemeral: bool,
    pub(crate) auth_key: Option<i64>,
}

/// Encodes a node; refuses a value that would not read back exactly.
pub(crate) fn node_row(n: &NodeRecord) -> Result<NodeRow<'_>, StoreError> {
    Ok(NodeRow {
        id: n.id.0,
        machine: n.machine.to_string(),
        node_key: n.node_key.to_string(),
        disco_key: n.disco_key.to_string(),
        user_id: n.user.0,
        tags: json_text(&n.tags, "nodes.tags")?,
        hostname: &n.hostname,
        given_name: &n.given_name,
        ipv4: n.ipv4.map(|a| a.to_string()),
        ipv6: n.ipv6.map(|a| a.to_string()),
        hostinfo: n
            .hostinfo
            .as_ref()
            .map(|h| exact_json_text(h, "nodes.hostinfo"))
            .transpose()?,
        endpoints: exact_json_text(&n.endpoints, "nodes.endpoints")?,
        key_expiry: time_text(n.key_expiry, "nodes.key_expiry")?,
        created: time_text(n.created, "nodes.created")?,
        last_seen: n
            .last_seen
            .map(|t| time_text(t, "nodes.last_seen"))
            .transpose()?,
        approved_routes: json_text(&n.approved_routes, "nodes.approved_routes")?,
        ephemeral: n.ephemeral,
        auth_key: n.auth_key.map(|k| k.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_time_and_fractions_are_exact_text() {
        assert_eq!(time_text(Time::ZERO, "t").unwrap(), "0001-01-01T00:00:00Z");
        let t = Time::from_unix(1_700_000_000, 123_456_789).unwrap();
        let back = Time::parse(&time_text(t, "t").unwrap()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.get().nanosecond(), 123_456_789);
    }

    #[test]
    fn non_finite_hostinfo_is_refused_at_write() {
        let mut h: Hostinfo = serde_json::from_str(r#"{"Location":{"Latitude":1.5}}"#).unwrap();
        assert!(exact_json_text(&h, "nodes.hostinfo").is_ok());
        if let Some(loc) = h.location.as_mut() {
            loc.latitude = f64::NAN;
        }
        assert!(matches!(
            exact_json_text(&h, "nodes.hostinfo"),
            Err(StoreError::Backend(m)) if m.contains("nodes.hostinfo")
        ));
    }

    #[test]
    fn ipv6_flow_info_is_refused_at_write() {
        let plain: Vec<SocketAddr> = vec!["[2001:db8::1]:41641".parse().unwrap()];
        assert!(exact_json_text(&plain, "nodes.endpoints").is_ok());
        let flow = vec![SocketAddr::V6(std::net::SocketAddrV6::new(
            "2001:db8::1".parse().unwrap(),
            41641,
            7,
            0,
        ))];
        assert!(exact_json_text(&flow, "nodes.endpoints").is_err());
    }
}
