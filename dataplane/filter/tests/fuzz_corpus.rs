//! Replays the committed corpus of the `filter_inbound` fuzz target
//! (`dataplane/fuzz/corpus/filter_inbound/`) through its invariants
//! (`weft_filter::fuzzing::check_inbound`), so they hold on stable with `cargo test`. A crash
//! found by the fuzzer becomes a regression test by adding its input to the corpus.
//!
//! The seeds are the packets of the crafted table (`support::table`), one file each under the
//! table's name, plus a few pseudo-random byte strings; `seed_corpus_matches_its_generator`
//! checks that every committed seed is what the generator makes. After changing the table,
//! rewrite them with `WEFT_REGENERATE_CORPORA=1 cargo test -p weft-filter --test fuzz_corpus`.
//! Inputs the fuzzer finds are added by hand and kept.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::PathBuf;

use weft_filter::fuzzing::check_inbound;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/filter_inbound")
}

fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = support::table()
        .into_iter()
        .map(|(name, packet, _)| (name.to_owned(), packet))
        .collect();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..6 {
        let len = 20 + 13 * i;
        let mut bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        // Alternate IPv4 and IPv6 version nibbles so the random bytes reach the decoders.
        bytes[0] = if i % 2 == 0 { 0x45 } else { 0x60 };
        seeds.push((format!("random_{i:02}"), bytes));
    }
    seeds
}

#[test]
fn filter_inbound_corpus() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 50, "corpus too small: {}", files.len());
    for path in &files {
        let data = std::fs::read(path).unwrap();
        if let Err(v) = check_inbound(&data) {
            panic!("{}: {v}", path.display());
        }
    }
}

/// Every committed seed equals what its generator makes today; with
/// `WEFT_REGENERATE_CORPORA=1` the seeds are rewritten instead.
#[test]
fn seed_corpus_matches_its_generator() {
    let regenerate = std::env::var_os("WEFT_REGENERATE_CORPORA").is_some();
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, data) in seeds() {
        check_inbound(&data).unwrap_or_else(|v| panic!("{name}: {v}"));
        let path = dir.join(&name);
        if regenerate {
            std::fs::write(&path, data).unwrap();
        } else {
            let committed = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (regenerate the corpus)", path.display()));
            assert!(committed == data, "{name} differs from its generator");
        }
    }
}
