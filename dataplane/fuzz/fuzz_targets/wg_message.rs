//! Fuzzes WireGuard message parsing: `Message::parse` must classify exactly as the wire format
//! says, its views must read in bounds at the documented offsets, and transport views must
//! conserve the length. The checks live in `weft_wg::fuzzing::check_message`, so the corpus is
//! also replayed by `cargo test -p weft-wg` (tests/fuzz_corpus.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(v) = weft_wg::fuzzing::check_message(data) {
        panic!("wg_message invariant broken: {v}");
    }
});
