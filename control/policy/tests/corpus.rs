//! Replays the committed fuzz-style corpus (`tests/corpus/*.hujson`: the example policy,
//! hand-made edge cases and random byte mutations of the example) through the whole
//! pipeline, and property tests on arbitrary and mutated input. Invariants: nothing panics;
//! an error names a position inside the file; a policy that parses compiles, answers every
//! per-node query and runs its tests without panicking, and its filters are accepted by
//! `weft_filter` without legacy fields or skipped entries.
//!
//! A crash found later becomes a regression test by adding its input to the corpus.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::PathBuf;

use proptest::prelude::*;
use support::*;
use weft_policy::{Policy, PolicyError, Position};

/// Runs one input through everything; returns whether it parsed.
fn exercise(text: &str) -> bool {
    match Policy::parse(text) {
        Ok(p) => {
            let c = p.compile(&tailnet());
            for n in &tailnet().nodes {
                let rules = c.filter_for(n.id);
                let compiled = weft_filter::compile(&rules).expect("no legacy fields");
                assert!(compiled.skipped.is_empty(), "{:?}", compiled.skipped);
                let _ = c.peers_of(n.id);
                let _ = p.auto_approves_exit_node(n);
                let _ = p.auto_approves_route(n, net("10.33.0.0/16"));
            }
            let _ = c.run_tests();
            true
        }
        Err(e) => {
            let at = match &e {
                PolicyError::Syntax { at, .. }
                | PolicyError::Invalid { at, .. }
                | PolicyError::TestFailed { at, .. } => *at,
                PolicyError::Hujson(weft_policy::hujson::HujsonError::UnterminatedComment {
                    at,
                }) => *at,
                _ => Position { line: 1, column: 1 },
            };
            let lines = text.split('\n').count();
            assert!(at.line >= 1 && at.line <= lines, "{e}: {lines} lines");
            assert!(!e.to_string().is_empty());
            false
        }
    }
}

#[test]
fn corpus_replays() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 40, "corpus too small: {}", files.len());
    let mut parsed = 0;
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        if exercise(&text) {
            parsed += 1;
        }
    }
    // Both outcomes are represented.
    assert!(
        parsed >= 5 && parsed + 5 <= files.len(),
        "{parsed} of {}",
        files.len()
    );
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,300}") {
        exercise(&s);
    }

    #[test]
    fn mutated_example_never_panics(edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..8)) {
        let mut b = include_str!("../../../configs/policy.hujson").as_bytes().to_vec();
        for (at, op, byte) in edits {
            let k = at.index(b.len());
            match op {
                0 => { b.remove(k); }
                1 => b.insert(k, byte),
                2 => b[k] = byte,
                _ => b.insert(k, b"{}[],:\"/*"[usize::from(byte) % 9]),
            }
        }
        exercise(&String::from_utf8_lossy(&b));
    }
}
