//! Fuzzes the policy pipeline on arbitrary text: HuJSON stripping, parsing and validation,
//! compilation against a fixed tailnet, the per-node queries and the `tests` section. The
//! checks live in `weft_policy::fuzzing::check_policy_text`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(v) = weft_policy::fuzzing::check_policy_text(data) {
        panic!("{v}");
    }
});
