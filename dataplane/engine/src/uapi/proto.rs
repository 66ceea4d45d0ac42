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

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use weft_keys::{PresharedKey, PrivateKey, PublicKey};
use zeroize::Zeroize;

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

/// Maps an IPv6 zone name (`fe80::1%eth0`) to an interface index.
///
/// `wg` sends link-local endpoints with the zone as a name (it formats them with
/// `getnameinfo`). Looking a name up is I/O, so the parser takes the lookup as a plain function;
/// numeric zones never need it.
pub type ScopeResolver = fn(&str) -> Option<u32>;

/// Limits and hooks for a [`RequestParser`].
#[derive(Debug, Clone, Copy)]
pub struct ParserConfig {
    /// Longest accepted line, in bytes, excluding the newline. `wg`'s longest line is about 80
    /// bytes; wireguard-go's scanner allows 64 KiB.
    pub max_line_len: usize,
    /// Longest accepted request, in bytes, including every line and newline. Bounds the memory a
    /// single request can make the parser hold (the parsed form is a small multiple of this).
    pub max_request_len: usize,
    /// Resolves named IPv6 zones in endpoints; `None` accepts numeric zones only.
    pub resolve_scope: Option<ScopeResolver>,
}

impl ParserConfig {
    /// Default line limit: 4 KiB.
    pub const DEFAULT_MAX_LINE_LEN: usize = 4096;
    /// Default request limit: 4 MiB, roughly 20 000 peers with a few allowed IPs each.
    pub const DEFAULT_MAX_REQUEST_LEN: usize = 4 << 20;
}

impl Default for ParserConfig {
    fn default() -> Self {
        Self {
            max_line_len: Self::DEFAULT_MAX_LINE_LEN,
            max_request_len: Self::DEFAULT_MAX_REQUEST_LEN,
            resolve_scope: None,
        }
    }
}

/// What one call to [`RequestParser::feed`] did.
#[derive(Debug)]
#[must_use]
pub struct Feed {
    /// How many bytes of the input were consumed. When [`Feed::output`] is `Some`, the rest of the
    /// input has not been looked at: feed it again after handling the output.
    pub consumed: usize,
    /// A complete request, or the error that ended one.
    pub output: Option<Result<Request, UapiError>>,
}

/// Incremental request parser: feed it bytes as they arrive, get complete requests out.
///
/// ```
/// use weft_dataplane::uapi::{Request, RequestParser};
///
/// let mut parser = RequestParser::new();
/// let mut input: &[u8] = b"get=1\n\nget=1\n\n";
/// let mut requests = Vec::new();
/// while !input.is_empty() {
///     let fed = parser.feed(input);
///     input = &input[fed.consumed..];
///     requests.extend(fed.output);
/// }
/// assert_eq!(requests, vec![Ok(Request::Get), Ok(Request::Get)]);
/// ```
///
/// After a fatal error ([`UapiError::is_fatal`]) or [`RequestParser::finish`] the parser is
/// closed: it consumes and ignores further input.
pub struct RequestParser {
    config: ParserConfig,
    /// The current partial line, without its newline. Wiped after each line: it may hold a key.
    line: Vec<u8>,
    state: State,
    /// Bytes of the current request seen so far, including the partial line.
    request_len: usize,
    /// Lines of the current request seen so far (for error messages).
    line_no: usize,
    closed: bool,
}

#[derive(Debug)]
enum State {
    /// Between requests: the next line is the operation.
    Idle,
    /// After `get=1`: the next line must be empty.
    Get,
    /// Inside a `set=1` request.
    Set(Box<SetBuilder>),
    /// Inside a `set=1` request that has failed: skipping to its end, then reporting the error.
    Skipping(UapiError),
}

#[derive(Debug, Default)]
struct SetBuilder {
    request: SetRequest,
    peer: Option<PeerBuilder>,
}

#[derive(Debug)]
struct PeerBuilder {
    update: PeerUpdate,
    /// Every prefix mentioned by an `allowed_ip` line, in first-mention order.
    allowed_order: Vec<(IpAddr, u8)>,
    /// The last operation on each prefix: `true` = add, `false` = remove.
    allowed_last_op: BTreeMap<(IpAddr, u8), bool>,
}

impl PeerBuilder {
    fn new(public_key: PublicKey) -> Self {
        Self {
            update: PeerUpdate::new(public_key),
            allowed_order: Vec::new(),
            allowed_last_op: BTreeMap::new(),
        }
    }

