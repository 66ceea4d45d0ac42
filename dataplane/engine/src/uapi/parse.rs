//! The `set`/`get` request parser: incremental, bounded, validate-then-apply (see [`super::proto`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use weft_keys::{PresharedKey, PrivateKey, PublicKey};
use zeroize::Zeroize;

use super::proto::{PeerUpdate, Request, SetRequest, UapiError};
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
