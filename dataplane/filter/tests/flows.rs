//! The reverse-flow cache: a UDP or SCTP packet that answers a flow this node sent is
//! accepted without a rule, only after that flow was sent, only while it is among the 512
//! most recently used flows, and TCP, ICMP and the rest are judged as before. The matcher and
//! its `FlowTable` are compared with the reference model (`weft_filter::fuzzing`) on generated
//! sequences of outbound and inbound packets.
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
use support::flows::{local_with_mapped, ops, Fam, Flow, Kind};
use weft_filter::fuzzing::{reference_outbound, reference_verdict_with, ReferenceFlows};
use weft_filter::{DropReason, Filter, FlowTable, Verdict, FLOW_TABLE_CAPACITY};

const NO_RULE: Verdict = Verdict::Drop(DropReason::NoRule);

fn flow(fam: Fam, kind: Kind, local_port: u16, remote_port: u16) -> Flow {
    Flow {
        fam,
        local: 0,
        remote: 0,
        local_port,
        remote_port,
        kind,
    }
}

fn deny_all() -> Filter {
    Filter::deny_all(local_with_mapped())
}

#[test]
fn replies_are_accepted_only_after_the_outbound_flow() {
    let filter = deny_all();
    for fam in [Fam::V4, Fam::V6, Fam::Mapped] {
        for kind in [Kind::Udp, Kind::Sctp] {
            let f = flow(fam, kind, 40000, 53);
            let mut flows = FlowTable::new();
            let reply = f.packet(false);
            assert_eq!(filter.check_inbound_with(&reply, &mut flows), NO_RULE);
            assert!(filter.check_outbound(&f.packet(true), &mut flows));
            assert_eq!(flows.len(), 1);
            assert_eq!(
                filter.check_inbound_with(&reply, &mut flows),
                Verdict::Accept,
                "{fam:?} {kind:?}"
            );
            // Without the cache, the same reply needs a rule.
            assert_eq!(filter.check_inbound(&reply), NO_RULE);
            // One field off: not a reply.
            let other = |g: Flow| filter.check_inbound_with(&g.packet(false), &mut flows.clone());
            assert_eq!(other(flow(fam, kind, 40001, 53)), NO_RULE, "local port");
            assert_eq!(other(flow(fam, kind, 40000, 54)), NO_RULE, "remote port");
            assert_eq!(other(Flow { remote: 1, ..f }), NO_RULE, "remote address");
            let proto = if kind == Kind::Udp {
                Kind::Sctp
            } else {
                Kind::Udp
            };
            assert_eq!(other(Flow { kind: proto, ..f }), NO_RULE, "protocol");
            // The outbound packet itself coming back in is not a reply (ports reversed).
            let same_direction = f.packet(true);
            assert_ne!(
                filter.check_inbound_with(&same_direction, &mut flows.clone()),
                Verdict::Accept
            );
        }
    }
}

/// The official client keys flows by 16-byte addresses, so an IPv4 flow is answered by an
/// IPv6 packet with the IPv4-mapped addresses too.
#[test]
fn ipv4_and_mapped_addresses_are_one_flow() {
    let filter = deny_all();
    let mut flows = FlowTable::new();
    assert!(filter.check_outbound(
        &flow(Fam::V4, Kind::Udp, 40000, 53).packet(true),
        &mut flows
    ));
    let mapped = flow(Fam::Mapped, Kind::Udp, 40000, 53).packet(false);
    assert_eq!(
        filter.check_inbound_with(&mapped, &mut flows),
        Verdict::Accept
    );
}

#[test]
fn tcp_icmp_and_others_neither_record_nor_use_the_cache() {
    let filter = deny_all();
    let mut flows = FlowTable::new();
    for kind in [Kind::TcpSyn, Kind::TcpAck, Kind::IcmpEcho] {
        let f = flow(Fam::V4, kind, 40000, 53);
        assert!(
            !filter.check_outbound(&f.packet(true), &mut flows),
            "{kind:?}"
        );
        assert_eq!(
            filter.check_inbound_with(&f.packet(false), &mut flows),
            filter.check_inbound(&f.packet(false)),
            "{kind:?}"
        );
    }
    assert!(flows.is_empty());
    // A SYN "answering" a recorded UDP flow's ports is still a SYN that needs a rule.
    assert!(filter.check_outbound(
        &flow(Fam::V4, Kind::Udp, 40000, 53).packet(true),
        &mut flows
    ));
    let syn = flow(Fam::V4, Kind::TcpSyn, 40000, 53).packet(false);
    assert_eq!(filter.check_inbound_with(&syn, &mut flows), NO_RULE);
    // Protocol 47 with ports-like bytes is not a flow either.
    let gre = support::ipv4(
        47,
        support::v4("100.64.0.2"),
        support::v4("100.64.0.1"),
        0,
        &[0; 8],
    );
    assert!(!filter.check_outbound(&gre, &mut flows));
}

