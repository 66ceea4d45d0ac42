//! Replays the committed corpus of the `policy_text` fuzz target (`tests/corpus/*.hujson`:
//! the example policy, hand-made edge cases and random byte mutations of the example)
//! through its invariants (`weft_policy::fuzzing::check_policy_text`: nothing panics, an error
//! names a position inside the file, an accepted policy compiles, its filters are accepted by
//! `weft_filter` without legacy fields or skipped entries, visibility is symmetric), and
//! property tests on arbitrary and mutated input. The fuzz target (`control/policy/fuzz`)
//! uses the same directory as its seed corpus; an input it finds is added here by hand and
//! kept.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use proptest::prelude::*;
use weft_policy::fuzzing::check_policy_text;

/// Runs one input through the shared invariants; returns whether it parsed.
fn exercise(text: &str) -> bool {
    check_policy_text(text.as_bytes()).unwrap_or_else(|v| panic!("{v}\n{text}"))
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
