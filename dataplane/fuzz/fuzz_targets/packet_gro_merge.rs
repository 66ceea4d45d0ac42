//! Fuzzes GRO merge on batches of packets built from the input: every packet emitted once,
//! bytes conserved, merged frames valid and splitting back into exactly their packets, each
//! flow's order kept. The checks live in `weft_packet::fuzzing`, so the corpus is also replayed
//! by `cargo test -p weft-packet` (tests/fuzz_corpus.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(v) = weft_packet::fuzzing::check_gro_merge(data) {
        panic!("packet_gro_merge invariant broken: {v}");
    }
});
