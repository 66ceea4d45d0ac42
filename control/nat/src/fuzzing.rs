//! Invariants shared by the fuzz targets (`control/nat/fuzz`) and the corpus replay test
//! (`tests/fuzz_corpus.rs`), so the corpus runs on stable Rust in CI.
//!
//! * [`check_packet`]: one datagram, as hostile bytes, through every parser and through a node
//!   (over UDP and over DERP). No panic; a valid message round-trips; nothing is ever answered
//!   to a packet that did not authenticate.
//! * [`check_node_ops`]: a byte string read as a sequence of events — datagrams (some sealed
//!   correctly by the peer, some not), relayed packets, outbound traffic, time — played into a
//!   [`Node`]. No panic, queues that drain, and the routing rule: packets go direct-only only
//!   to an address this node pinged itself, while that path is trusted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use weft_keys::{PrivateKey, PublicKey};

use crate::disco::{self, DiscoBox, DiscoPrivate, Message, TxId};
use crate::node::{Node, PeerConfig, Received, Transmit, Via};

const REGION: u16 = 900;

fn our_disco() -> DiscoPrivate {
    DiscoPrivate::new(PrivateKey::from_bytes([1; 32]))
}

fn peer_disco() -> DiscoPrivate {
    DiscoPrivate::new(PrivateKey::from_bytes([2; 32]))
}

fn peer_node() -> PublicKey {
    PrivateKey::from_bytes([3; 32]).public_key()
}

/// A node with one peer, at `now`.
fn node(now: Instant) -> Node {
    let mut n = Node::new(
        our_disco(),
        PrivateKey::from_bytes([4; 32]).public_key(),
        vec![SocketAddr::from(([192, 0, 2, 1], 3478))],
        [5; 32],
        now,
    );
    n.upsert_peer(
        PeerConfig {
            node_key: peer_node(),
            disco: peer_disco().public(),
            endpoints: vec![SocketAddr::from(([198, 51, 100, 1], 41641))],
            home_derp: Some(REGION),
        },
        now,
    );
    n
}

/// One hostile datagram. See the module documentation.
///
/// # Errors
/// A description of the broken invariant.
#[allow(clippy::disallowed_methods)] // The fuzz harness picks an arbitrary base instant.
pub fn check_packet(data: &[u8]) -> Result<(), String> {
    let now = Instant::now();
    if let Ok(m) = Message::parse(data) {
        let mut again = Vec::new();
        m.encode(&mut again);
        match Message::parse(&again) {
            Ok(m2) if m2 == m => {}
            other => return Err(format!("{m:?} re-parsed as {other:?}")),
        }
    }
    let _ = disco::sender(data);
    let opener = DiscoBox::new(&our_disco(), peer_disco().public()).ok_or("fixed keys refused")?;
    let opened = opener.open(data);
    let from = SocketAddr::from(([198, 51, 100, 1], 41641));
    let mut n = node(now);
    // Drain what the node sends on its own (STUN), so only answers remain.
    while n.poll_transmit(now).is_some() {}
    let before = n.stats();
    let r_udp = n.handle_udp(0, from, data, now);
    let r_derp = n.handle_derp(REGION, peer_node(), data, now);
    let answered: Vec<Transmit> = std::iter::from_fn(|| n.poll_transmit(now)).collect();
    let looks = data.starts_with(&disco::MAGIC);
    if !looks && (r_udp == Received::Handled || r_derp == Received::Handled) {
        return Err("non-disco bytes handled as disco".into());
    }
    if opened.is_err() && !answered.is_empty() {
        return Err(format!(
            "answered {} datagram(s) to a packet that does not open: {before:?}",
            answered.len()
        ));
    }
    Ok(())
}

