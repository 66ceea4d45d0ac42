//! Replays the committed fuzz corpora (`dataplane/fuzz/corpus/wg_message/` and `wg_device/`)
//! through the invariants of the cargo-fuzz targets, so they hold on stable with `cargo test`.
//! A crash found by the fuzzer becomes a regression test by adding its input to the corpus.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::time::Instant;

use weft_wg::fuzzing;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn wg_message_corpus() {
    let files = corpus("wg_message");
    assert!(files.len() >= 20, "corpus too small: {}", files.len());
    for (name, data) in &files {
        if let Err(v) = fuzzing::check_message(data) {
            panic!("{name}: {v}");
        }
    }
}

#[test]
fn wg_device_corpus() {
    let files = corpus("wg_device");
    assert!(files.len() >= 20, "corpus too small: {}", files.len());
    #[allow(clippy::disallowed_methods)] // Only offsets from the base matter.
    let base = Instant::now();
    for (name, data) in &files {
        if let Err(v) = fuzzing::check_device(data, base) {
            panic!("{name}: {v}");
        }
    }
}
