//! Fuzzes the STUN codec (server-side request checks, client-side response parsing); the
//! invariants live in `weft_derp::fuzzing::check_stun`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(v) = weft_derp::fuzzing::check_stun(data) {
        panic!("{v}");
    }
});
