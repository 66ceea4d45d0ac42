//! The fixed weft devices of the wireguard-go interop capture. Shared by the capture helper
//! (`examples/wg_go_handshake.rs`, run by `scripts/capture-wg-handshake.sh`) and the replay
//! test (`tests/wireguard_go.rs`), so that both build byte-for-byte the same messages.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use weft_keys::{PrivateKey, PublicKey};
use weft_wg::{Device, Endpoint, PeerId};

/// wireguard-go's UDP address inside the capture namespace.
pub(crate) fn go_endpoint() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 51820))
}
/// weft's (the recorder's) UDP address inside the capture namespace.
pub(crate) fn weft_endpoint() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 51821))
}
/// wireguard-go's tunnel address (the source of its pings).
pub(crate) const GO_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// weft's tunnel address (what wireguard-go pings).
pub(crate) const WEFT_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

/// A weft device with `weft_private`, and wireguard-go as its one peer. The clock is pinned:
/// `unix_secs` is the wall time at `base`, and every message is made at `base`.
pub(crate) fn device(
    weft_private: [u8; 32],
    go_public: [u8; 32],
    seed: [u8; 32],
    unix_secs: u64,
    base: Instant,
) -> (Device, PeerId) {
    let mut dev = Device::new(seed, base, Duration::from_secs(unix_secs));
    dev.set_private_key(Some(PrivateKey::from_bytes(weft_private)));
    let id = dev.add_peer(PublicKey::from_bytes(go_public));
    dev.set_endpoint(id, Some(Endpoint::Udp(go_endpoint())));
    dev.add_allowed_ip(id, IpAddr::V4(GO_TUNNEL), 32).unwrap();
    (dev, id)
}

/// weft's initiation to wireguard-go, made at `base`.
pub(crate) fn initiation(dev: &mut Device, id: PeerId, base: Instant) -> Vec<u8> {
    dev.initiate_handshake(id, base);
    let t = dev.poll_transmit().expect("an initiation");
    assert_eq!(t.endpoint, Endpoint::Udp(go_endpoint()));
    assert!(dev.poll_transmit().is_none());
    t.payload
}

/// Feeds a handshake message from wireguard-go and returns what weft sends in reply.
pub(crate) fn answer(dev: &mut Device, base: Instant, msg: &[u8]) -> Vec<Vec<u8>> {
    let mut buf = msg.to_vec();
    let v = dev.decapsulate(base, Endpoint::Udp(go_endpoint()), &mut buf);
    assert_eq!(v, weft_wg::Decapsulated::Handshake, "{v:?}");
    dev.handle_timeout(base);
    std::iter::from_fn(|| dev.poll_transmit().map(|t| t.payload)).collect()
}

pub(crate) fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s.trim()).unwrap().try_into().unwrap()
}
