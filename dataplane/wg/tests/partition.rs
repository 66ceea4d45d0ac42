//! A device split into partitions (one per shard): indices in the partition's residue class,
//! initiations for peers held elsewhere handed out and consumed by the partition that holds
//! them, routes made unique across partitions.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use weft_keys::PrivateKey;
use weft_wg::{Decapsulated, Device, Encapsulated, Endpoint};

const UNIX: Duration = Duration::from_secs(1_700_000_000);

fn ep(last: u8, port: u16) -> Endpoint {
    Endpoint::Udp(SocketAddr::from(([192, 0, 2, last], port)))
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().unwrap())
}

/// A minimal IPv4 packet from `src` to `dst` with `n` bytes of payload.
fn ipv4(src: [u8; 4], dst: [u8; 4], n: usize) -> Vec<u8> {
    let len = 20 + n;
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p
}

/// The initiator I (10.0.0.1) and a responder split into `parts` partitions of which only
/// `owner` holds I.
struct Split {
    i: Device,
    parts: Vec<Device>,
    now: Instant,
}

fn split(parts: u32, owner: u32) -> Split {
    let now = Instant::now();
    let (ki, kr) = (
        PrivateKey::from_bytes([7; 32]),
        PrivateKey::from_bytes([8; 32]),
    );
    let (pi, pr) = (ki.public_key(), kr.public_key());
    let mut i = Device::new([1; 32], now, UNIX);
    i.set_private_key(Some(ki));
    let ir = i.add_peer(pr);
    i.set_endpoint(ir, Some(ep(2, 2)));
    i.add_allowed_ip(ir, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 32)
        .unwrap();
    let parts = (0..parts)
        .map(|k| {
            let mut d = Device::new([10 + k as u8; 32], now, UNIX);
            d.set_index_partition(k, parts);
            d.set_private_key(Some(kr.clone()));
            if k == owner {
                let id = d.add_peer(pi);
                d.add_allowed_ip(id, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 32)
                    .unwrap();
            }
            d
        })
        .collect();
    Split { i, parts, now }
}

#[test]
fn indices_stay_in_the_partitions_residue_class() {
    for (parts, owner) in [(2, 0), (2, 1), (3, 2), (7, 5)] {
        let mut s = split(parts, owner);
        let id = s.i.peer_ids()[0];
        for round in 0..20u64 {
            let now = s.now + Duration::from_secs(6 * round);
            s.i.initiate_handshake(id, now);
            let init = s.i.poll_transmit().expect("initiation").payload;
            let owner_dev = &mut s.parts[owner as usize];
            owner_dev.decapsulate(now, ep(1, 1), &mut init.clone());
            owner_dev.handle_timeout(now);
            let resp = owner_dev.poll_transmit().expect("response").payload;
            // The responder's sender index (bytes 4..8) is what I will put in every
            // transport packet's receiver field.
            assert_eq!(resp[0], 2);
            assert_eq!(le_u32(&resp[4..8]) % parts, owner, "parts {parts}");
        }
    }
}

