//! Fuzzes the tailnet packet filter: `Filter::check_inbound` must not panic, must give the
//! verdict of the naive reference model under a mixed, an allow-all and a deny-all rule set,
//! and the two extreme rule sets must differ only where a rule decides. The checks live in
//! `weft_filter::fuzzing::check_inbound`, so the corpus is also replayed by
//! `cargo test -p weft-filter` (tests/fuzz_corpus.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(v) = weft_filter::fuzzing::check_inbound(data) {
        panic!("filter_inbound invariant broken: {v}");
    }
});
