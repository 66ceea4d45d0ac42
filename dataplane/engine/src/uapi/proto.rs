//! The UAPI text protocol, sans-IO: bytes in, [`Request`]s out; snapshots in, reply text out.
//!
//! # Design
//!
//! * **Incremental and bounded.** [`RequestParser::feed`] accepts whatever a `read` returned,
//!   however it splits lines, and stops after each complete request so the caller can reply
//!   before feeding the rest (a connection may carry several requests). The parser keeps at most
//!   one partial line (bounded by [`ParserConfig::max_line_len`]) and one partially built request
//!   (bounded by [`ParserConfig::max_request_len`] bytes of input); exceeding either is a fatal
//!   error, never unbounded memory.
//! * **Validate everything, then apply.** A `set` request is returned only once its terminating
//!   empty line has arrived and every line has been validated. wireguard-go applies lines as it
//!   reads them, so a bad line leaves a half-applied configuration; here a bad request changes
//!   nothing. After a bad line the parser skips to the end of the request and then reports the
//!   first error, so the client still gets its `errno=` reply and the connection stays usable.
//! * **Net effect, in the shape the device needs.** The parser folds the line sequence into a
//!   [`SetRequest`] that says what should change. Semantics that depend on line order are
//!   resolved here (see [`PeerUpdate`]), so the device applies a request without re-deriving
//!   protocol rules.
//! * **wireguard-go's error numbers.** [`UapiError::errno`] is the value wireguard-go writes in
//!   `errno=` lines: a negated `errno.h` constant (`wg` negates it back for `set`).
//!
//! Secrets: a private or preshared key only ever passes through the line buffer (wiped after
//! each line) and the key types of `weft-keys` (zeroized on drop, redacted `Debug`). Errors never
//! carry values, only key names, so they are safe to log.

use std::net::{IpAddr, SocketAddr};

use weft_keys::{PresharedKey, PrivateKey, PublicKey};

/// A complete request from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `get=1`: report the device configuration and statistics.
    Get,
    /// `set=1`: change the device configuration.
    Set(SetRequest),
}

/// The net effect of one `set=1` request.
///
/// Device fields are applied before peers, in this order: `private_key`, `listen_port`, `fwmark`,
/// `replace_peers`; then each [`PeerUpdate`] in request order. Among device keys the last line
/// wins. A request that repeats a `public_key` yields one [`PeerUpdate`] per section, applied in
/// order.
#[derive(Debug, Clone, Default)]
pub struct SetRequest {
    /// New private key. The all-zero key means "remove the private key" (what `wg set
    /// private-key /dev/null` sends).
    pub private_key: Option<PrivateKey>,
    /// New UDP listen port; `Some(0)` means "pick a random port".
    pub listen_port: Option<u16>,
    /// New firewall mark for outgoing packets; `Some(0)` clears it.
    pub fwmark: Option<u32>,
    /// Remove every existing peer before applying [`SetRequest::peers`].
    pub replace_peers: bool,
    /// Peer changes, in request order.
    pub peers: Vec<PeerUpdate>,
}

impl PartialEq for SetRequest {
    fn eq(&self, other: &Self) -> bool {
        let keys_equal = match (&self.private_key, &other.private_key) {
            (None, None) => true,
            (Some(a), Some(b)) => a.ct_eq(b),
            _ => false,
        };
        keys_equal
            && self.listen_port == other.listen_port
            && self.fwmark == other.fwmark
            && self.replace_peers == other.replace_peers
            && self.peers == other.peers
    }
}

