//! Replays the committed fuzz-style corpus (`tests/corpus/request_head/`) through the
//! invariants of `weft_derper::fuzzing`, so they hold on stable with `cargo test`. An input that
//! once broke something becomes a regression test by adding it to the corpus (by hand; such
//! files are kept).
//!
//! The seeds are generated below: the request heads DERP clients, netcheck and captive-portal
//! probes send, their truncations, hostile variants (bare newlines, huge and repeated headers,
//! binary junk, a TLS ClientHello), challenge values at and past the limits, and admission
//! answers. `seed_corpus_matches_its_generator` checks that every committed seed is what the
//! generator makes; after changing it, rewrite them with
//! `WEFT_REGENERATE_CORPORA=1 cargo test -p weft-derper --test corpus`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::PathBuf;

use weft_derper::fuzzing::check_request_head;
use weft_derper::request::{parse_head, MAX_HEAD};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/request_head")
}

fn seeds() -> Vec<(String, Vec<u8>)> {
    let derp =
        b"GET /derp HTTP/1.1\r\nHost: derp.example\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"
            .to_vec();
    let fast = b"GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nDerp-Fast-Start: 1\r\nIdeal-Node: 1a\r\n\r\n"
        .to_vec();
    let mut s: Vec<(String, Vec<u8>)> = vec![
        ("derp_upgrade".into(), derp.clone()),
        ("derp_fast_start".into(), fast.clone()),
        (
            "derp_upgrade_with_frames".into(),
            [derp.clone(), vec![0x02, 0, 0, 0, 0x38], vec![0x11; 56]].concat(),
        ),
        (
            "derp_lowercase_bare_lf".into(),
            b"GET /derp HTTP/1.1\nupgrade: derp\nconnection: upgrade\n\n".to_vec(),
        ),
        (
            "websocket".into(),
            b"GET /derp HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: derp\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".to_vec(),
        ),
        (
            "generate_204".into(),
            b"GET /generate_204 HTTP/1.1\r\nHost: 192.0.2.1\r\nX-Tailscale-Challenge: ts_derp1.example\r\n\r\n".to_vec(),
        ),
        (
            "probe_head".into(),
            b"HEAD /derp/probe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "post_derp".into(),
            b"POST /derp HTTP/1.1\r\nUpgrade: DERP\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
        ),
        (
            "derp_query".into(),
            b"GET /derp?x=1 HTTP/1.1\r\nUpgrade: DeRp\r\n\r\n".to_vec(),
        ),
        ("http10".into(), b"GET / HTTP/1.0\r\n\r\n".to_vec()),
        ("empty".into(), Vec::new()),
        (
            "tls_client_hello".into(),
            [vec![0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03], vec![0x42; 40]].concat(),
        ),
        ("nul_in_path".into(), b"GET /de\0rp HTTP/1.1\r\n\r\n".to_vec()),
        (
            "header_without_colon".into(),
            b"GET /derp HTTP/1.1\r\nUpgrade DERP\r\n\r\n".to_vec(),
        ),
        (
            "utf8_header_value".into(),
            "GET /derp HTTP/1.1\r\nUpgrade: DERP\u{1f511}\r\n\r\n".as_bytes().to_vec(),
        ),
        // Challenge values and admission answers (the same bytes reach every parser).
        ("challenge_ok".into(), b"ts_derp1.example:3340".to_vec()),
        ("challenge_64".into(), vec![b'a'; 64]),
        ("challenge_65".into(), vec![b'a'; 65]),
        ("challenge_crlf".into(), b"ts_x\r\nSet-Cookie: a=b".to_vec()),
        ("admit_allow".into(), br#"{"Allow":true}"#.to_vec()),
        ("admit_deny".into(), br#"{"Allow":false}"#.to_vec()),
        ("admit_empty_object".into(), b"{}".to_vec()),
        ("admit_wrong_type".into(), br#"{"Allow":"yes"}"#.to_vec()),
        ("admit_array".into(), b"[true]".to_vec()),
    ];
    for cut in [1, 4, 17, 40, 60] {
        s.push((format!("derp_upgrade_cut_{cut}"), derp[..cut].to_vec()));
    }
    for cut in [30, fast.len() - 2] {
        s.push((format!("derp_fast_start_cut_{cut}"), fast[..cut].to_vec()));
    }
    let mut many = b"GET /derp HTTP/1.1\r\n".to_vec();
    for i in 0..70 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    s.push(("too_many_headers".into(), many));
    let mut huge = b"GET /derp HTTP/1.1\r\nX-Long: ".to_vec();
    huge.resize(MAX_HEAD + 100, b'a');
    s.push(("oversize_partial_head".into(), huge));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..5 {
        let bytes: Vec<u8> = (0..(16 + 37 * i))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        s.push((format!("random_{i}"), bytes));
    }
    s
}

#[test]
fn request_head_corpus() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 35, "corpus too small: {}", files.len());
    for path in &files {
        let data = std::fs::read(path).unwrap();
        if let Err(v) = check_request_head(&data) {
            panic!("{}: {v}", path.display());
        }
    }
}

/// Every committed seed equals what its generator makes today; with
/// `WEFT_REGENERATE_CORPORA=1` the seeds are rewritten instead.
#[test]
fn seed_corpus_matches_its_generator() {
    let regenerate = std::env::var_os("WEFT_REGENERATE_CORPORA").is_some();
    let d = dir();
    std::fs::create_dir_all(&d).unwrap();
    for (name, data) in seeds() {
        let path = d.join(&name);
        if regenerate {
            std::fs::write(&path, data).unwrap();
        } else {
            let committed = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (regenerate the corpus)", path.display()));
            assert!(committed == data, "{name} differs from its generator");
        }
    }
}

/// The seeds reach what they are named for.
#[test]
fn seeds_reach_what_they_are_named_for() {
    for (name, data) in seeds() {
        let head = parse_head(&data);
        match name.as_str() {
            "derp_upgrade" | "derp_upgrade_with_frames" | "derp_lowercase_bare_lf" => {
                let h = head.unwrap().unwrap();
                assert!(h.is_derp_upgrade() && !h.fast_start, "{name}");
            }
            "derp_fast_start" => {
                let h = head.unwrap().unwrap();
                assert!(h.is_derp_upgrade() && h.fast_start && h.not_ideal, "{name}");
            }
            "websocket" | "post_derp" | "generate_204" | "probe_head" | "http10" => {
                assert!(!head.unwrap().unwrap().is_derp_upgrade(), "{name}");
            }
            "derp_query" => assert!(head.unwrap().unwrap().is_derp_upgrade(), "{name}"),
            "tls_client_hello" | "too_many_headers" | "oversize_partial_head" => {
                assert!(head.is_err(), "{name}");
            }
            n if n.starts_with("derp_upgrade_cut") || n.starts_with("derp_fast_start_cut") => {
                assert_eq!(head.unwrap(), None, "{name}");
            }
            _ => {}
        }
        let challenge = weft_derper::request::challenge_response(&data);
        match name.as_str() {
            "challenge_ok" | "challenge_64" => assert!(challenge.is_some(), "{name}"),
            "challenge_65" | "challenge_crlf" => assert!(challenge.is_none(), "{name}"),
            _ => {}
        }
        let admit = weft_derper::verify::parse_admit_response(&data);
        match name.as_str() {
            "admit_allow" => assert!(admit.unwrap()),
            "admit_deny" | "admit_empty_object" => assert!(!admit.unwrap()),
            "admit_wrong_type" | "admit_array" => assert!(admit.is_err()),
            _ => {}
        }
    }
}