#[test]
fn an_initiation_for_another_partition_is_handed_over_and_completes_there() {
    let mut s = split(2, 1);
    let now = s.now;
    let id = s.i.peer_ids()[0];
    s.i.initiate_handshake(id, now);
    let init = s.i.poll_transmit().unwrap().payload;

    // Partition 0 receives it (the kernel hashed the initiation there): MACs check out, it is
    // queued, and after the handshake budget runs it is handed out, not dropped.
    let r = s.parts[0].decapsulate(now, ep(1, 1), &mut init.clone());
    assert_eq!(r, Decapsulated::Handshake);
    s.parts[0].handle_timeout(now);
    assert!(
        s.parts[0].poll_transmit().is_none(),
        "partition 0 must not answer"
    );
    let foreign = s.parts[0].poll_foreign().expect("handed out");
    assert_eq!(
        foreign.initiator,
        PrivateKey::from_bytes([7; 32]).public_key()
    );
    assert_eq!(foreign.from, ep(1, 1));
    assert_eq!(foreign.datagram, init);
    assert_eq!(s.parts[0].stats().rx_foreign_initiations, 1);
    assert_eq!(s.parts[0].stats().rx_unknown_peer, 0);

    // Partition 1 holds the peer: it answers.
    assert!(s.parts[1].accept_forwarded(foreign.from, foreign.datagram));
    s.parts[1].handle_timeout(now);
    let resp = s.parts[1].poll_transmit().expect("response").payload;
    assert_eq!(le_u32(&resp[4..8]) % 2, 1);
    s.i.decapsulate(now, ep(2, 2), &mut resp.clone());
    s.i.handle_timeout(now);

    // Data from I carries a receiver index that steers to partition 1, which decrypts it.
    let pkt = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 100);
    let mut buf = vec![0u8; 16 + pkt.len() + 32];
    buf[16..16 + pkt.len()].copy_from_slice(&pkt);
    let Encapsulated::Send { len, .. } = s.i.encapsulate(now, &mut buf, pkt.len()) else {
        panic!("no session");
    };
    let msg = &mut buf[..len];
    assert_eq!(le_u32(&msg[4..8]) % 2, 1);
    let d = s.parts[1].decapsulate(now, ep(1, 1), msg);
    let Decapsulated::Packet { start, len, .. } = d else {
        panic!("{d:?}");
    };
    assert_eq!(&msg[start..start + len], &pkt[..]);
}

#[test]
fn an_unpartitioned_device_drops_unknown_initiators() {
    let mut s = split(1, 5); // one part, holding nobody
    let now = s.now;
    let id = s.i.peer_ids()[0];
    s.i.initiate_handshake(id, now);
    let mut init = s.i.poll_transmit().unwrap().payload;
    s.parts[0].decapsulate(now, ep(1, 1), &mut init);
    s.parts[0].handle_timeout(now);
    assert!(s.parts[0].poll_foreign().is_none());
    assert_eq!(s.parts[0].stats().rx_unknown_peer, 1);
}

#[test]
fn a_forwarded_initiation_is_never_handed_out_again() {
    // Partition 0 of 2 holds nobody; an initiation forwarded to it is dropped as unknown,
    // so two partitions can never pass one back and forth.
    let mut s = split(2, 1);
    let now = s.now;
    let id = s.i.peer_ids()[0];
    s.i.initiate_handshake(id, now);
    let init = s.i.poll_transmit().unwrap().payload;
    assert!(s.parts[0].accept_forwarded(ep(1, 1), init));
    s.parts[0].handle_timeout(now);
    assert!(s.parts[0].poll_foreign().is_none());
    assert_eq!(s.parts[0].stats().rx_unknown_peer, 1);
    assert_eq!(s.parts[0].stats().rx_foreign_initiations, 0);
}

#[test]
fn only_initiations_are_accepted_as_forwarded() {
    let mut s = split(2, 0);
    assert!(!s.parts[0].accept_forwarded(ep(1, 1), vec![4, 0, 0, 0, 1, 2, 3, 4]));
    assert!(!s.parts[0].accept_forwarded(ep(1, 1), Vec::new()));
    assert_eq!(s.parts[0].stats().rx_malformed, 2);
}

#[test]
fn unroute_removes_an_exact_prefix_from_whoever_holds_it() {
    let mut s = split(2, 0);
    let d = &mut s.parts[0];
    let addr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    assert!(d.route(addr).is_some());
    assert!(
        !d.unroute(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 24),
        "not that prefix"
    );
    assert!(d.unroute(addr, 32));
    assert!(d.route(addr).is_none());
    assert!(!d.unroute(addr, 32));
}

