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

/// The wire types round-trip through JSON the way a control server writes them: the legacy
/// fields and an empty `IPProto` are omitted, so official clients accept the output.
#[test]
fn filter_rules_serialize_in_wire_shape() {
    let json = r#"[{"SrcIPs":["100.64.0.0/10"],"DstPorts":[{"IP":"*","Ports":{"First":22,"Last":22}}]},
                  {"SrcIPs":["*"],"DstPorts":[{"IP":"10.0.0.0/8","Ports":{"First":0,"Last":65535}}],"IPProto":[6]}]"#;
    let rules: Vec<weft_filter::FilterRule> = serde_json::from_str(json).unwrap();
    let out = serde_json::to_string(&rules).unwrap();
    assert!(!out.contains("Bits"), "{out}");
    assert_eq!(out.matches("IPProto").count(), 1, "{out}");
    let back: Vec<weft_filter::FilterRule> = serde_json::from_str(&out).unwrap();
    assert_eq!(back, rules);
}
