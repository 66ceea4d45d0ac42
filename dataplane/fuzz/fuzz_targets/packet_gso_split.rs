//! Fuzzes GSO split on TUN reads: no panics; segment payloads add up to the super-packet's;
//! every segment's IPv4 and TCP/UDP checksums verify; structured inputs (first byte `S`)
//! equal the reference segmentation. The checks live in `weft_packet::fuzzing`, so the corpus
//! is also replayed by `cargo test -p weft-packet` (tests/fuzz_corpus.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(v) = weft_packet::fuzzing::check_gso_split(data) {
        panic!("packet_gso_split invariant broken: {v}");
    }
});
