//! Fuzzes a node with arbitrary event streams (sealed and hostile datagrams, relayed packets,
//! traffic, time); the invariants live in `weft_nat::fuzzing::check_node_ops`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(v) = weft_nat::fuzzing::check_node_ops(data) {
        panic!("{v}");
    }
});
