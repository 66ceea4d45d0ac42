//! Fuzzes the virtio-net header parser: no panics, exactly the known GSO types accepted, and
//! every accepted header round-trips. The checks live in `weft_packet::fuzzing`, so the corpus
//! is also replayed by `cargo test -p weft-packet` (tests/fuzz_corpus.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(v) = weft_packet::fuzzing::check_vnet_hdr(data) {
        panic!("packet_vnet_hdr invariant broken: {v}");
    }
});