    fn finish(self) -> PeerUpdate {
        let Self {
            mut update,
            allowed_order,
            allowed_last_op,
        } = self;
        for prefix in allowed_order {
            match allowed_last_op.get(&prefix) {
                Some(true) => update.allowed_ips.push(prefix),
                Some(false) => update.remove_allowed_ips.push(prefix),
                None => {}
            }
        }
        update
    }
}

impl SetBuilder {
    fn finish(mut self) -> SetRequest {
        if let Some(peer) = self.peer.take() {
            self.request.peers.push(peer.finish());
        }
        self.request
    }
}

impl Default for RequestParser {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RequestParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The partial line may be part of a key: show only its length.
        f.debug_struct("RequestParser")
            .field("config", &self.config)
            .field("state", &self.state)
            .field("partial_line_len", &self.line.len())
            .field("request_len", &self.request_len)
            .field("closed", &self.closed)
            .finish()
    }
}

impl Drop for RequestParser {
    fn drop(&mut self) {
        self.line.zeroize();
    }
}

impl RequestParser {
    /// A parser with the default [`ParserConfig`].
    pub fn new() -> Self {
        Self::with_config(ParserConfig::default())
    }

    /// A parser with the given limits and zone resolver.
    pub fn with_config(config: ParserConfig) -> Self {
        Self {
            config,
            line: Vec::new(),
            state: State::Idle,
            request_len: 0,
            line_no: 0,
            closed: false,
        }
    }

    /// Whether the parser has stopped (after a fatal error or [`RequestParser::finish`]).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether the parser is between requests with no partial input buffered.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle) && self.line.is_empty()
    }

    /// Consumes input up to the end of the next complete request (or all of it).
    ///
    /// Every call with non-empty input consumes at least one byte, so a loop that re-feeds the
    /// unconsumed rest always terminates.
    pub fn feed(&mut self, input: &[u8]) -> Feed {
        if self.closed {
            return Feed {
                consumed: input.len(),
                output: None,
            };
        }
        let mut pos = 0;
        while pos < input.len() {
            let rest = input.get(pos..).unwrap_or_default();
            let (chunk, newline) = match rest.iter().position(|&b| b == b'\n') {
                Some(n) => (rest.get(..n).unwrap_or_default(), true),
                None => (rest, false),
            };
            pos += chunk.len() + usize::from(newline);

            if self.line.len() + chunk.len() > self.config.max_line_len {
                let limit = self.config.max_line_len;
                return self.fail(pos, UapiError::LineTooLong { limit });
            }
            self.request_len += chunk.len() + usize::from(newline);
            if self.request_len > self.config.max_request_len {
                let limit = self.config.max_request_len;
                return self.fail(pos, UapiError::RequestTooLarge { limit });
            }
            self.line.extend_from_slice(chunk);
            if !newline {
                break;
            }
            let output = self.end_of_line();
            if output.is_some() || self.closed {
                return Feed {
                    consumed: pos,
                    output,
                };
            }
        }
        Feed {
            consumed: pos,
            output: None,
        }
    }

    /// Signals end of input and closes the parser; returns what wireguard-go would act on.
    ///
    /// Like wireguard-go: an unterminated `set` request is still applied (its last line may even
    /// lack the newline), while an unterminated `get` or operation line is dropped silently.
    pub fn finish(&mut self) -> Option<Result<Request, UapiError>> {
        if self.closed {
            return None;
        }
        let mut output = None;
        if matches!(self.state, State::Set(_) | State::Skipping(_)) {
            if !self.line.is_empty() {
                output = self.end_of_line();
            }
            if output.is_none() {
                output = match std::mem::replace(&mut self.state, State::Idle) {
                    State::Set(builder) => Some(Ok(Request::Set((*builder).finish()))),
                    State::Skipping(error) => Some(Err(error)),
                    State::Idle | State::Get => None,
                };
            }
        }
        self.close();
        output
    }

    fn close(&mut self) {
        self.closed = true;
        self.state = State::Idle;
        self.line.zeroize();
    }

    fn fail(&mut self, consumed: usize, error: UapiError) -> Feed {
        self.close();
        Feed {
            consumed,
            output: Some(Err(error)),
        }
    }

    /// Handles the complete line in `self.line`, then wipes it.
    fn end_of_line(&mut self) -> Option<Result<Request, UapiError>> {
        let mut line = std::mem::take(&mut self.line);
        self.line_no += 1;
        let output = self.handle_line(&line);
        // Keep the allocation for the next line, minus its contents.
        line.zeroize();
        self.line = line;
        if output.is_some() {
            self.request_len = 0;
            self.line_no = 0;
        }
        output
    }

    fn handle_line(&mut self, line: &[u8]) -> Option<Result<Request, UapiError>> {
        match &mut self.state {
            State::Idle => {
                // The operation line is matched exactly, as wireguard-go does (no '\r' stripping).
                match line {
                    b"get=1" => self.state = State::Get,
                    b"set=1" => self.state = State::Set(Box::default()),
                    _ => {
                        self.close();
                        return Some(Err(UapiError::InvalidOperation));
                    }
                }
                None
            }
            State::Get => {
                if line.is_empty() {
                    self.state = State::Idle;
                    Some(Ok(Request::Get))
                } else {
                    self.close();
                    Some(Err(UapiError::GetTrailingData))
                }
            }
            State::Set(builder) => {
                // wireguard-go reads the body with a line scanner, which drops a trailing '\r'.
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() {
                    let request = match std::mem::replace(&mut self.state, State::Idle) {
                        State::Set(builder) => (*builder).finish(),
                        _ => SetRequest::default(),
                    };
                    return Some(Ok(Request::Set(request)));
                }
                if let Err(error) = set_line(builder, line, self.line_no, &self.config) {
                    self.state = State::Skipping(error);
                }
                None
            }
            State::Skipping(_) => {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() {
                    match std::mem::replace(&mut self.state, State::Idle) {
                        State::Skipping(error) => Some(Err(error)),
                        _ => None,
                    }
                } else {
                    None
                }
            }
        }
    }
}

