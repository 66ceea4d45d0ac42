//! Reply text: the `get` reply body, `errno=` lines, and requests written back out (tests and the
//! fuzz round trip).

use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use weft_keys::{PresharedKey, PrivateKey, PublicKey};

use super::proto::Request;
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

/// Writes a request in the order and form `wg` uses; [`parse_requests`](super::parse_requests) reads it back to an
/// equal value. For tests, fuzzing and clients of a weft daemon.
///
/// A [`PeerUpdate`](super::PeerUpdate) with `remove` set is written as `public_key` + `remove=true` only.
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
/// errors use [`UapiError::errno`](super::UapiError::errno).
pub fn write_errno(errno: i32, out: &mut String) {
    let _ = write!(out, "errno={errno}\n\n");
}
