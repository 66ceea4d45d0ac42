//! Replays the committed corpora of the `disco_packet` and `node_ops` fuzz targets
//! (`tests/corpus/<target>/`) through their invariants (`weft_nat::fuzzing`), and runs the same
//! invariants on arbitrary bytes. The fuzz targets (`control/nat/fuzz`) use these directories as
//! seed corpora. `WEFT_REGENERATE_CORPORA=1 cargo test -p weft-nat --test fuzz_corpus` rewrites
//! the generated seeds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use proptest::prelude::*;
use weft_keys::PrivateKey;
use weft_nat::disco::{DiscoBox, DiscoPrivate, Message, TxId};
use weft_nat::fuzzing::{check_node_ops, check_packet};

fn dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target)
}

/// Sealed messages from the fuzz node's peer (keys as in `weft_nat::fuzzing`), their
/// truncations and bit flips, and plain junk.
fn packet_seeds() -> Vec<(String, Vec<u8>)> {
    let peer = DiscoPrivate::new(PrivateKey::from_bytes([2; 32]));
    let us = DiscoPrivate::new(PrivateKey::from_bytes([1; 32]));
    let b = DiscoBox::new(&peer, us.public()).unwrap();
    let msgs = [
        (
            "ping",
            Message::Ping {
                tx: TxId([7; 12]),
                node_key: Some(PrivateKey::from_bytes([3; 32]).public_key()),
                padding: 0,
            },
        ),
        (
            "ping_padded",
            Message::Ping {
                tx: TxId([8; 12]),
                node_key: Some(PrivateKey::from_bytes([3; 32]).public_key()),
                padding: 200,
            },
        ),
        (
            "ping_old",
            Message::Ping {
                tx: TxId([9; 12]),
                node_key: None,
                padding: 0,
            },
        ),
        (
            "pong_v4",
            Message::Pong {
                tx: TxId([1; 12]),
                src: "198.51.100.1:41641".parse().unwrap(),
            },
        ),
        (
            "pong_v6",
            Message::Pong {
                tx: TxId([2; 12]),
                src: "[2001:db8::1]:41641".parse().unwrap(),
            },
        ),
        (
            "cmm",
            Message::CallMeMaybe {
                endpoints: vec![
                    "198.51.100.1:41641".parse().unwrap(),
                    "10.0.0.2:41641".parse().unwrap(),
                ],
            },
        ),
        ("cmm_empty", Message::CallMeMaybe { endpoints: vec![] }),
    ];
    let mut out = Vec::new();
    for (name, m) in msgs {
        let mut p = Vec::new();
        b.seal([5; 24], &m, &mut p).unwrap();
        out.push((name.to_string(), p.clone()));
        out.push((format!("{name}_trunc"), p[..p.len() - 3].to_vec()));
        let mut flipped = p.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        out.push((format!("{name}_flip"), flipped));
        let mut plain = Vec::new();
        m.encode(&mut plain);
        out.push((format!("{name}_plain"), plain));
    }
    out.push(("magic_only".into(), weft_nat::disco::MAGIC.to_vec()));
    out.push((
        "wireguard".into(),
        vec![4, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
    ));
    out.push((
        "stun_response".into(),
        weft_derp::stun::binding_response(
            weft_derp::stun::TxId([0; 12]),
            "198.51.100.1:1".parse().unwrap(),
        )
        .as_bytes()
        .to_vec(),
    ));
    out.push(("unknown_type_plain".into(), vec![4, 0, 1, 2, 3]));
    out
}

/// Event streams of several lengths from a fixed generator.
fn ops_seeds() -> Vec<(String, Vec<u8>)> {
    let mut x: u64 = 0x0dd_ba11;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 24) as u8
    };
    let mut out = Vec::new();
    for (i, len) in [16usize, 40, 80, 160, 320, 640]
        .iter()
        .cycle()
        .take(24)
        .enumerate()
    {
        out.push((format!("ops_{i:02}"), (0..*len).map(|_| next()).collect()));
    }
    // A handshake-shaped stream: traffic, call-me-maybe, pongs for the pings, time.
    out.push((
        "ops_direct".into(),
        vec![
            0, 0, 4, 3, 2, 0, 2, 1, 0, 0, 1, 10, 6, 0, 0, 0, 2, 2, 1, 200, 6, 0, 0, 0,
        ],
    ));
    out
}

fn sync(target: &str, seeds: &[(String, Vec<u8>)]) -> Vec<Vec<u8>> {
    let d = dir(target);
    if std::env::var_os("WEFT_REGENERATE_CORPORA").is_some() {
        std::fs::create_dir_all(&d).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(d.join(name), bytes).unwrap();
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e} (WEFT_REGENERATE_CORPORA=1 writes it)", d.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= seeds.len(),
        "{} holds {} files, {} seeds",
        d.display(),
        files.len(),
        seeds.len()
    );
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

#[test]
fn disco_packet_corpus_holds_its_invariants() {
    for bytes in sync("disco_packet", &packet_seeds()) {
        check_packet(&bytes).unwrap();
    }
}

#[test]
fn node_ops_corpus_holds_its_invariants() {
    let mut direct = 0;
    for bytes in sync("node_ops", &ops_seeds()) {
        direct += usize::from(check_node_ops(&bytes).unwrap());
    }
    // The routing invariant is only exercised by streams that reach a direct path.
    assert!(direct >= 1, "no corpus stream reached a direct path");
}

#[test]
fn a_sealed_ping_is_answered_and_its_forgery_is_not() {
    // What `check_packet` relies on: the node answers the peer's real ping (so "answered" is
    // not vacuously empty) and stays silent for the same ping with one byte flipped.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    let seeds = packet_seeds();
    let answers = |bytes: &[u8]| {
        let mut n = weft_nat::node::Node::new(
            DiscoPrivate::new(PrivateKey::from_bytes([1; 32])),
            PrivateKey::from_bytes([4; 32]).public_key(),
            vec![],
            [5; 32],
            now,
        );
        n.upsert_peer(
            weft_nat::node::PeerConfig {
                node_key: PrivateKey::from_bytes([3; 32]).public_key(),
                disco: DiscoPrivate::new(PrivateKey::from_bytes([2; 32])).public(),
                endpoints: vec![],
                home_derp: Some(900),
            },
            now,
        );
        n.handle_udp(0, "198.51.100.1:41641".parse().unwrap(), bytes, now);
        std::iter::from_fn(|| n.poll_transmit(now)).count()
    };
    let ping = &seeds.iter().find(|s| s.0 == "ping").unwrap().1;
    assert!(answers(ping) >= 1);
    let flip = &seeds.iter().find(|s| s.0 == "ping_flip").unwrap().1;
    assert_eq!(answers(flip), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn arbitrary_packets_hold_the_invariants(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        prop_assert!(check_packet(&bytes).is_ok());
        let mut framed = weft_nat::disco::MAGIC.to_vec();
        framed.extend_from_slice(&bytes);
        prop_assert!(check_packet(&framed).is_ok());
    }

    #[test]
    fn arbitrary_event_streams_hold_the_invariants(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let r = check_node_ops(&bytes);
        prop_assert!(r.is_ok(), "{:?}", r);
    }
}
