//! The table of crafted packets (`support::table`) through the matcher and through the
//! reference model: both give the verdict the table states. The same table will run through
//! the tc program with `BPF_PROG_TEST_RUN`.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use weft_filter::fuzzing::reference_verdict;
use weft_filter::{Filter, Verdict};

#[test]
fn crafted_packets() {
    let rules = support::table_rules();
    let local = support::table_local();
    let filter = Filter::new(&rules, local.iter().copied());
    let mut failures = Vec::new();
    for (name, packet, want) in support::table() {
        let got = filter.check_inbound(&packet);
        let model = reference_verdict(&rules, &local, &packet);
        if got != want || model != want {
            failures.push(format!(
                "{name}: want {want:?}, matcher {got:?}, model {model:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn deny_all_still_accepts_what_needs_no_rule() {
    let filter = Filter::deny_all(support::table_local());
    for (name, packet, want) in support::table() {
        let got = filter.check_inbound(&packet);
        if want == Verdict::Accept && got != Verdict::Accept {
            // Only rule-based accepts may turn into drops.
            assert_eq!(
                got,
                Verdict::Drop(weft_filter::DropReason::NoRule),
                "{name}"
            );
        }
    }
}