/// Parses a whole byte stream as one connection would see it, end of input included: every
/// request and error in order, stopping after a fatal error. Convenient for tests and tools.
pub fn parse_requests(bytes: &[u8]) -> Vec<Result<Request, UapiError>> {
    let mut parser = RequestParser::new();
    let mut out = Vec::new();
    let mut input = bytes;
    while !input.is_empty() && !parser.is_closed() {
        let fed = parser.feed(input);
        out.extend(fed.output);
        input = input.get(fed.consumed..).unwrap_or_default();
    }
    out.extend(parser.finish());
    out
}

fn key_name(key: &[u8]) -> String {
    let short = key.get(..64).unwrap_or(key);
    String::from_utf8_lossy(short).into_owned()
}

/// Applies one non-empty body line of a `set` request to the builder.
fn set_line(
    builder: &mut SetBuilder,
    line: &[u8],
    line_no: usize,
    config: &ParserConfig,
) -> Result<(), UapiError> {
    let Some(eq) = line.iter().position(|&b| b == b'=') else {
        return Err(UapiError::MissingSeparator { line: line_no });
    };
    let key = line.get(..eq).unwrap_or_default();
    let value = line.get(eq + 1..).unwrap_or_default();

    if key == b"public_key" {
        let public_key = PublicKey::from_hex(text(value, "public_key")?).map_err(|_| {
            UapiError::InvalidValue {
                key: "public_key",
                reason: "expected 64 hex digits",
            }
        })?;
        if let Some(peer) = builder.peer.take() {
            builder.request.peers.push(peer.finish());
        }
        builder.peer = Some(PeerBuilder::new(public_key));
        return Ok(());
    }

    match &mut builder.peer {
        None => device_line(&mut builder.request, key, value),
        Some(peer) => peer_line(peer, key, value, config),
    }
}

fn device_line(request: &mut SetRequest, key: &[u8], value: &[u8]) -> Result<(), UapiError> {
    match key {
        b"private_key" => {
            let parsed = PrivateKey::from_hex(text(value, "private_key")?).map_err(|_| {
                UapiError::InvalidValue {
                    key: "private_key",
                    reason: "expected 64 hex digits",
                }
            })?;
            request.private_key = Some(parsed);
        }
        b"listen_port" => request.listen_port = Some(number(value, "listen_port")?),
        b"fwmark" => request.fwmark = Some(number(value, "fwmark")?),
        b"replace_peers" => request.replace_peers = flag(value, "replace_peers")?,
        _ => return Err(UapiError::UnknownDeviceKey { key: key_name(key) }),
    }
    Ok(())
}