/// The net effect of one peer section (the lines from a `public_key=` to the next one).
///
/// How line order is resolved, and how a device applies the result:
///
/// * `remove=true` wins over everything else in the section: the update then has no other field
///   set, and the device removes the peer if it exists.
/// * `update_only=true` means "do not create the peer": if it does not exist, the device ignores
///   the whole update; if it does, `update_only` has no effect.
/// * For `preshared_key`, `endpoint` and `persistent_keepalive_interval` the last line wins.
/// * Allowed IPs: if [`PeerUpdate::replace_allowed_ips`] is set the device first removes all of
///   the peer's allowed IPs; then it removes each of [`PeerUpdate::remove_allowed_ips`] that the
///   peer owns; then it adds [`PeerUpdate::allowed_ips`] (taking them over from other peers). The
///   parser guarantees the two lists are disjoint and free of duplicates: for each prefix the
///   last `allowed_ip` line wins, and `replace_allowed_ips=true` discards the `allowed_ip` lines
///   before it. Prefixes are stored with their host bits cleared, as the routing table stores
///   them.
///
/// This is the *net* effect of wireguard-go's line-at-a-time processing. One transient effect is
/// deliberately not reproduced: in wireguard-go an `allowed_ip` line that is later cancelled (by
/// `remove`, `update_only` on a new peer, `replace_allowed_ips` or `allowed_ip=-…`) still takes
/// the prefix away from whichever peer owned it. `wg` never sends such sequences.
///
/// A device also ignores an update whose public key is its own (as wireguard-go does).
#[derive(Debug, Clone)]
pub struct PeerUpdate {
    /// The peer this section is about.
    pub public_key: PublicKey,
    /// Remove the peer (`remove=true`).
    pub remove: bool,
    /// Only update an existing peer; never create one (`update_only=true`).
    pub update_only: bool,
    /// New preshared key; the all-zero key means "no preshared key".
    pub preshared_key: Option<PresharedKey>,
    /// New endpoint. Never a hostname: `wg` resolves names before sending.
    pub endpoint: Option<SocketAddr>,
    /// New persistent keepalive interval in seconds; `Some(0)` turns it off.
    pub persistent_keepalive_interval: Option<u16>,
    /// Remove all of the peer's allowed IPs before applying the lists below.
    pub replace_allowed_ips: bool,
    /// Prefixes to add (`allowed_ip=ADDR/CIDR`), host bits cleared.
    pub allowed_ips: Vec<(IpAddr, u8)>,
    /// Prefixes to remove if this peer owns them (`allowed_ip=-ADDR/CIDR`, sent by wg since
    /// v1.0.20250521 for `allowed-ips -PREFIX`, accepted by wireguard-go since May 2025).
    pub remove_allowed_ips: Vec<(IpAddr, u8)>,
}

impl PeerUpdate {
    /// An update for `public_key` that changes nothing (but creates the peer if needed).
    pub fn new(public_key: PublicKey) -> Self {
        Self {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive_interval: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
            remove_allowed_ips: Vec::new(),
        }
    }
}

impl PartialEq for PeerUpdate {
    fn eq(&self, other: &Self) -> bool {
        let psk_equal = match (&self.preshared_key, &other.preshared_key) {
            (None, None) => true,
            (Some(a), Some(b)) => a.ct_eq(b),
            _ => false,
        };
        psk_equal
            && self.public_key == other.public_key
            && self.remove == other.remove
            && self.update_only == other.update_only
            && self.endpoint == other.endpoint
            && self.persistent_keepalive_interval == other.persistent_keepalive_interval
            && self.replace_allowed_ips == other.replace_allowed_ips
            && self.allowed_ips == other.allowed_ips
            && self.remove_allowed_ips == other.remove_allowed_ips
    }
}

