//! Fuzzes the coordinator with arbitrary sequences of client requests, admin commands and
//! time; the invariants (no panic, unique addresses and names, state rebuilt from the store
//! equal to the live state) live in `weft_tailnet::fuzzing::check_ops`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(v) = weft_tailnet::fuzzing::check_ops(data) {
        panic!("{v}");
    }
});
