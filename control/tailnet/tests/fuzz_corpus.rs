//! Replays the committed corpus of the `coordinator_ops` fuzz target (`tests/corpus/
//! coordinator_ops/`: generated sequences of registrations, streams, admin commands and time)
//! through its invariants (`weft_tailnet::fuzzing::check_ops`: no panic, unique addresses and
//! names, no session of a deleted node, and a coordinator rebuilt from the store agreeing with
//! the live one), and runs them on arbitrary bytes. The fuzz target (`control/tailnet/fuzz`)
//! uses the same directory as its seed corpus.
//!
//! The seeds are generated below; `WEFT_REGENERATE_CORPORA=1 cargo test -p weft-tailnet --test
//! fuzz_corpus` rewrites them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use proptest::prelude::*;
use weft_tailnet::fuzzing::{check_ops, registers_someone};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/coordinator_ops")
}

/// Deterministic seeds: op streams of several lengths from a fixed generator.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut x: u64 = 0x5eed_c0de;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 24) as u8
    };
    let mut out = Vec::new();
    for (i, len) in [12usize, 30, 60, 90, 150, 240, 300, 450, 600]
        .iter()
        .cycle()
        .take(40)
        .enumerate()
    {
        let mut v: Vec<u8> = (0..*len).map(|_| next()).collect();
        // Start most seeds with registrations so that later ops find nodes.
        if i % 4 != 3 {
            for j in 0..4 {
                v[j * 3] = 0;
                v[j * 3 + 1] = j as u8;
                v[j * 3 + 2] = (j % 4) as u8;
            }
        }
        out.push((format!("seed-{i:02}"), v));
    }
    out
}

#[test]
fn seed_corpus_matches_its_generator() {
    let dir = corpus_dir();
    if std::env::var_os("WEFT_REGENERATE_CORPORA").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds() {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (name, bytes) in seeds() {
        let on_disk = std::fs::read(dir.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(on_disk, bytes, "{name} differs from its generator");
    }
}

#[test]
fn corpus_replays() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 40, "corpus of {}", files.len());
    let mut registering = 0;
    for f in &files {
        let data = std::fs::read(f).unwrap();
        registering += usize::from(registers_someone(&data));
        check_ops(&data).unwrap_or_else(|v| panic!("{}: {v}", f.display()));
    }
    assert!(
        registering >= 30,
        "only {registering} inputs register a node"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_sequences_keep_the_invariants(data in prop::collection::vec(any::<u8>(), 0..450)) {
        if let Err(v) = check_ops(&data) {
            prop_assert!(false, "{}", v);
        }
    }
}