fn peer_line(
    peer: &mut PeerBuilder,
    key: &[u8],
    value: &[u8],
    config: &ParserConfig,
) -> Result<(), UapiError> {
    // After `remove=true` wireguard-go treats the section as a placeholder: later lines are
    // still validated but change nothing.
    let removed = peer.update.remove;
    match key {
        b"update_only" => {
            let set = flag(value, "update_only")?;
            if !removed {
                peer.update.update_only = set;
            }
        }
        b"remove" => {
            flag(value, "remove")?;
            let public_key = peer.update.public_key;
            *peer = PeerBuilder::new(public_key);
            peer.update.remove = true;
        }
        b"preshared_key" => {
            let parsed = PresharedKey::from_hex(text(value, "preshared_key")?).map_err(|_| {
                UapiError::InvalidValue {
                    key: "preshared_key",
                    reason: "expected 64 hex digits",
                }
            })?;
            if !removed {
                peer.update.preshared_key = Some(parsed);
            }
        }
        b"endpoint" => {
            let parsed = parse_endpoint(text(value, "endpoint")?, config.resolve_scope)?;
            if !removed {
                peer.update.endpoint = Some(parsed);
            }
        }
        b"persistent_keepalive_interval" => {
            let parsed = number(value, "persistent_keepalive_interval")?;
            if !removed {
                peer.update.persistent_keepalive_interval = Some(parsed);
            }
        }
        b"replace_allowed_ips" => {
            flag(value, "replace_allowed_ips")?;
            if !removed {
                peer.update.replace_allowed_ips = true;
                peer.allowed_order.clear();
                peer.allowed_last_op.clear();
            }
        }
        b"allowed_ip" => {
            let (add, prefix_text) = match value.strip_prefix(b"-") {
                Some(rest) => (false, rest),
                None => (true, value),
            };
            let prefix = parse_prefix(text(prefix_text, "allowed_ip")?)?;
            if !removed && peer.allowed_last_op.insert(prefix, add).is_none() {
                peer.allowed_order.push(prefix);
            }
        }
        b"protocol_version" => {
            if value != b"1" {
                return Err(UapiError::InvalidValue {
                    key: "protocol_version",
                    reason: "only protocol version 1 exists",
                });
            }
        }
        _ => return Err(UapiError::UnknownPeerKey { key: key_name(key) }),
    }
    Ok(())
}

fn text<'a>(value: &'a [u8], key: &'static str) -> Result<&'a str, UapiError> {
    std::str::from_utf8(value).map_err(|_| UapiError::InvalidValue {
        key,
        reason: "not UTF-8",
    })
}

fn flag(value: &[u8], key: &'static str) -> Result<bool, UapiError> {
    // wireguard-go accepts exactly "true"; there is no way to send "false".
    if value == b"true" {
        Ok(true)
    } else {
        Err(UapiError::InvalidValue {
            key,
            reason: "the only accepted value is \"true\"",
        })
    }
}

/// Unsigned decimal, like Go's `strconv.ParseUint(s, 10, bits)`: digits only (leading zeros
/// allowed, no sign, no spaces), within range.
fn parse_decimal<T: TryFrom<u64>>(digits: &[u8]) -> Option<T> {
    if digits.is_empty() {
        return None;
    }
    let mut acc: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        acc = acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    T::try_from(acc).ok()
}

fn number<T: TryFrom<u64>>(value: &[u8], key: &'static str) -> Result<T, UapiError> {
    parse_decimal(value).ok_or(UapiError::InvalidValue {
        key,
        reason: "expected a decimal number in range",
    })
}

fn bad_endpoint(reason: &'static str) -> UapiError {
    UapiError::InvalidValue {
        key: "endpoint",
        reason,
    }
}

/// `IPv4:PORT` or `[IPv6]:PORT`, optionally `[IPv6%ZONE]:PORT`; the rules of Go's
/// `netip.ParseAddrPort`, which is what wireguard-go uses. Hostnames are rejected: `wg`
/// resolves them before sending.
fn parse_endpoint(s: &str, resolve_scope: Option<ScopeResolver>) -> Result<SocketAddr, UapiError> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| bad_endpoint("expected IP:PORT or [IPv6]:PORT"))?;
    if host.is_empty() {
        return Err(bad_endpoint("missing address"));
    }
    let port: u16 =
        parse_decimal(port.as_bytes()).ok_or_else(|| bad_endpoint("port is not 0..=65535"))?;
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| bad_endpoint("missing ']'"))?;
        let (addr, zone) = match inner.split_once('%') {
            Some((addr, zone)) => (addr, Some(zone)),
            None => (inner, None),
        };
        let ip: Ipv6Addr = addr
            .parse()
            .map_err(|_| bad_endpoint("brackets must hold an IPv6 address"))?;
        let scope_id = match zone {
            None => 0,
            Some("") => return Err(bad_endpoint("empty IPv6 zone")),
            Some(zone) => match parse_decimal::<u32>(zone.as_bytes()) {
                Some(index) => index,
                None => resolve_scope
                    .and_then(|resolve| resolve(zone))
                    .ok_or_else(|| bad_endpoint("unknown IPv6 zone"))?,
            },
        };
        Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope_id)))
    } else {
        let ip: Ipv4Addr = host.parse().map_err(|_| {
            bad_endpoint("expected an IPv4 address (IPv6 needs brackets; no hostnames)")
        })?;
        Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
    }
}

