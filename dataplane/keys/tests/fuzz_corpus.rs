//! Replays the committed corpus of the `key_text` fuzz target through its invariants on stable.
#![allow(clippy::unwrap_used, clippy::panic)]

#[test]
fn key_text_corpus() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/key_text");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        weft_keys::fuzz_key_text(&data);
        n += 1;
    }
    assert!(n >= 10, "corpus too small: {n}");
}
