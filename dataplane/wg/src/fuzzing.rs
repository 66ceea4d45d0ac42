//! Invariants for the fuzz targets `wg_message` and `wg_device` in `dataplane/fuzz`.
//!
//! They live in the library so that `tests/fuzz_corpus.rs` replays the committed corpus
//! (`dataplane/fuzz/corpus/<target>/`) with a plain `cargo test` on stable: a crash the fuzzer
//! finds becomes a regression test by dropping its input there. Each check returns the broken
//! invariant as a [`Violation`] instead of panicking; the fuzz targets panic on it.
//!
//! # `wg_device` input format
//! A sequence of records `op, len, body[len]` (a `len` of 255 takes the rest of the input).
//! `op & 0x0f` below [`CAPTURED_KINDS`] picks a genuine message captured while the fixture was
//! built (initiation, response, cookie reply, transport both ways, keepalive — each already
//! delivered, so each is a replay), edited by the body: every 3 bytes are a little-endian
//! position and a byte to XOR there; 1–2 leftover bytes truncate. Other ops send the body as
//! is, to A when `op & 0x80` is set, else to B. `op & 0x40` sends from an attacker's address
//! instead of the genuine peer's.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use weft_keys::{PrivateKey, PublicKey};

use crate::cookie::CookieChecker;
use crate::demux::{classify, PacketKind};
use crate::device::{DEFAULT_MTU, HANDSHAKES_PER_TIMEOUT, MAX_QUEUED_HANDSHAKES};
use crate::messages::{
    padded_len, transport_header, Message, COOKIE_REPLY_LEN, INITIATION_LEN, RESPONSE_LEN, TAG_LEN,
    TRANSPORT_HEADER_LEN, TRANSPORT_MIN_LEN,
};
use crate::{Decapsulated, Device, Encapsulated, Endpoint, MessageError, PeerId};

/// A broken invariant, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), Violation> {
    if ok {
        Ok(())
    } else {
        Err(Violation(what()))
    }
}

fn le32(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
}