fn bad_prefix(reason: &'static str) -> UapiError {
    UapiError::InvalidValue {
        key: "allowed_ip",
        reason,
    }
}

/// `ADDR/CIDR`, the rules of Go's `netip.ParsePrefix`: no zone, the prefix length in decimal
/// without sign or leading zeros and at most 32 (IPv4) or 128 (IPv6). The result has its host
/// bits cleared.
fn parse_prefix(s: &str) -> Result<(IpAddr, u8), UapiError> {
    let (addr, bits) = s
        .rsplit_once('/')
        .ok_or_else(|| bad_prefix("expected ADDR/CIDR"))?;
    let bits_bytes = bits.as_bytes();
    if bits_bytes.len() > 1 && bits_bytes.first() == Some(&b'0') {
        return Err(bad_prefix("leading zero in prefix length"));
    }
    let bits: u8 = parse_decimal(bits_bytes).ok_or_else(|| bad_prefix("bad prefix length"))?;
    let ip: IpAddr = addr.parse().map_err(|_| bad_prefix("not an IP address"))?;
    let max = match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    if bits > max {
        return Err(bad_prefix("prefix length too long for the address family"));
    }
    Ok((mask(ip, bits), bits))
}

/// Clears the host bits of `ip` beyond the first `bits`.
pub(crate) fn mask(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from(bits.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & m))
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(bits.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & m))
        }
    }
}

/// Writes lowercase hex without an intermediate `String` (the bytes may be a secret).
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            out.push(char::from(
                DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0'),
            ));
        }
    }
}

fn push_key(out: &mut String, name: &str, bytes: &[u8]) {
    out.push_str(name);
    out.push('=');
    push_hex(out, bytes);
    out.push('\n');
}

/// Endpoint in the form `wg` parses: `IPv4:PORT`, `[IPv6]:PORT` or `[IPv6%SCOPE]:PORT`.
struct EndpointText(SocketAddr);

impl fmt::Display for EndpointText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            SocketAddr::V4(v4) => write!(f, "{}:{}", v4.ip(), v4.port()),
            SocketAddr::V6(v6) if v6.scope_id() != 0 => {
                write!(f, "[{}%{}]:{}", v6.ip(), v6.scope_id(), v6.port())
            }
            SocketAddr::V6(v6) => write!(f, "[{}]:{}", v6.ip(), v6.port()),
        }
    }
}

/// Writes a request in the order and form `wg` uses; [`parse_requests`] reads it back to an
/// equal value. For tests, fuzzing and clients of a weft daemon.
///
/// A [`PeerUpdate`] with `remove` set is written as `public_key` + `remove=true` only.
pub fn write_request(request: &Request, out: &mut String) {
    let set = match request {
        Request::Get => {
            out.push_str("get=1\n\n");
            return;
        }
        Request::Set(set) => set,
    };
    out.push_str("set=1\n");
    if let Some(key) = &set.private_key {
        push_key(out, "private_key", key.as_bytes());
    }
    if let Some(port) = set.listen_port {
        let _ = writeln!(out, "listen_port={port}");
    }
    if let Some(mark) = set.fwmark {
        let _ = writeln!(out, "fwmark={mark}");
    }
    if set.replace_peers {
        out.push_str("replace_peers=true\n");
    }
    for peer in &set.peers {
        push_key(out, "public_key", peer.public_key.as_bytes());
        if peer.remove {
            out.push_str("remove=true\n");
            continue;
        }
        if peer.update_only {
            out.push_str("update_only=true\n");
        }
        if let Some(psk) = &peer.preshared_key {
            push_key(out, "preshared_key", psk.as_bytes());
        }
        if let Some(endpoint) = peer.endpoint {
            let _ = writeln!(out, "endpoint={}", EndpointText(endpoint));
        }
        if let Some(interval) = peer.persistent_keepalive_interval {
            let _ = writeln!(out, "persistent_keepalive_interval={interval}");
        }
        if peer.replace_allowed_ips {
            out.push_str("replace_allowed_ips=true\n");
        }
        for (ip, bits) in &peer.allowed_ips {
            let _ = writeln!(out, "allowed_ip={ip}/{bits}");
        }
        for (ip, bits) in &peer.remove_allowed_ips {
            let _ = writeln!(out, "allowed_ip=-{ip}/{bits}");
        }
    }
    out.push('\n');
}

