//! Fuzzes one datagram through the disco parsers and a node (over UDP and DERP); the
//! invariants live in `weft_nat::fuzzing::check_packet`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(v) = weft_nat::fuzzing::check_packet(data) {
        panic!("{v}");
    }
});