/// A stream of events. See the module documentation. Returns whether the node ever sent
/// direct-only (so a corpus can show the routing invariant was exercised).
///
/// # Errors
/// A description of the broken invariant.
#[allow(clippy::disallowed_methods)] // The fuzz harness picks an arbitrary base instant.
pub fn check_node_ops(data: &[u8]) -> Result<bool, String> {
    let mut went_direct = false;
    let start = Instant::now();
    let mut now = start;
    let mut n = node(now);
    let peer = peer_node();
    let sealer = DiscoBox::new(&peer_disco(), our_disco().public()).ok_or("fixed keys refused")?;
    let opener = DiscoBox::new(&peer_disco(), our_disco().public()).ok_or("fixed keys refused")?;
    // Pings the node sent, by tx id, and where to.
    let mut sent: BTreeMap<TxId, SocketAddr> = BTreeMap::new();
    let mut pinged: Vec<SocketAddr> = Vec::new();
    let mut bytes = data.iter().copied();
    let mut nonce = 0u64;
    let addr = |b: u8| SocketAddr::from(([198, 51, 100, b % 4], 41641 + u16::from(b % 3)));
    for _ in 0..2000 {
        let Some(op) = bytes.next() else { break };
        let arg = bytes.next().unwrap_or(0);
        let mut seal = |m: Message| {
            nonce += 1;
            let mut out = Vec::new();
            let mut nb = [0u8; 24];
            nb[..8].copy_from_slice(&nonce.to_le_bytes());
            sealer.seal(nb, &m, &mut out).map(|()| out).ok()
        };
        match op % 8 {
            0 => {
                let _ = n.send_to(&peer, now);
            }
            1 => now += Duration::from_millis(u64::from(arg) * 40),
            2 => {
                // The peer answers one of our pings (from the right or a wrong address).
                if let Some((&tx, &to)) = sent.iter().nth(usize::from(arg) % sent.len().max(1)) {
                    let from = if arg & 0x80 == 0 { to } else { addr(arg) };
                    if let Some(p) = seal(Message::Pong { tx, src: from }) {
                        n.handle_udp(0, from, &p, now);
                    }
                }
            }
            3 => {
                if let Some(p) = seal(Message::Ping {
                    tx: TxId([arg; 12]),
                    node_key: Some(peer),
                    padding: u16::from(arg),
                }) {
                    n.handle_udp(0, addr(arg), &p, now);
                }
            }
            4 => {
                let eps: Vec<SocketAddr> =
                    (0..arg % 5).map(|i| addr(arg.wrapping_add(i))).collect();
                if let Some(p) = seal(Message::CallMeMaybe { endpoints: eps }) {
                    n.handle_derp(REGION, peer, &p, now);
                }
            }
            5 => {
                // Raw hostile bytes over UDP or DERP.
                let len = usize::from(arg % 96);
                let raw: Vec<u8> = bytes.by_ref().take(len).collect();
                if arg & 1 == 0 {
                    n.handle_udp(0, addr(arg), &raw, now);
                } else {
                    n.handle_derp(REGION, peer, &raw, now);
                }
            }
            6 => {
                if n.poll_timeout().is_some_and(|t| t <= now) {
                    n.handle_timeout(now);
                }
            }
            _ => {
                if let Some(p) = seal(Message::Ping {
                    tx: TxId([arg; 12]),
                    node_key: None,
                    padding: 0,
                }) {
                    n.handle_derp(REGION, peer, &p, now);
                }
            }
        }
        // Collect our pings to learn their ids (open them as the peer would).
        let mut queued = 0usize;
        while let Some(t) = n.poll_transmit(now) {
            queued += 1;
            if queued > 100_000 {
                return Err("transmit queue does not drain".into());
            }
            if let (Via::Udp { to, .. }, Ok(Message::Ping { tx, .. })) =
                (t.via, opener.open(&t.bytes))
            {
                sent.insert(tx, to);
                if !pinged.contains(&to) {
                    pinged.push(to);
                }
            }
        }
        if sent.len() > 4096 {
            let keep: Vec<TxId> = sent.keys().rev().take(1024).copied().collect();
            sent.retain(|k, _| keep.contains(k));
        }
        if let Some(dest) = n.send_to(&peer, now) {
            if let (Some((_, to)), None) = (dest.udp, dest.derp) {
                if n.direct_path(&peer, now) != Some(to) {
                    return Err(format!("direct-only to {to} without a trusted path"));
                }
                if !pinged.contains(&to) {
                    return Err(format!("direct path {to} was never pinged"));
                }
                went_direct = true;
                let s = n.stats();
                if s.disco_in == 0 {
                    return Err("direct path without any disco message".into());
                }
            }
        }
    }
    Ok(went_direct)
}
