//! The matcher against the naive reference model (`weft_filter::fuzzing::reference_verdict`)
//! on generated rule sets and packets. Packets are biased toward the rules: addresses at the
//! first and last address of rule and local prefixes (and one past them), ports at range
//! edges ±1, protocols the rules name, so accepts are about as frequent as drops.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::manual_is_multiple_of
)]

mod support;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use support::strategies::{build, case};
use weft_filter::fuzzing::reference_verdict;
use weft_filter::{DropReason, Filter, Verdict};

proptest! {
    #![proptest_config(Config { cases: 4096, ..Config::default() })]

    #[test]
    fn matcher_equals_reference_model((rules, local, plan) in case()) {
        let packet = build(&plan, &rules, &local);
        let filter = Filter::new(&rules, local.iter().copied());
        prop_assert_eq!(
            filter.check_inbound(&packet),
            reference_verdict(&rules, &local, &packet),
            "packet {:02x?}", packet
        );
    }

    #[test]
    fn arbitrary_bytes_agree_with_reference(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
        let rules = support::table_rules();
        let local = support::table_local();
        let filter = Filter::new(&rules, local.iter().copied());
        prop_assert_eq!(filter.check_inbound(&bytes), reference_verdict(&rules, &local, &bytes));
    }
}

/// The generator is useful only if rule-given accepts and rule-less drops are both common.
#[test]
fn generated_packets_exercise_both_verdicts() {
    let mut runner = TestRunner::deterministic();
    let strategy = case();
    let (mut rule_accepts, mut no_rule) = (0, 0);
    for _ in 0..4000 {
        let (rules, local, plan) = strategy.new_tree(&mut runner).unwrap().current();
        let packet = build(&plan, &rules, &local);
        let verdict = Filter::new(&rules, local.iter().copied()).check_inbound(&packet);
        let without_rules = Filter::deny_all(local.iter().copied()).check_inbound(&packet);
        match (verdict, without_rules) {
            (Verdict::Accept, Verdict::Drop(DropReason::NoRule)) => rule_accepts += 1,
            (Verdict::Drop(DropReason::NoRule), _) => no_rule += 1,
            _ => {}
        }
    }
    eprintln!("{rule_accepts} accepts given by a rule, {no_rule} no-rule drops");
    assert!(
        rule_accepts >= 400,
        "only {rule_accepts} accepts given by a rule"
    );
    assert!(no_rule >= 800, "only {no_rule} no-rule drops");
}
