//! Fixtures for tests and benchmarks outside this crate: two devices with a completed handshake.
//!
//! Hidden from the docs; not part of the API contract. Kept here, not in each test, so the
//! benches and the allocation test build the same pair the same way.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use weft_keys::PrivateKey;

use crate::{Device, Endpoint};

/// Two devices, A (tunnel 10.0.0.1, UDP 192.0.2.1:1) and B (10.0.0.2, 192.0.2.2:2), each the
/// other's only peer, with a session established by A's initiation.
#[derive(Debug)]
pub struct Pair {
    /// The initiator.
    pub a: Device,
    /// The responder.
    pub b: Device,
    /// A's UDP address, as B sees it.
    pub a_addr: Endpoint,
    /// B's UDP address, as A sees it.
    pub b_addr: Endpoint,
}

/// Builds a [`Pair`] at `now` with fixed keys and seeds. Returns `None` if the handshake did not
/// complete within a bounded number of exchanges (it always does; the caller asserts).
pub fn established_pair(now: Instant) -> Option<Pair> {
    let (ka, kb) = (
        PrivateKey::from_bytes([1; 32]),
        PrivateKey::from_bytes([2; 32]),
    );
    let (pa, pb) = (ka.public_key(), kb.public_key());
    let unix = Duration::from_secs(1_700_000_000);
    let mut a = Device::new([3; 32], now, unix);
    let mut b = Device::new([4; 32], now, unix);
    a.set_private_key(Some(ka));
    b.set_private_key(Some(kb));
    let ida = a.add_peer(pb);
    let idb = b.add_peer(pa);
    let a_addr = Endpoint::Udp(SocketAddr::from(([192, 0, 2, 1], 1)));
    let b_addr = Endpoint::Udp(SocketAddr::from(([192, 0, 2, 2], 2)));
    a.set_endpoint(ida, Some(b_addr));
    a.add_allowed_ip(ida, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 32)
        .ok()?;
    b.add_allowed_ip(idb, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 32)
        .ok()?;
    a.initiate_handshake(ida, now);
    for _ in 0..8 {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            let mut d = t.payload;
            let _ = b.decapsulate(now, a_addr, &mut d);
            moved = true;
        }
        b.handle_timeout(now);
        while let Some(t) = b.poll_transmit() {
            let mut d = t.payload;
            let _ = a.decapsulate(now, b_addr, &mut d);
            moved = true;
        }
        a.handle_timeout(now);
        if !moved {
            break;
        }
    }
    let done = a.peer_info(ida)?.last_handshake.is_some();
    done.then_some(Pair {
        a,
        b,
        a_addr,
        b_addr,
    })
}