/// Why a request failed. Every variant maps to the errno wireguard-go would report
/// ([`UapiError::errno`]); none carries a key or value, so all are safe to log.
///
/// The first group is produced by the parser, the second by the device (the server's handler).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UapiError {
    /// The first line of a request was neither `get=1` nor `set=1` (this includes an empty line
    /// between requests). The client is not speaking the protocol: wireguard-go closes the
    /// connection without a reply, and so does our server.
    #[error("invalid UAPI operation (expected get=1 or set=1)")]
    InvalidOperation,
    /// `get=1` was not followed by an empty line.
    #[error("trailing data after get=1")]
    GetTrailingData,
    /// A line of a `set` request has no `=`.
    #[error("line {line} of the request has no '='")]
    MissingSeparator {
        /// 1-based line number within the request (`set=1` is line 1).
        line: usize,
    },
    /// A key that is not a device key appeared before the first `public_key`.
    #[error("invalid UAPI device key {key:?}")]
    UnknownDeviceKey {
        /// The key (lossily decoded, truncated to 64 bytes).
        key: String,
    },
    /// A key that is not a peer key appeared after a `public_key`.
    #[error("invalid UAPI peer key {key:?}")]
    UnknownPeerKey {
        /// The key (lossily decoded, truncated to 64 bytes).
        key: String,
    },
    /// A known key had a value that does not parse (bad hex key, number out of range, endpoint
    /// that is not `IP:PORT` / `[IPv6]:PORT`, bad prefix, flag other than `true`,
    /// `protocol_version` other than 1).
    #[error("invalid value for {key}: {reason}")]
    InvalidValue {
        /// The key whose value was rejected.
        key: &'static str,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A line was longer than [`ParserConfig::max_line_len`]. Fatal: the connection is closed
    /// after the reply.
    #[error("line longer than {limit} bytes")]
    LineTooLong {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A request was longer than [`ParserConfig::max_request_len`]. Fatal: the connection is
    /// closed after the reply.
    #[error("request longer than {limit} bytes")]
    RequestTooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The device could not bind the requested listen port or set the firewall mark.
    #[error("address in use: {reason}")]
    AddressInUse {
        /// What failed.
        reason: String,
    },
    /// The device refused a well-formed change (for example: too many peers).
    #[error("rejected by the device: {reason}")]
    Rejected {
        /// Why.
        reason: String,
    },
    /// The device failed with an I/O error while applying or reading the configuration.
    #[error("I/O error: {reason}")]
    Io {
        /// What failed.
        reason: String,
    },
    /// Any other device failure.
    #[error("internal error: {reason}")]
    Internal {
        /// What failed.
        reason: String,
    },
}

/// wireguard-go's `IpcErrorUnknown`, a literal -55 (ENOANO on Linux) on every platform.
const ERRNO_UNKNOWN: i32 = -55;

impl UapiError {
    /// The value for the reply's `errno=` line, as wireguard-go writes it: the negated `errno.h`
    /// constant.
    ///
    /// * `-EPROTO`: `InvalidOperation`, `MissingSeparator`;
    /// * `-EINVAL`: `GetTrailingData`, `UnknownDeviceKey`, `UnknownPeerKey`, `InvalidValue`,
    ///   `Rejected`;
    /// * `-EIO`: `LineTooLong`, `RequestTooLarge` (wireguard-go's line scanner gives up with an
    ///   I/O error), `Io`;
    /// * `-EADDRINUSE`: `AddressInUse`;
    /// * `-55`: `Internal` (wireguard-go's "unknown error", a literal on every platform).
    pub fn errno(&self) -> i32 {
        match self {
            Self::InvalidOperation | Self::MissingSeparator { .. } => -libc::EPROTO,
            Self::GetTrailingData
            | Self::UnknownDeviceKey { .. }
            | Self::UnknownPeerKey { .. }
            | Self::InvalidValue { .. }
            | Self::Rejected { .. } => -libc::EINVAL,
            Self::LineTooLong { .. } | Self::RequestTooLarge { .. } | Self::Io { .. } => -libc::EIO,
            Self::AddressInUse { .. } => -libc::EADDRINUSE,
            Self::Internal { .. } => ERRNO_UNKNOWN,
        }
    }

    /// Whether the connection must be closed after this error (after the reply, if any): the
    /// parser has lost track of where requests begin.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::InvalidOperation
                | Self::GetTrailingData
                | Self::LineTooLong { .. }
                | Self::RequestTooLarge { .. }
        )
    }

    /// Whether the client gets an `errno=` reply. Only [`UapiError::InvalidOperation`] is
    /// answered by closing the connection silently, as wireguard-go does.
    pub fn is_replied(&self) -> bool {
        !matches!(self, Self::InvalidOperation)
    }
}

pub use super::format::{
    write_errno, write_get_reply, write_request, DeviceSnapshot, PeerSnapshot,
};
#[cfg(test)]
pub(crate) use super::parse::mask;
pub use super::parse::{parse_requests, Feed, ParserConfig, RequestParser, ScopeResolver};