/// The device state reported by a `get` request.
#[derive(Debug, Clone, Default)]
pub struct DeviceSnapshot {
    /// The device's private key; `None` (or the all-zero key) when it has none.
    pub private_key: Option<PrivateKey>,
    /// The UDP port the device listens on; 0 when it is not listening.
    pub listen_port: u16,
    /// The firewall mark; 0 when unset.
    pub fwmark: u32,
    /// The peers, in the order they are to be reported.
    pub peers: Vec<PeerSnapshot>,
}

/// One peer in a [`DeviceSnapshot`].
#[derive(Debug, Clone)]
pub struct PeerSnapshot {
    /// The peer's public key.
    pub public_key: PublicKey,
    /// The preshared key; all zeros when there is none.
    pub preshared_key: PresharedKey,
    /// The current endpoint, if known.
    pub endpoint: Option<SocketAddr>,
    /// When the last handshake completed, as time since the UNIX epoch; `None` if never.
    pub last_handshake: Option<Duration>,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Persistent keepalive interval in seconds; 0 when off.
    pub persistent_keepalive_interval: u16,
    /// The peer's allowed IPs.
    pub allowed_ips: Vec<(IpAddr, u8)>,
}

/// Writes the body of a `get` reply (everything before `errno=0`), key for key as wireguard-go
/// does: `private_key` (omitted when there is none), `listen_port` (omitted when 0), `fwmark`
/// (omitted when 0); then per peer `public_key`, `preshared_key`, `protocol_version=1`,
/// `endpoint` (omitted when unknown), `last_handshake_time_sec`, `last_handshake_time_nsec`
/// (both 0 when there was none), `tx_bytes`, `rx_bytes`, `persistent_keepalive_interval` and one
/// `allowed_ip` per prefix.
///
/// Endpoints: IPv6 as `[addr]:port` (with `%scope` when there is one), and an IPv4-mapped IPv6
/// address as plain IPv4, because a dual-stack socket reports IPv4 peers that way and users
/// configured `a.b.c.d:port`.
///
/// `out` then holds the private key in hex; callers should wipe it after sending.
pub fn write_get_reply(snapshot: &DeviceSnapshot, out: &mut String) {
    if let Some(key) = snapshot.private_key.as_ref().filter(|k| !k.is_zero()) {
        push_key(out, "private_key", key.as_bytes());
    }
    if snapshot.listen_port != 0 {
        let _ = writeln!(out, "listen_port={}", snapshot.listen_port);
    }
    if snapshot.fwmark != 0 {
        let _ = writeln!(out, "fwmark={}", snapshot.fwmark);
    }
    for peer in &snapshot.peers {
        push_key(out, "public_key", peer.public_key.as_bytes());
        push_key(out, "preshared_key", peer.preshared_key.as_bytes());
        out.push_str("protocol_version=1\n");
        if let Some(endpoint) = peer.endpoint {
            let endpoint = match endpoint {
                SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                    Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
                    None => endpoint,
                },
                SocketAddr::V4(_) => endpoint,
            };
            let _ = writeln!(out, "endpoint={}", EndpointText(endpoint));
        }
        let handshake = peer.last_handshake.unwrap_or_default();
        let _ = writeln!(out, "last_handshake_time_sec={}", handshake.as_secs());
        let _ = writeln!(out, "last_handshake_time_nsec={}", handshake.subsec_nanos());
        let _ = writeln!(out, "tx_bytes={}", peer.tx_bytes);
        let _ = writeln!(out, "rx_bytes={}", peer.rx_bytes);
        let _ = writeln!(
            out,
            "persistent_keepalive_interval={}",
            peer.persistent_keepalive_interval
        );
        for (ip, bits) in &peer.allowed_ips {
            let _ = writeln!(out, "allowed_ip={ip}/{bits}");
        }
    }
}

/// Writes the status that ends every reply: `errno=N` and an empty line. `0` means success;
/// errors use [`UapiError::errno`].
pub fn write_errno(errno: i32, out: &mut String) {
    let _ = write!(out, "errno={errno}\n\n");
}
