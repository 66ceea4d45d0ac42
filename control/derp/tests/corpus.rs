//! Replays the committed fuzz-style corpora (`tests/corpus/frames/`, `tests/corpus/stun/`)
//! through the invariants of `weft_derp::fuzzing`, so they hold on stable with `cargo test`.
//! An input that once broke something becomes a regression test by adding it to the corpus
//! (by hand; such files are kept).
//!
//! The seeds are generated below: a valid frame of every type, streams of several frames,
//! truncations, oversize and hostile lengths, and STUN requests/responses (upstream's response
//! vectors among them) with their broken variants. `seed_corpora_match_their_generator` checks
//! that every committed seed is what the generator makes; after changing it, rewrite them with
//! `WEFT_REGENERATE_CORPORA=1 cargo test -p weft-derp --test corpus`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    missing_docs
)]

use std::path::PathBuf;
use std::time::Instant;

use weft_derp::frame::{Frame, PeerEndpoint, PeerGoneReason, PeerPresentFlags, MAX_PACKET_SIZE};
use weft_derp::fuzzing::{check_frames, check_stun};
use weft_derp::stun::{binding_request, binding_response, TxId};
use weft_keys::PublicKey;

fn dir(kind: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind)
}

fn enc(f: &Frame<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    f.encode_to_vec(&mut v).unwrap();
    v
}

fn disco() -> Vec<u8> {
    let mut p = vec![0x54, 0x53, 0xf0, 0x9f, 0x92, 0xac];
    p.resize(6 + 32 + 24 + 16, 0x5a);
    p
}

