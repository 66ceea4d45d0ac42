//! Fuzzes a pair of established WireGuard devices with replayed, mutated and arbitrary
//! datagrams (input format: `weft_wg::fuzzing` module docs): nothing may panic, be accepted,
//! go uncounted, be answered or change peer state, and data must still flow afterwards. The
//! checks live in `weft_wg::fuzzing::check_device`, so the corpus is also replayed by
//! `cargo test -p weft-wg` (tests/fuzz_corpus.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(v) = weft_wg::fuzzing::check_device(data, std::time::Instant::now()) {
        panic!("wg_device invariant broken: {v}");
    }
});
