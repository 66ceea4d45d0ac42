//! Replays the committed corpus through the fuzz invariants on stable Rust.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn corpus_replays_without_violations() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if let Err(v) = weft_controlbase::fuzzing::check(&data) {
            panic!("{}: {v}", path.display());
        }
        n += 1;
    }
    assert!(n >= 20, "corpus has only {n} files");
}
