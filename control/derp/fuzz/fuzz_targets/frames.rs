//! Fuzzes the DERP frame stream into the server and the client state machines; the invariants
//! (no panic, parse → encode → parse, hostile streams end the connection cleanly) live in
//! `weft_derp::fuzzing::check_frames`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    #[allow(clippy::disallowed_methods)] // An arbitrary base instant for the harness.
    let now = std::time::Instant::now();
    if let Err(v) = weft_derp::fuzzing::check_frames(data, now) {
        panic!("{v}");
    }
});
