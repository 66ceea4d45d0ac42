//! Fuzzes the key text parsers (hex for the UAPI, base64 for `wg` and configs): no panics, and
//! every accepted key round-trips. The checks live in `weft_keys::fuzz_key_text`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weft_keys::fuzz_key_text(data);
});