#[test]
fn multicast_link_local_fragments_and_junk_record_nothing() {
    let filter = deny_all();
    let mut flows = FlowTable::new();
    let src = support::v4("100.64.0.2");
    let udp = support::udp(40000, 53);
    for (name, p) in [
        (
            "multicast",
            support::ipv4(17, src, support::v4("224.0.0.251"), 0, &udp),
        ),
        (
            "link-local",
            support::ipv4(17, src, support::v4("169.254.1.1"), 0, &udp),
        ),
        (
            "later fragment",
            support::ipv4(17, src, support::v4("100.64.0.1"), 100, &udp),
        ),
        (
            "truncated",
            support::ipv4(17, src, support::v4("100.64.0.1"), 0, &udp[..6]),
        ),
        ("empty", Vec::new()),
        ("short", vec![0x45; 12]),
    ] {
        assert!(!filter.check_outbound(&p, &mut flows), "{name}");
    }
    assert!(flows.is_empty());
    // The metadata address is not link-local for the filter: its flows are recorded (DNS).
    let gcp = support::ipv4(17, src, support::v4("169.254.169.254"), 0, &udp);
    assert!(filter.check_outbound(&gcp, &mut flows));
}

/// `n` distinct flows from 100.64.0.2 (local ports 10000..) to 100.64.0.1:53.
fn others(n: u16) -> impl Iterator<Item = Vec<u8>> {
    (0..n).map(|i| flow(Fam::V4, Kind::Udp, 10000 + i, 53).packet(true))
}

#[test]
fn a_flow_is_evicted_by_512_newer_flows() {
    assert_eq!(FLOW_TABLE_CAPACITY, 512);
    let filter = deny_all();
    let f = flow(Fam::V6, Kind::Udp, 40000, 53);
    let run = |newer: u16| {
        let mut flows = FlowTable::new();
        filter.check_outbound(&f.packet(true), &mut flows);
        for p in others(newer) {
            assert!(filter.check_outbound(&p, &mut flows));
        }
        assert_eq!(flows.len(), (usize::from(newer) + 1).min(512));
        filter.check_inbound_with(&f.packet(false), &mut flows)
    };
    assert_eq!(run(511), Verdict::Accept);
    assert_eq!(run(512), NO_RULE);

    // A reply refreshes its flow (as the official client's LRU lookup does), and so does
    // sending on it again.
    for refresh_by_reply in [true, false] {
        let mut flows = FlowTable::new();
        filter.check_outbound(&f.packet(true), &mut flows);
        let mut newer = others(1000);
        for p in newer.by_ref().take(511) {
            filter.check_outbound(&p, &mut flows);
        }
        if refresh_by_reply {
            assert_eq!(
                filter.check_inbound_with(&f.packet(false), &mut flows),
                Verdict::Accept
            );
        } else {
            filter.check_outbound(&f.packet(true), &mut flows);
        }
        for p in newer.by_ref().take(511) {
            filter.check_outbound(&p, &mut flows);
        }
        assert_eq!(
            filter.check_inbound_with(&f.packet(false), &mut flows),
            Verdict::Accept
        );
        // The flows recorded first have gone.
        let first_other = flow(Fam::V4, Kind::Udp, 10000, 53).packet(false);
        assert_eq!(filter.check_inbound_with(&first_other, &mut flows), NO_RULE);
    }
}

/// Runs `ops` through the matcher with a table of `capacity` and through the reference model;
/// returns how many inbound packets the cache accepted that need a rule otherwise.
fn agree(ops: &[(bool, Flow)], capacity: usize) -> Result<usize, TestCaseError> {
    let rules = support::table_rules();
    let local = local_with_mapped();
    let filter = Filter::new(&rules, local.iter().copied());
    let mut flows = FlowTable::with_capacity(capacity);
    let mut model = ReferenceFlows::new(capacity);
    let mut cached = 0;
    for (i, (outbound, f)) in ops.iter().enumerate() {
        let p = f.packet(*outbound);
        if *outbound {
            prop_assert_eq!(
                filter.check_outbound(&p, &mut flows),
                reference_outbound(&p, &mut model),
                "op {} {:?}",
                i,
                f
            );
        } else {
            let got = filter.check_inbound_with(&p, &mut flows);
            let want = reference_verdict_with(&rules, &local, &p, &mut model);
            prop_assert_eq!(got, want, "op {} {:?}", i, f);
            if got == Verdict::Accept && filter.check_inbound(&p) != Verdict::Accept {
                cached += 1;
            }
        }
        prop_assert_eq!(flows.len(), model.len());
    }
    Ok(cached)
}

proptest! {
    #![proptest_config(Config { cases: 2000, ..Config::default() })]

    /// Small tables, so that sequences evict often.
    #[test]
    fn small_tables_agree_with_the_reference_model(ops in ops(120), capacity in 1usize..12) {
        agree(&ops, capacity)?;
    }

    #[test]
    fn full_size_tables_agree_with_the_reference_model(ops in ops(300)) {
        agree(&ops, FLOW_TABLE_CAPACITY)?;
    }
}

/// The generated sequences are useful only if replies accepted by the cache are common.
#[test]
fn generated_sequences_exercise_cached_replies() {
    let mut runner = TestRunner::deterministic();
    let strategy = ops(120);
    let mut cached = 0;
    for _ in 0..200 {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        cached += agree(&ops, 8).unwrap();
    }
    eprintln!("{cached} replies accepted by the cache");
    assert!(cached >= 200, "only {cached} cached replies");
}
