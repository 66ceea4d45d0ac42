//! Records to column values and back.
//!
//! Why every read is checked: the database file is outside the process's control (an admin
//! with the `sqlite3` shell, a disk error, a downgrade), and the coordinator must refuse to
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
use weft_tailnet::{KeyId, NodeId, NodeRecord, PreAuthKeyRecord, StoreError, UserId, UserRecord};

use crate::backend;

/// The SELECT list [`user_from_row`] reads.
pub(crate) const USER_COLUMNS: &str = "id, name, display_name, created";

/// The SELECT list [`key_from_row`] reads.
pub(crate) const KEY_COLUMNS: &str = "id, prefix, secret_hash, user_id, reusable, ephemeral, \
     tags, created, expiration, used, revoked";

/// The SELECT list [`node_from_row`] reads.
pub(crate) const NODE_COLUMNS: &str = "id, machine, node_key, disco_key, user_id, tags, \
     hostname, given_name, ipv4, ipv6, hostinfo, endpoints, key_expiry, created, last_seen, \
     approved_routes, ephemeral, auth_key";

fn corrupt(what: &'static str, detail: impl ToString) -> StoreError {
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

/// Reads one column. A value of the wrong storage class or range is corruption; anything
/// else SQLite reports is a backend failure.
fn col<T: FromSql>(row: &Row<'_>, name: &str, what: &'static str) -> Result<T, StoreError> {
    row.get::<_, T>(name).map_err(|e| match e {
        rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => corrupt(what, e),
        other => backend(other),
    })
}

fn time_col(row: &Row<'_>, name: &str, what: &'static str) -> Result<Time, StoreError> {
    let text: String = col(row, name, what)?;
    Time::parse(&text).map_err(|e| corrupt(what, e))
}

fn opt_time_col(row: &Row<'_>, name: &str, what: &'static str) -> Result<Option<Time>, StoreError> {
    let text: Option<String> = col(row, name, what)?;
    text.map(|t| Time::parse(&t).map_err(|e| corrupt(what, e)))
        .transpose()
}

fn bool_col(row: &Row<'_>, name: &str, what: &'static str) -> Result<bool, StoreError> {
    match col::<i64>(row, name, what)? {
        0 => Ok(false),
        1 => Ok(true),
        n => Err(corrupt(what, format!("{n} is not 0 or 1"))),
    }
}

fn json_col<T: DeserializeOwned>(
    row: &Row<'_>,
    name: &str,
    what: &'static str,
) -> Result<T, StoreError> {
    let text: String = col(row, name, what)?;
    serde_json::from_str(&text).map_err(|e| corrupt(what, e))
}

fn parsed_col<T>(row: &Row<'_>, name: &str, what: &'static str) -> Result<T, StoreError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text: String = col(row, name, what)?;
    text.parse().map_err(|e| corrupt(what, e))
}

fn opt_parsed_col<T>(row: &Row<'_>, name: &str, what: &'static str) -> Result<Option<T>, StoreError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text: Option<String> = col(row, name, what)?;
    text.map(|t| t.parse().map_err(|e| corrupt(what, e)))
        .transpose()
}

/// Reads a row selected with [`USER_COLUMNS`].
pub(crate) fn user_from_row(row: &Row<'_>) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: UserId(col(row, "id", "users.id")?),
        name: col(row, "name", "users.name")?,
        display_name: col(row, "display_name", "users.display_name")?,
        created: time_col(row, "created", "users.created")?,
    })
}

/// Reads a row selected with [`KEY_COLUMNS`].
pub(crate) fn key_from_row(row: &Row<'_>) -> Result<PreAuthKeyRecord, StoreError> {
    let hash: Vec<u8> = col(row, "secret_hash", "preauth_keys.secret_hash")?;
    let secret_hash = <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| {
        corrupt(
            "preauth_keys.secret_hash",
            format!("{} bytes, want 32", hash.len()),
        )
    })?;
    Ok(PreAuthKeyRecord {
        id: KeyId(col(row, "id", "preauth_keys.id")?),
        prefix: col(row, "prefix", "preauth_keys.prefix")?,
        secret_hash,
        user: UserId(col(row, "user_id", "preauth_keys.user_id")?),
        reusable: bool_col(row, "reusable", "preauth_keys.reusable")?,
        ephemeral: bool_col(row, "ephemeral", "preauth_keys.ephemeral")?,
        tags: json_col(row, "tags", "preauth_keys.tags")?,
        created: time_col(row, "created", "preauth_keys.created")?,
        expiration: time_col(row, "expiration", "preauth_keys.expiration")?,
        used: bool_col(row, "used", "preauth_keys.used")?,
        revoked: bool_col(row, "revoked", "preauth_keys.revoked")?,
    })
}

/// Reads a row selected with [`NODE_COLUMNS`].
pub(crate) fn node_from_row(row: &Row<'_>) -> Result<NodeRecord, StoreError> {
    let hostinfo: Option<String> = col(row, "hostinfo", "nodes.hostinfo")?;
    let hostinfo = hostinfo
        .map(|h| serde_json::from_str::<Hostinfo>(&h).map_err(|e| corrupt("nodes.hostinfo", e)))
        .transpose()?;
    Ok(NodeRecord {
        id: NodeId(col(row, "id", "nodes.id")?),
        machine: parsed_col::<MachinePublic>(row, "machine", "nodes.machine")?,
        node_key: parsed_col::<NodePublic>(row, "node_key", "nodes.node_key")?,
        disco_key: parsed_col::<DiscoPublic>(row, "disco_key", "nodes.disco_key")?,
        user: UserId(col(row, "user_id", "nodes.user_id")?),
        tags: json_col(row, "tags", "nodes.tags")?,
        hostname: col(row, "hostname", "nodes.hostname")?,
        given_name: col(row, "given_name", "nodes.given_name")?,
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
        ephemeral: bool_col(row, "ephemeral", "nodes.ephemeral")?,
        auth_key: col::<Option<i64>>(row, "auth_key", "nodes.auth_key")?.map(KeyId),
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