fn le64(data: &[u8], at: usize) -> Option<u64> {
    data.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

/// What [`Message::parse`] must answer, computed independently: the type byte, or the error.
fn expected_parse(data: &[u8]) -> Result<u8, MessageError> {
    let Some(&[ty, r1, r2, r3]) = data.first_chunk::<4>() else {
        return Err(MessageError::TooShort);
    };
    if (r1, r2, r3) != (0, 0, 0) {
        return Err(MessageError::UnknownType);
    }
    let len_ok = match ty {
        1 => data.len() == INITIATION_LEN,
        2 => data.len() == RESPONSE_LEN,
        3 => data.len() == COOKIE_REPLY_LEN,
        4 => data.len() >= TRANSPORT_MIN_LEN,
        _ => return Err(MessageError::UnknownType),
    };
    if len_ok {
        Ok(ty)
    } else {
        Err(MessageError::BadLength)
    }
}

fn field_is(name: &str, got: &[u8], data: &[u8], at: usize) -> Result<(), Violation> {
    ensure(data.get(at..at + got.len()) == Some(got), || {
        format!("{name} is not bytes {at}..{}", at + got.len())
    })
}

/// The `wg_message` invariants: [`Message::parse`] classifies exactly as the wire format says,
/// every accessor of a parsed view reads inside the message at its documented offset, a
/// transport view conserves the length (header + payload = datagram), a parsed message is
/// never mistaken for STUN or disco, and padding arithmetic on sizes taken from the input
/// stays within its bounds.
///
/// # Errors
/// The first invariant that does not hold.
pub fn check_message(data: &[u8]) -> Result<(), Violation> {
    let parsed = Message::parse(data);
    let expected = expected_parse(data);
    let got: Result<u8, MessageError> = parsed.as_ref().map_err(|e| *e).map(|m| match m {
        Message::Initiation(_) => 1,
        Message::Response(_) => 2,
        Message::CookieReply(_) => 3,
        Message::Transport(_) => 4,
    });
    ensure(got == expected, || {
        format!("parse gave {got:?}, the wire format says {expected:?}")
    })?;
    match parsed {
        Ok(Message::Initiation(m)) => {
            ensure(m.bytes().as_slice() == data, || "bytes()".into())?;
            ensure(Some(m.sender()) == le32(data, 4), || "sender".into())?;
            field_is("ephemeral", m.ephemeral(), data, 8)?;
            field_is("encrypted_static", m.encrypted_static(), data, 40)?;
            field_is("encrypted_timestamp", m.encrypted_timestamp(), data, 88)?;
            field_is("mac1", m.mac1(), data, 116)?;
            field_is("mac2", m.mac2(), data, 132)?;
        }
        Ok(Message::Response(m)) => {
            ensure(m.bytes().as_slice() == data, || "bytes()".into())?;
            ensure(Some(m.sender()) == le32(data, 4), || "sender".into())?;
            ensure(Some(m.receiver()) == le32(data, 8), || "receiver".into())?;
            field_is("ephemeral", m.ephemeral(), data, 12)?;
            field_is("encrypted_nothing", m.encrypted_nothing(), data, 44)?;
            field_is("mac1", m.mac1(), data, 60)?;
            field_is("mac2", m.mac2(), data, 76)?;
        }
        Ok(Message::CookieReply(m)) => {
            ensure(m.bytes().as_slice() == data, || "bytes()".into())?;
            ensure(Some(m.receiver()) == le32(data, 4), || "receiver".into())?;
            field_is("nonce", m.nonce(), data, 8)?;
            field_is("encrypted_cookie", m.encrypted_cookie(), data, 32)?;
        }
        Ok(Message::Transport(t)) => {
            ensure(
                TRANSPORT_HEADER_LEN + t.payload().len() == data.len(),
                || {
                    format!(
                        "length not conserved: {} + {} != {}",
                        TRANSPORT_HEADER_LEN,
                        t.payload().len(),
                        data.len()
                    )
                },
            )?;
            ensure(t.payload().len() >= TAG_LEN, || {
                "payload shorter than a tag".into()
            })?;
            field_is("payload", t.payload(), data, TRANSPORT_HEADER_LEN)?;
            ensure(Some(t.receiver()) == le32(data, 4), || "receiver".into())?;
            ensure(Some(t.counter()) == le64(data, 8), || "counter".into())?;
            ensure(
                transport_header(data) == Some((t.receiver(), t.counter())),
                || "transport_header disagrees with the view".into(),
            )?;
        }
        Err(_) => {}
    }
    if got != Ok(4) {
        ensure(transport_header(data).is_none(), || {
            "transport_header accepted a non-transport message".into()
        })?;
    }
    if got.is_ok() {
        ensure(classify(data) == PacketKind::WireGuard, || {
            "a WireGuard message was classified as STUN or disco".into()
        })?;
    }
    // Padding, with a plaintext length and an MTU taken from the input.
    if let (Some(a), Some(b)) = (data.first_chunk::<2>(), data.get(2..4)) {
        let len = usize::from(u16::from_le_bytes(*a));
        let mtu = usize::from(u16::from_le_bytes([
            b.first().copied().unwrap_or(0),
            b.get(1).copied().unwrap_or(0),
        ]));
        let padded = padded_len(len, mtu);
        ensure(padded >= len, || format!("padded_len({len}, {mtu}) shrank"))?;
        ensure(padded <= len.max(mtu), || {
            format!("padded_len({len}, {mtu}) = {padded} beyond the MTU")
        })?;
        ensure(padded - len < 16, || {
            format!("padded_len({len}, {mtu}) = {padded} pads 16 or more")
        })?;
        ensure(
            len > mtu || padded.is_multiple_of(16) || padded == mtu,
            || format!("padded_len({len}, {mtu}) = {padded} is not a multiple of 16"),
        )?;
        ensure(
            crate::buffer_len_for(len, mtu) == TRANSPORT_HEADER_LEN + padded + TAG_LEN,
            || "buffer_len_for".into(),
        )?;
    }
    Ok(())
}

/// How many kinds of captured messages the `wg_device` input can pick (see the module doc).
pub const CAPTURED_KINDS: u8 = 6;
/// At most this many datagrams are taken from one `wg_device` input.
pub const MAX_DATAGRAMS: usize = 256;

const A_KEY: [u8; 32] = [0x41; 32];
const B_KEY: [u8; 32] = [0x42; 32];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    A,
    B,
}

#[derive(Debug)]
struct Side {
    dev: Device,
    peer: PeerId,
    addr: SocketAddr,
    ip: Ipv4Addr,
}

/// Two devices with a session between them, at a fixed instant at which no timer is due.
#[derive(Debug)]
struct Fixture {
    a: Side,
    b: Side,
    now: Instant,
    captured: Vec<(Who, Vec<u8>)>,
}