/// Completes I's handshake with partition `owner` directly.
fn establish(s: &mut Split, owner: usize) {
    let now = s.now;
    let id = s.i.peer_ids()[0];
    s.i.initiate_handshake(id, now);
    let mut init = s.i.poll_transmit().unwrap().payload;
    s.parts[owner].decapsulate(now, ep(1, 1), &mut init);
    s.parts[owner].handle_timeout(now);
    let mut resp = s.parts[owner].poll_transmit().unwrap().payload;
    s.i.decapsulate(now, ep(2, 2), &mut resp);
    s.i.handle_timeout(now);
    while s.i.poll_transmit().is_some() {}
}

/// Seals `pkt` at I and opens it at partition `owner`.
fn from_i(s: &mut Split, owner: usize, pkt: &[u8]) -> Decapsulated {
    let mut buf = vec![0u8; 16 + pkt.len() + 32];
    buf[16..16 + pkt.len()].copy_from_slice(pkt);
    let Encapsulated::Send { len, .. } = s.i.encapsulate(s.now, &mut buf, pkt.len()) else {
        panic!("no session");
    };
    s.parts[owner].decapsulate(s.now, ep(1, 1), &mut buf[..len])
}

#[test]
fn routes_held_elsewhere_count_in_source_checks_and_routing() {
    // Partition 1 holds I with 10.0.0.0/8; partition 0 (another peer) holds 10.1.2.3/32 and
    // 10.200.0.0/16. As in one undivided device, I may not use 10.1.2.3 as its source, and
    // partition 1 must not send 10.1.2.3's packets to I.
    let mut s = split(2, 1);
    let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    let id = s.parts[1].peer_ids()[0];
    s.parts[1].add_allowed_ip(id, v4(10, 0, 0, 0), 8).unwrap();
    s.parts[1].set_routes_elsewhere([(v4(10, 1, 2, 3), 32), (v4(10, 200, 0, 0), 16)]);
    establish(&mut s, 1);

    let spoofed = from_i(&mut s, 1, &ipv4([10, 1, 2, 3], [10, 0, 0, 2], 50));
    assert_eq!(
        spoofed,
        Decapsulated::Dropped(weft_wg::RxDrop::SourceNotAllowed)
    );
    let spoofed = from_i(&mut s, 1, &ipv4([10, 200, 9, 9], [10, 0, 0, 2], 50));
    assert_eq!(
        spoofed,
        Decapsulated::Dropped(weft_wg::RxDrop::SourceNotAllowed)
    );
    let fine = from_i(&mut s, 1, &ipv4([10, 5, 5, 5], [10, 0, 0, 2], 50));
    assert!(matches!(fine, Decapsulated::Packet { .. }), "{fine:?}");

    let d = &mut s.parts[1];
    assert_eq!(d.route(v4(10, 1, 2, 3)), None);
    assert_eq!(d.route(v4(10, 1, 2, 4)), Some(id));
    let pkt = ipv4([10, 0, 0, 2], [10, 1, 2, 3], 20);
    let mut buf = vec![0u8; 16 + pkt.len() + 32];
    buf[16..16 + pkt.len()].copy_from_slice(&pkt);
    assert_eq!(
        d.encapsulate(s.now, &mut buf, pkt.len()),
        Encapsulated::Dropped(weft_wg::TxDrop::NoRoute)
    );
    // Own routes only, in `routes()` and in what `get` reports.
    let own: Vec<_> = d.routes().map(|(a, c, _)| (a, c)).collect();
    assert_eq!(own.len(), 2, "{own:?}");
    assert!(!own.contains(&(v4(10, 1, 2, 3), 32)));
    assert_eq!(d.peer_info(id).unwrap().allowed_ips.len(), 2);

    // Replacing the set forgets the old one; an own prefix is never taken over.
    d.set_routes_elsewhere([(v4(10, 0, 0, 0), 8)]);
    assert_eq!(d.route(v4(10, 1, 2, 3)), Some(id));
    assert_eq!(d.route(v4(10, 200, 1, 1)), Some(id));
    let fine = from_i(&mut s, 1, &ipv4([10, 1, 2, 3], [10, 0, 0, 2], 50));
    assert!(matches!(fine, Decapsulated::Packet { .. }), "{fine:?}");
}