fn frame_seeds() -> Vec<(String, Vec<u8>)> {
    let k1 = PublicKey::from_bytes([0x11; 32]);
    let k2 = PublicKey::from_bytes([0x22; 32]);
    let ep = PeerEndpoint {
        addr: "192.0.2.1:41641".parse().unwrap(),
        flags: Some(PeerPresentFlags(PeerPresentFlags::IS_REGULAR)),
    };
    let ep6 = PeerEndpoint {
        addr: "[2001:db8::7]:3340".parse().unwrap(),
        flags: None,
    };
    let disco = disco();
    let frames: Vec<(&str, Frame<'_>)> = vec![
        ("server_key", Frame::ServerKey { key: k1 }),
        (
            "client_info",
            Frame::ClientInfo {
                key: k1,
                sealed: &[7; 24 + 16 + 20],
            },
        ),
        (
            "server_info",
            Frame::ServerInfo {
                sealed: &[8; 24 + 16 + 13],
            },
        ),
        (
            "send_packet",
            Frame::SendPacket {
                dst: k2,
                packet: b"wireguard bytes",
            },
        ),
        (
            "send_packet_disco",
            Frame::SendPacket {
                dst: k2,
                packet: &disco,
            },
        ),
        (
            "send_packet_empty",
            Frame::SendPacket {
                dst: k2,
                packet: b"",
            },
        ),
        (
            "forward_packet",
            Frame::ForwardPacket {
                src: k1,
                dst: k2,
                packet: b"fwd",
            },
        ),
        (
            "recv_packet",
            Frame::RecvPacket {
                src: k1,
                packet: b"relayed",
            },
        ),
        ("keep_alive", Frame::KeepAlive),
        ("note_preferred", Frame::NotePreferred { preferred: true }),
        (
            "peer_gone",
            Frame::PeerGone {
                peer: k1,
                reason: PeerGoneReason::Disconnected,
            },
        ),
        (
            "peer_gone_not_here",
            Frame::PeerGone {
                peer: k1,
                reason: PeerGoneReason::NotHere,
            },
        ),
        (
            "peer_present",
            Frame::PeerPresent {
                peer: k2,
                endpoint: Some(ep),
            },
        ),
        (
            "peer_present_v6_no_flags",
            Frame::PeerPresent {
                peer: k2,
                endpoint: Some(ep6),
            },
        ),
        (
            "peer_present_key_only",
            Frame::PeerPresent {
                peer: k2,
                endpoint: None,
            },
        ),
        ("watch_conns", Frame::WatchConns),
        ("close_peer", Frame::ClosePeer { peer: k2 }),
        ("ping", Frame::Ping([1, 2, 3, 4, 5, 6, 7, 8])),
        ("pong", Frame::Pong([1, 2, 3, 4, 5, 6, 7, 8])),
        (
            "health",
            Frame::Health {
                problem: b"duplicate node key",
            },
        ),
        (
            "restarting",
            Frame::Restarting {
                reconnect_in_ms: 1,
                try_for_ms: 2,
            },
        ),
        (
            "unknown_type",
            Frame::Unknown {
                frame_type: 0x7e,
                payload: b"future",
            },
        ),
    ];
    let mut seeds: Vec<(String, Vec<u8>)> = frames
        .iter()
        .map(|(n, f)| (format!("frame_{n}"), enc(f)))
        .collect();

    // Streams of several frames, as a connection carries them.
    let mut stream = Vec::new();
    for (_, f) in &frames[3..12] {
        stream.extend(enc(f));
    }
    seeds.push(("stream_mixed".into(), stream.clone()));
    let mut privileged = enc(&Frame::WatchConns);
    privileged.extend(enc(&Frame::ClosePeer { peer: k1 }));
    privileged.extend(enc(&Frame::ForwardPacket {
        src: k1,
        dst: k2,
        packet: &disco,
    }));
    seeds.push(("stream_privileged".into(), privileged));

    // Truncations: in the header, in a key, in a packet.
    for (name, cut) in [
        ("header", 3),
        ("key", 20),
        ("packet", 40),
        ("stream", stream.len() - 3),
    ] {
        seeds.push((format!("trunc_{name}"), stream[..cut].to_vec()));
    }
    // Lengths that lie or exceed the limits.
    let max = vec![0u8; MAX_PACKET_SIZE];
    let mut over = enc(&Frame::SendPacket {
        dst: k2,
        packet: &max,
    });
    over[1..5].copy_from_slice(&((32 + MAX_PACKET_SIZE + 1) as u32).to_be_bytes());
    over.push(0);
    seeds.push(("oversize_packet".into(), over));
    seeds.push((
        "oversize_len_u32_max".into(),
        vec![0x04, 0xff, 0xff, 0xff, 0xff, 1, 2, 3],
    ));
    seeds.push((
        "oversize_len_server_limit".into(),
        vec![0x7e, 0x00, 0x04, 0x00, 0x01],
    ));
    seeds.push((
        "oversize_ping".into(),
        [&[0x12, 0, 0, 0x03, 0xe9][..], &[9; 1001]].concat(),
    ));
    // Payloads of the wrong length for their type.
    seeds.push(("bad_note_preferred".into(), vec![0x07, 0, 0, 0, 2, 1, 1]));
    seeds.push((
        "bad_close_peer".into(),
        [&[0x11, 0, 0, 0, 31][..], &[1; 31]].concat(),
    ));
    seeds.push(("bad_watch_conns".into(), vec![0x10, 0, 0, 0, 1, 0]));
    seeds.push((
        "short_send_packet".into(),
        [&[0x04, 0, 0, 0, 10][..], &[1; 10]].concat(),
    ));
    seeds.push((
        "short_restarting".into(),
        vec![0x15, 0, 0, 0, 4, 0, 0, 0, 1],
    ));
    seeds.push(("bad_magic".into(), {
        let mut v = enc(&Frame::ServerKey { key: k1 });
        v[5] = b'd';
        v
    }));
    seeds.push(("empty".into(), vec![]));
    // Deterministic pseudo-random bytes with plausible type bytes.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..4u8 {
        let mut b: Vec<u8> = (0..(24 + 17 * usize::from(i)))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        b[0] = [0x04, 0x09, 0x12, 0x0a][usize::from(i)];
        b[1..4].fill(0);
        seeds.push((format!("random_{i:02}"), b));
    }
    seeds
}