fn side(seed: u8, key: [u8; 32], other: &PublicKey, addrs: (u8, u8), base: Instant) -> Side {
    let mut dev = Device::new([seed; 32], base, Duration::from_secs(1_700_000_000));
    dev.set_private_key(Some(PrivateKey::from_bytes(key)));
    let peer = dev.add_peer(*other);
    dev.set_endpoint(
        peer,
        Some(Endpoint::Udp(SocketAddr::from((
            [192, 0, 2, addrs.1],
            51820,
        )))),
    );
    let _ = dev.add_allowed_ip(peer, IpAddr::V4(Ipv4Addr::new(10, 0, 0, addrs.1)), 32);
    Side {
        dev,
        peer,
        addr: SocketAddr::from(([192, 0, 2, addrs.0], 51820)),
        ip: Ipv4Addr::new(10, 0, 0, addrs.0),
    }
}

/// An IPv4 packet of 40 bytes from `src` to `dst`.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, tag: u8) -> [u8; 40] {
    let mut p = [tag; 40];
    let header: [u8; 20] = {
        let [s0, s1, s2, s3] = src.octets();
        let [d0, d1, d2, d3] = dst.octets();
        [
            0x45, 0, 0, 40, 0, 0, 0, 0, 64, 253, 0, 0, s0, s1, s2, s3, d0, d1, d2, d3,
        ]
    };
    if let Some(h) = p.first_chunk_mut::<20>() {
        *h = header;
    }
    p
}

fn attacker() -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 66], 6666))
}

impl Fixture {
    fn new(base: Instant) -> Result<Self, Violation> {
        let a_pub = PrivateKey::from_bytes(A_KEY).public_key();
        let b_pub = PrivateKey::from_bytes(B_KEY).public_key();
        let mut fx = Self {
            a: side(1, A_KEY, &b_pub, (1, 2), base),
            b: side(2, B_KEY, &a_pub, (2, 1), base),
            now: base,
            captured: Vec::new(),
        };
        // A's first packet starts the handshake; everything sent is recorded.
        let first = ipv4(fx.a.ip, fx.b.ip, 0);
        match fx.encapsulate(Who::A, &first) {
            Ok(_) => return Err(Violation("sent without a session".into())),
            Err(Encapsulated::Staged(_)) => {}
            Err(other) => return Err(Violation(format!("fixture: {other:?}"))),
        }
        let log = fx.pump()?;
        let initiation = log
            .iter()
            .find(|(w, m)| *w == Who::B && m.first() == Some(&1))
            .map(|(_, m)| m.clone())
            .ok_or_else(|| Violation("fixture: no initiation".into()))?;
        let response = log
            .iter()
            .find(|(w, m)| *w == Who::A && m.first() == Some(&2))
            .map(|(_, m)| m.clone())
            .ok_or_else(|| Violation("fixture: no response".into()))?;
        ensure(fx.b.dev.stats().rx_initiations == 1, || {
            "fixture: no handshake".into()
        })?;
        // A genuine cookie reply to A's initiation, as B would make it under load; consumed.
        let sender = le32(&initiation, 4).unwrap_or(0);
        let mut n = 0u8;
        let cookie = CookieChecker::new(&b_pub)
            .make_reply(&initiation, sender, &fx.a.addr, fx.now, &mut |buf| {
                for byte in buf {
                    n = n.wrapping_add(1);
                    *byte = n;
                }
            })
            .to_vec();
        let b_addr = fx.b.addr;
        let mut c = cookie.clone();
        ensure(
            fx.a.dev.decapsulate(fx.now, Endpoint::Udp(b_addr), &mut c) == Decapsulated::Handshake
                && fx.a.dev.stats().rx_cookie_replies == 1,
            || "fixture: cookie reply refused".into(),
        )?;
        // A second later: data both ways, and a keepalive from B.
        fx.now = base + Duration::from_secs(1);
        let to_b = fx
            .encapsulate(Who::A, &ipv4(fx.a.ip, fx.b.ip, 1))
            .map_err(|e| Violation(format!("fixture: {e:?}")))?;
        let to_a = fx
            .encapsulate(Who::B, &ipv4(fx.b.ip, fx.a.ip, 2))
            .map_err(|e| Violation(format!("fixture: {e:?}")))?;
        let now = fx.now;
        let b_peer = fx.b.peer;
        fx.b.dev.set_persistent_keepalive(b_peer, 25, now);
        let keepalive =
            fx.b.dev
                .poll_transmit()
                .map(|t| t.payload)
                .ok_or_else(|| Violation("fixture: no keepalive".into()))?;
        fx.b.dev.set_persistent_keepalive(b_peer, 0, now);
        for (to, msg) in [(Who::B, &to_b), (Who::A, &to_a), (Who::A, &keepalive)] {
            let from = fx.side(to_other(to)).addr;
            let mut m = msg.clone();
            let v = fx
                .side_mut(to)
                .dev
                .decapsulate(now, Endpoint::Udp(from), &mut m);
            ensure(
                matches!(v, Decapsulated::Packet { .. } | Decapsulated::Keepalive(_)),
                || format!("fixture: genuine message refused: {v:?}"),
            )?;
        }
        fx.pump()?;
        fx.captured = vec![
            (Who::B, initiation),
            (Who::A, response),
            (Who::A, cookie),
            (Who::B, to_b),
            (Who::A, to_a),
            (Who::A, keepalive),
        ];
        Ok(fx)
    }

