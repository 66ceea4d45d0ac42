//! Interoperability with a real wireguard-go, replayed from a capture
//! (`tests/data/wireguard-go-handshake.txt`, made by `scripts/capture-wg-handshake.sh`).
//!
//! weft's side of the capture is deterministic (fixed seeds, pinned clock), so these tests
//! re-create the very devices that talked to wireguard-go and check that they produce the
//! recorded bytes again and accept wireguard-go's recorded messages.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod interop;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use weft_keys::PrivateKey;
use weft_wg::device::DEFAULT_MTU;
use weft_wg::messages::TRANSPORT_HEADER_LEN;
use weft_wg::{buffer_len_for, Decapsulated, Encapsulated, Endpoint, RxDrop};

use interop::{hex32, GO_TUNNEL, WEFT_TUNNEL};

struct Capture(BTreeMap<String, String>);

impl Capture {
    fn load() -> Self {
        let text = include_str!("data/wireguard-go-handshake.txt");
        let map = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').expect("key = value");
                (k.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        Self(map)
    }
    fn get(&self, k: &str) -> &str {
        self.0.get(k).unwrap_or_else(|| panic!("{k} missing"))
    }
    fn bytes(&self, k: &str) -> Vec<u8> {
        hex::decode(self.get(k)).unwrap()
    }
    fn key(&self, k: &str) -> [u8; 32] {
        hex32(self.get(k))
    }
    fn unix(&self) -> u64 {
        self.get("unix_secs").parse().unwrap()
    }
    fn device(&self, seed: &str, base: Instant) -> (weft_wg::Device, weft_wg::PeerId) {
        interop::device(
            self.key("weft_private"),
            self.key("go_public"),
            self.key(seed),
            self.unix(),
            base,
        )
    }
}

#[allow(clippy::disallowed_methods)] // Only offsets from the base matter.
fn base() -> Instant {
    Instant::now()
}

#[test]
fn capture_is_consistent() {
    let c = Capture::load();
    let go = PrivateKey::from_bytes(c.key("go_private"));
    assert_eq!(go.public_key().as_bytes(), &c.key("go_public"));
    let weft = PrivateKey::from_bytes(c.key("weft_private"));
    assert_eq!(weft.public_key().as_bytes(), &c.key("weft_public"));
    assert_eq!(c.bytes("go_initiation").len(), 148);
    assert_eq!(c.bytes("go_response").len(), 92);
    assert!(
        c.get("go_accepted_weft_response_at")
            .parse::<u64>()
            .unwrap()
            >= c.unix()
    );
    assert!(
        c.get("go_accepted_weft_keepalive_at")
            .parse::<u64>()
            .unwrap()
            > c.get("go_accepted_weft_response_at")
                .parse::<u64>()
                .unwrap()
    );
}

/// wireguard-go initiated: weft consumes its initiation, answers with the response that
/// wireguard-go accepted, and decrypts the ping wireguard-go then sent on the session.
#[test]
fn weft_responds_to_wireguard_go() {
    let c = Capture::load();
    let base = base();
    let (mut dev, id) = c.device("responder_seed", base);
    let out = interop::answer(&mut dev, base, &c.bytes("go_initiation"));
    assert_eq!(dev.stats().rx_initiations, 1);
    assert_eq!(dev.stats().rx_dropped(), 0);
    assert_eq!(out.len(), 1);
    assert_eq!(
        hex::encode(&out[0]),
        c.get("weft_response"),
        "weft's response is not the one wireguard-go accepted"
    );

    // The ping wireguard-go sent on the new session confirms it.
    let mut ping = c.bytes("go_transport");
    let v = dev.decapsulate(
        base + Duration::from_millis(1),
        Endpoint::Udp(interop::go_endpoint()),
        &mut ping,
    );
    let Decapsulated::Packet { peer, start, len } = v else {
        panic!("wireguard-go's data refused: {v:?}");
    };
    assert_eq!(peer, id);
    let ip = &ping[start..start + len];
    assert_eq!(ip[0] >> 4, 4);
    assert_eq!(ip[9], 1, "ICMP");
    assert_eq!(ip[12..16], GO_TUNNEL.octets());
    assert_eq!(ip[16..20], WEFT_TUNNEL.octets());
    assert_eq!(ip[20], 8, "echo request");
    let info = dev.peer_info(id).unwrap();
    assert_eq!(
        info.last_handshake,
        Some(Duration::from_secs(c.unix()) + Duration::from_millis(1)),
        "the responder's handshake completes with the confirming packet"
    );
    assert_eq!(info.rx_bytes, 148 + c.bytes("go_transport").len() as u64);

    // The recorded initiation, replayed, is refused by its timestamp.
    let mut again = c.bytes("go_initiation");
    assert_eq!(
        dev.decapsulate(
            base + Duration::from_secs(1),
            Endpoint::Udp(interop::go_endpoint()),
            &mut again
        ),
        Decapsulated::Handshake
    );
    dev.handle_timeout(base + Duration::from_secs(1));
    assert_eq!(dev.stats().rx_replayed_initiation, 1);
}

/// weft initiated: its initiation is byte-identical to the one wireguard-go answered, and
/// wireguard-go's recorded response establishes the session.
#[test]
fn weft_initiates_to_wireguard_go() {
    let c = Capture::load();
    let base = base();
    let (mut dev, id) = c.device("initiator_seed", base);
    let init = interop::initiation(&mut dev, id, base);
    assert_eq!(
        hex::encode(&init),
        c.get("weft_initiation"),
        "weft's initiation is not reproducible"
    );
    let out = interop::answer(&mut dev, base, &c.bytes("go_response"));
    assert_eq!(dev.stats().rx_responses, 1);
    assert_eq!(dev.stats().rx_dropped(), 0);
    assert_eq!(
        out.iter().map(hex::encode).collect::<Vec<_>>(),
        vec![c.get("weft_keepalive").to_owned()],
        "the confirmation wireguard-go accepted"
    );
    let info = dev.peer_info(id).unwrap();
    assert_eq!(info.last_handshake, Some(Duration::from_secs(c.unix())));

    // The session carries data.
    let mut pkt = vec![0u8; 28];
    pkt[0] = 0x45;
    pkt[2..4].copy_from_slice(&28u16.to_be_bytes());
    pkt[9] = 1;
    pkt[12..16].copy_from_slice(&WEFT_TUNNEL.octets());
    pkt[16..20].copy_from_slice(&GO_TUNNEL.octets());
    let mut buf = vec![0u8; buffer_len_for(pkt.len(), DEFAULT_MTU)];
    buf[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + pkt.len()].copy_from_slice(&pkt);
    let r = dev.encapsulate(base, &mut buf, pkt.len());
    let Encapsulated::Send {
        peer,
        endpoint,
        len,
    } = r
    else {
        panic!("no session: {r:?}");
    };
    assert_eq!(peer, id);
    assert_eq!(endpoint, Endpoint::Udp(interop::go_endpoint()));
    assert_eq!(len, 16 + 32 + 16);
    // Counter 1: the keepalive used counter 0.
    assert_eq!(buf[8..16], 1u64.to_le_bytes());
    assert_eq!(buf[4..8], c.bytes("go_response")[4..8]);
    assert_eq!(dev.route(IpAddr::V4(GO_TUNNEL)), Some(id));
}

/// Every single-bit corruption of wireguard-go's messages is refused.
#[test]
fn corrupted_wireguard_go_messages_are_refused() {
    let c = Capture::load();
    let base = base();
    let init = c.bytes("go_initiation");
    for bit in 0..init.len() * 8 {
        // mac2 is not checked when not under load: a flip there leaves a valid initiation.
        if (132 * 8..148 * 8).contains(&bit) {
            continue;
        }
        let (mut dev, _) = c.device("responder_seed", base);
        let mut m = init.clone();
        m[bit / 8] ^= 1 << (bit % 8);
        let v = dev.decapsulate(base, Endpoint::Udp(interop::go_endpoint()), &mut m);
        dev.handle_timeout(base);
        assert!(
            matches!(v, Decapsulated::Dropped(RxDrop::Malformed | RxDrop::BadMac)),
            "bit {bit}: {v:?}"
        );
        assert_eq!(dev.stats().rx_initiations, 0);
        assert!(dev.poll_transmit().is_none());
    }
    let (mut dev, id) = c.device("initiator_seed", base);
    interop::initiation(&mut dev, id, base);
    let resp = c.bytes("go_response");
    for bit in 0..(60 * 8) {
        let mut m = resp.clone();
        m[bit / 8] ^= 1 << (bit % 8);
        let before = dev.stats().rx_dropped();
        dev.decapsulate(base, Endpoint::Udp(interop::go_endpoint()), &mut m);
        dev.handle_timeout(base);
        assert_eq!(dev.stats().rx_dropped(), before + 1, "bit {bit}");
        assert_eq!(dev.stats().rx_responses, 0);
    }
    // The genuine response still works after all that.
    interop::answer(&mut dev, base, &resp);
    assert_eq!(dev.stats().rx_responses, 1);
}