fn stun_seeds() -> Vec<(String, Vec<u8>)> {
    let tx = TxId([0x42; 12]);
    let req = binding_request(tx).to_vec();
    let v4 = binding_response(tx, "198.51.100.9:54321".parse().unwrap());
    let v6 = binding_response(tx, "[2001:db8::1]:3478".parse().unwrap());
    let mapped = binding_response(tx, "[::ffff:203.0.113.5]:1".parse().unwrap());
    let mut seeds = vec![
        ("request".to_string(), req.clone()),
        ("response_v4".into(), v4.as_bytes().to_vec()),
        ("response_v6".into(), v6.as_bytes().to_vec()),
        ("response_v4_mapped".into(), mapped.as_bytes().to_vec()),
        // Upstream net/stun test vectors: sipgate (MAPPED + 0x8020 + SOFTWARE) and stuntman IPv6.
        ("upstream_sipgate".into(), hex::decode(
            "010100442112a442482eb64715e8b28eaead6444000100080001e4ab4845212d\
             0004000800012710d90a449800050008000127 11d9747a8a\
             802000080001c5b96957856f80220010566f766964612e6f726720302e393600"
                .replace(' ', "")).unwrap()),
        ("upstream_stuntman_v6".into(), hex::decode(
            "010100482112a44206f56685d28af3e69ce341e2000100140002 90ce260200d1b4cfc10038b231fffeef96f6\
             802b001400020d962604a880000200d10000000000c57001\
             002000140002b1dc0710a493b23aa785ea38c219620cd714"
                .replace(' ', "")).unwrap()),
    ];
    let mut bad_fp = req.clone();
    bad_fp[39] ^= 0xff;
    seeds.push(("request_bad_fingerprint".into(), bad_fp));
    let mut wrong_sw = req.clone();
    wrong_sw[24..32].copy_from_slice(b"notnode!");
    seeds.push(("request_other_software".into(), wrong_sw));
    for cut in [19, 20, 31, 39] {
        seeds.push((format!("request_trunc_{cut}"), req[..cut].to_vec()));
    }
    let mut overlong_attr = req.clone();
    overlong_attr[22..24].copy_from_slice(&0xfff0u16.to_be_bytes());
    seeds.push(("request_attr_overrun".into(), overlong_attr));
    let mut bad_family = v4.as_bytes().to_vec();
    bad_family[25] = 9;
    seeds.push(("response_bad_family".into(), bad_family));
    let mut long_decl = v6.as_bytes().to_vec();
    long_decl[3] = 0xff;
    seeds.push(("response_declared_too_long".into(), long_decl));
    let mut trailing = v4.as_bytes().to_vec();
    trailing.extend_from_slice(b"trailing junk");
    seeds.push(("response_trailing_bytes".into(), trailing));
    seeds.into_iter().collect()
}

fn replay(kind: &str, min: usize, check: impl Fn(&[u8]) -> Result<(), String>) {
    let d = dir(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= min,
        "{kind} corpus too small: {}",
        files.len()
    );
    for path in &files {
        let data = std::fs::read(path).unwrap();
        if let Err(v) = check(&data) {
            panic!("{}: {v}", path.display());
        }
    }
}

#[test]
fn frame_corpus() {
    let now = Instant::now();
    replay("frames", 40, |d| check_frames(d, now));
}

#[test]
fn stun_corpus() {
    replay("stun", 15, check_stun);
}

/// Every committed seed equals what its generator makes today; with
/// `WEFT_REGENERATE_CORPORA=1` the seeds are rewritten instead.
#[test]
fn seed_corpora_match_their_generator() {
    let regenerate = std::env::var_os("WEFT_REGENERATE_CORPORA").is_some();
    for (kind, seeds) in [("frames", frame_seeds()), ("stun", stun_seeds())] {
        let d = dir(kind);
        std::fs::create_dir_all(&d).unwrap();
        for (name, data) in seeds {
            let path = d.join(&name);
            if regenerate {
                std::fs::write(&path, data).unwrap();
            } else {
                let committed = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("{}: {e} (regenerate the corpus)", path.display()));
                assert!(
                    committed == data,
                    "{kind}/{name} differs from its generator"
                );
            }
        }
    }
}

/// The seeds are meant to reach the interesting paths: most valid frames parse, the oversize
/// ones are refused, and the STUN request and responses parse.
#[test]
fn seeds_reach_what_they_are_named_for() {
    use weft_derp::frame::{decode, next_frame, SERVER_MAX_FRAME_LEN};
    for (name, data) in frame_seeds() {
        if name.starts_with("frame_") {
            assert!(matches!(decode(&data, 1 << 20), Ok(Some(_))), "{name}");
        }
        if name.starts_with("oversize_len") {
            assert!(next_frame(&data, SERVER_MAX_FRAME_LEN).is_err(), "{name}");
        }
    }
    for (name, data) in stun_seeds() {
        let ok = weft_derp::stun::parse_binding_request(&data).is_ok()
            || weft_derp::stun::parse_response(&data).is_ok();
        let should = name == "request"
            || name.starts_with("response_v")
            || name.starts_with("upstream")
            || name == "response_trailing_bytes";
        assert_eq!(ok, should, "{name}");
    }
}
