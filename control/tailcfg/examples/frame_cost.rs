//! Measures what one full map costs to encode: JSON, zstd and the frame, for tailnets of 1 000
//! and 10 000 nodes with realistic peers (random-looking keys, two addresses, two endpoints, Hostinfo).
//! Run: `cargo run --release -p weft-tailcfg --example frame_cost`.
// A measuring shell: it reads the clock, which cores may not.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use weft_tailcfg::frame::{decode_all, encode, Limits};
use weft_tailcfg::*;

fn peer(id: i64) -> Node {
    // Keys are random-looking, as real ones are (they dominate what zstd cannot compress).
    let mut x = (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut key = [0u8; 32];
    for byte in &mut key {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    let v4 = Ipv4Addr::new(100, 64 + (id >> 16) as u8, (id >> 8) as u8, id as u8);
    let v6 = Ipv6Addr::new(
        0xfd7a,
        0x115c,
        0xa1e0,
        0,
        0,
        0,
        (id >> 16) as u16,
        id as u16,
    );
    let addrs = vec![
        IpPrefix::host(IpAddr::V4(v4)),
        IpPrefix::host(IpAddr::V6(v6)),
    ];
    let mut disco = key;
    disco.reverse();
    Node {
        id,
        stable_id: id.to_string(),
        name: format!("host-{id}.tail.example."),
        user: 1 + id % 10,
        key: NodePublic::from_bytes(key),
        disco_key: DiscoPublic::from_bytes(disco),
        machine: MachinePublic::from_bytes(disco.map(|b| b ^ 0x5a)),
        key_expiry: Time::from_unix(1_800_000_000, 0).unwrap(),
        allowed_ips: Some(addrs.clone()),
        addresses: addrs,
        endpoints: vec![
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(198, 51, (id >> 8) as u8, id as u8)),
                41641,
            ),
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(10, 0, (id >> 8) as u8, id as u8)),
                41641,
            ),
        ],
        home_derp: 999,
        hostinfo: Some(Hostinfo {
            hostname: format!("host-{id}"),
            os: "linux".into(),
            ..Hostinfo::default()
        }),
        created: Time::from_unix(1_760_000_000, 0).unwrap(),
        cap: 133,
        online: Some(true),
        machine_authorized: true,
        ..Node::default()
    }
}

fn main() {
    for n in [1_000i64, 10_000] {
        let msg = MapResponse {
            node: Some(peer(1)),
            peers: (2..=n).map(peer).collect(),
            debug: Some(Debug {
                disable_log_tail: true,
                ..Debug::default()
            }),
            ..MapResponse::default()
        };
        let t = Instant::now();
        let json = serde_json::to_vec(&msg).unwrap();
        let t_json = t.elapsed();
        let t = Instant::now();
        let mut frame = Vec::new();
        encode(&msg, &mut frame).unwrap();
        let t_all = t.elapsed();
        let t = Instant::now();
        let back = decode_all(&frame, Limits::default()).unwrap();
        let t_dec = t.elapsed();
        assert_eq!(back.len(), 1);
        println!(
            "{n:>6} nodes: JSON {:>9} B in {:>7.2} ms; JSON+zstd frame {:>8} B in {:>7.2} ms; decode {:>7.2} ms",
            json.len(),
            t_json.as_secs_f64() * 1e3,
            frame.len(),
            t_all.as_secs_f64() * 1e3,
            t_dec.as_secs_f64() * 1e3,
        );
    }
    // One changed peer, as a delta.
    let delta = MapResponse {
        peers_changed: vec![peer(42)],
        ..MapResponse::default()
    };
    let t = Instant::now();
    let mut frame = Vec::new();
    for _ in 0..1000 {
        frame.clear();
        encode(&delta, &mut frame).unwrap();
    }
    println!(
        "one-peer delta: {} B frame, {:.1} µs each",
        frame.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
}