    fn side(&self, who: Who) -> &Side {
        match who {
            Who::A => &self.a,
            Who::B => &self.b,
        }
    }

    fn side_mut(&mut self, who: Who) -> &mut Side {
        match who {
            Who::A => &mut self.a,
            Who::B => &mut self.b,
        }
    }

    /// Encapsulates `packet` from `who`; `Ok` with the message when one is ready to send.
    fn encapsulate(&mut self, who: Who, packet: &[u8]) -> Result<Vec<u8>, Encapsulated> {
        let now = self.now;
        let mut buf = vec![0u8; crate::buffer_len_for(packet.len(), DEFAULT_MTU)];
        if let Some(body) = buf.get_mut(TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + packet.len()) {
            body.copy_from_slice(packet);
        }
        match self
            .side_mut(who)
            .dev
            .encapsulate(now, &mut buf, packet.len())
        {
            Encapsulated::Send { len, .. } => {
                buf.truncate(len);
                Ok(buf)
            }
            other => Err(other),
        }
    }

    /// Runs `who`'s queued handshakes and due timers.
    fn run_timeouts(&mut self, who: Who) {
        let now = self.now;
        let dev = &mut self.side_mut(who).dev;
        for _ in 0..MAX_QUEUED_HANDSHAKES / HANDSHAKES_PER_TIMEOUT + 2 {
            if dev.poll_timeout().is_some_and(|t| t <= now) {
                dev.handle_timeout(now);
            } else {
                break;
            }
        }
    }

    /// Exchanges transmits until both sides are quiet; returns (recipient, message) sent.
    fn pump(&mut self) -> Result<Vec<(Who, Vec<u8>)>, Violation> {
        let mut log = Vec::new();
        for _ in 0..64 {
            let mut progress = false;
            for from in [Who::A, Who::B] {
                self.run_timeouts(from);
                let to = to_other(from);
                let src = self.side(from).addr;
                while let Some(t) = self.side_mut(from).dev.poll_transmit() {
                    progress = true;
                    log.push((to, t.payload.clone()));
                    let mut m = t.payload;
                    let now = self.now;
                    self.side_mut(to)
                        .dev
                        .decapsulate(now, Endpoint::Udp(src), &mut m);
                }
            }
            if !progress {
                return Ok(log);
            }
        }
        Err(Violation("fixture: the devices never went quiet".into()))
    }

    /// The datagram an op asks for, and its recipient.
    fn datagram(&self, op: u8, body: &[u8]) -> (Who, Vec<u8>) {
        let kind = op & 0x0f;
        if let Some((to, msg)) = self.captured.get(usize::from(kind)) {
            let mut m = msg.clone();
            let mut edits = body.chunks_exact(3);
            for e in edits.by_ref() {
                if let &[lo, hi, xor] = e {
                    let len = m.len().max(1);
                    if let Some(b) = m.get_mut(usize::from(u16::from_le_bytes([lo, hi])) % len) {
                        *b ^= xor;
                    }
                }
            }
            let rest = edits.remainder();
            if let Some(&lo) = rest.first() {
                let t = usize::from(u16::from_le_bytes([lo, rest.get(1).copied().unwrap_or(0)]));
                let keep = t % (m.len() + 1);
                m.truncate(keep);
            }
            (*to, m)
        } else {
            let to = if op & 0x80 != 0 { Who::A } else { Who::B };
            (to, body.to_vec())
        }
    }

