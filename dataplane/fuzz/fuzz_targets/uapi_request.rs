//! Fuzzes the UAPI request parser: it must never panic, must not care how input is split into
//! reads, and every request it accepts must survive a write/parse round trip. The checks live in
//! `weft_dataplane::uapi::fuzz_uapi_request` so that the corpus is also replayed by `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weft_dataplane::uapi::fuzz_uapi_request(data);
});