    /// Feeds a datagram that must be refused: counted exactly once, answered with nothing,
    /// and no change to what the peer's state reports.
    fn feed_bad(&mut self, to: Who, from: SocketAddr, bytes: Vec<u8>) -> Result<(), Violation> {
        let now = self.now;
        let side = self.side(to);
        let before = side.dev.stats().rx_dropped();
        let info = side
            .dev
            .peer_info(side.peer)
            .ok_or_else(|| Violation("peer vanished".into()))?;
        let mut buf = bytes;
        let v = self
            .side_mut(to)
            .dev
            .decapsulate(now, Endpoint::Udp(from), &mut buf);
        ensure(
            matches!(v, Decapsulated::Dropped(_) | Decapsulated::Handshake),
            || format!("{to:?} accepted a replayed or forged datagram: {v:?}"),
        )?;
        self.run_timeouts(to);
        let side = self.side(to);
        let after = side.dev.stats().rx_dropped();
        ensure(after == before + 1, || {
            format!("{to:?}: rx_dropped went from {before} to {after} for one datagram ({v:?})")
        })?;
        let now_info = side
            .dev
            .peer_info(side.peer)
            .ok_or_else(|| Violation("peer vanished".into()))?;
        ensure(
            now_info.endpoint == info.endpoint
                && now_info.rx_bytes == info.rx_bytes
                && now_info.tx_bytes == info.tx_bytes
                && now_info.last_handshake == info.last_handshake,
            || format!("{to:?}: bad input changed the peer: {info:?} -> {now_info:?}"),
        )?;
        for who in [Who::A, Who::B] {
            let t = self.side_mut(who).dev.poll_transmit();
            ensure(t.is_none(), || {
                format!("bad input made {who:?} transmit {t:?}")
            })?;
        }
        Ok(())
    }

    /// A packet each way, delivered intact.
    fn data_flows(&mut self) -> Result<(), Violation> {
        for from in [Who::A, Who::B] {
            let to = to_other(from);
            let packet = ipv4(self.side(from).ip, self.side(to).ip, 0x77);
            let mut m = self
                .encapsulate(from, &packet)
                .map_err(|e| Violation(format!("{from:?} cannot send any more: {e:?}")))?;
            let now = self.now;
            let src = self.side(from).addr;
            let v = self
                .side_mut(to)
                .dev
                .decapsulate(now, Endpoint::Udp(src), &mut m);
            let delivered = match v {
                Decapsulated::Packet { start, len, .. } => m.get(start..start + len),
                _ => None,
            };
            ensure(delivered == Some(packet.as_slice()), || {
                format!("{from:?} -> {to:?} broken after the input: {v:?}")
            })?;
        }
        Ok(())
    }
}

fn to_other(w: Who) -> Who {
    match w {
        Who::A => Who::B,
        Who::B => Who::A,
    }
}

/// The `wg_device` invariants: two devices with a session receive the datagrams `data`
/// describes (see the module doc) — replays and mutations of genuine messages and arbitrary
/// bytes. None may panic, be accepted, go uncounted, be answered, or change what the peer
/// reports; and afterwards data still flows both ways. `base` is any instant.
///
/// # Errors
/// The first invariant that does not hold.
pub fn check_device(data: &[u8], base: Instant) -> Result<(), Violation> {
    let mut fx = Fixture::new(base)?;
    let mut rest = data;
    for _ in 0..MAX_DATAGRAMS {
        let Some((&op, tail)) = rest.split_first() else {
            break;
        };
        let Some((&len, tail)) = tail.split_first() else {
            break;
        };
        let n = if len == u8::MAX {
            tail.len()
        } else {
            usize::from(len).min(tail.len())
        };
        let (body, tail) = tail.split_at(n);
        rest = tail;
        let (to, bytes) = fx.datagram(op, body);
        let from = if op & 0x40 != 0 {
            attacker()
        } else {
            fx.side(to_other(to)).addr
        };
        fx.feed_bad(to, from, bytes)?;
    }
    fx.data_flows()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests pick an arbitrary base instant.
mod tests {
    use super::*;

    #[test]
    fn fixture_builds_and_empty_input_passes() {
        check_device(&[], Instant::now()).unwrap();
        check_message(&[]).unwrap();
    }

    #[test]
    fn a_genuine_replay_of_each_capture_is_refused() {
        let input: Vec<u8> = (0..CAPTURED_KINDS).flat_map(|k| [k, 0]).collect();
        check_device(&input, Instant::now()).unwrap();
    }
}
