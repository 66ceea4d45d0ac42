//! The reverse-flow cache on the kernel path against the userspace matcher: the tc egress
//! program (`weft_acl_out`) records an outbound UDP/SCTP flow in the LRU map and the ingress
//! program (`weft_acl`) then accepts its replies — the verdicts of `Filter::check_outbound` and
//! `Filter::check_inbound_with` with a `FlowTable`, drop reasons included. Packets go through
//! the loaded programs with `BPF_PROG_TEST_RUN` (L2 offset 0, the TUN case).
//!
//! Parity holds while fewer flows are live than the userspace table holds (512): the kernel's
//! LRU eviction is approximate, so sequences here stay well below that.
//!
//! Needs root (CAP_BPF) and a kernel with BTF; CI runs as root.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use support::ebpf::verdict_of;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};
use support::flows::{local_with_mapped, ops, Fam, Flow, Kind};
use weft_ebpf::common::tc_counter;
use weft_ebpf::TcFilter;
use weft_filter::{tc_tables, DropReason, Filter, FlowTable, Verdict};

/// The loaded programs with the table's rules and local nets (plus mapped addresses), and the
/// userspace matcher with the same.
struct Paths {
    tc: TcFilter,
    filter: Filter,
    flows: FlowTable,
}

impl Paths {
    fn new(with_rules: bool) -> Self {
        let rules = if with_rules {
            support::table_rules()
        } else {
            Vec::new()
        };
        let local = local_with_mapped();
        let mut tc = TcFilter::load(0).unwrap_or_else(|e| {
            panic!("loading the tc programs (needs root, CAP_BPF and BTF): {e}")
        });
        tc.install(&tc_tables(&rules, &local).unwrap()).unwrap();
        Self {
            tc,
            filter: Filter::new(&rules, local.iter().copied()),
            flows: FlowTable::new(),
        }
    }

    fn reset(&mut self) {
        self.tc.clear_flows().unwrap();
        self.flows.clear();
    }

    /// Sends `packet` out on both paths; returns whether userspace recorded a flow, after
    /// checking that the kernel map grew exactly when it did.
    fn outbound(&mut self, packet: &[u8]) -> bool {
        let before = self.tc.flow_count().unwrap();
        let recorded_before = self.flows.len();
        assert_eq!(self.tc.test_run_egress(packet).unwrap(), 0, "egress passes");
        let recorded = self.filter.check_outbound(packet, &mut self.flows);
        assert_eq!(
            self.tc.flow_count().unwrap() - before,
            self.flows.len() - recorded_before,
            "kernel and userspace flow counts moved differently on {packet:02x?}"
        );
        recorded
    }

    /// Both verdicts on an inbound packet: (userspace, kernel).
    fn inbound(&mut self, packet: &[u8]) -> (Verdict, Verdict) {
        let want = self.filter.check_inbound_with(packet, &mut self.flows);
        let before = self.tc.counters().unwrap();
        let ret = self.tc.test_run(packet).unwrap();
        let after = self.tc.counters().unwrap();
        let moved: Vec<u32> = (0..tc_counter::COUNT)
            .filter(|&i| after.get(i) != before.get(i))
            .collect();
        assert_eq!(moved.len(), 1, "counters {before:?} -> {after:?}");
        let got = verdict_of(moved[0]);
        assert_eq!(ret, if got == Verdict::Accept { 0 } else { 2 });
        (want, got)
    }
}

fn flow(fam: Fam, kind: Kind) -> Flow {
    Flow {
        fam,
        local: 0,
        remote: 0,
        local_port: 40000,
        remote_port: 53,
        kind,
    }
}

#[test]
fn replies_are_accepted_after_the_outbound_flow_on_both_paths() {
    let mut p = Paths::new(false);
    for fam in [Fam::V4, Fam::V6, Fam::Mapped] {
        for kind in [Kind::Udp, Kind::Sctp] {
            p.reset();
            let f = flow(fam, kind);
            let no_rule = Verdict::Drop(DropReason::NoRule);
            // Without the outbound packet: dropped on both.
            assert_eq!(p.inbound(&f.packet(false)), (no_rule, no_rule), "{f:?}");
            assert!(p.outbound(&f.packet(true)));
            assert_eq!(
                p.inbound(&f.packet(false)),
                (Verdict::Accept, Verdict::Accept),
                "{f:?}"
            );
            // One field off: dropped on both.
            for g in [
                Flow {
                    local_port: 40001,
                    ..f
                },
                Flow {
                    remote_port: 54,
                    ..f
                },
                Flow { remote: 1, ..f },
            ] {
                assert_eq!(p.inbound(&g.packet(false)), (no_rule, no_rule), "{g:?}");
            }
        }
    }
    // An IPv4 flow is answered by the IPv4-mapped form on both paths.
    p.reset();
    assert!(p.outbound(&flow(Fam::V4, Kind::Udp).packet(true)));
    assert_eq!(
        p.inbound(&flow(Fam::Mapped, Kind::Udp).packet(false)),
        (Verdict::Accept, Verdict::Accept)
    );
}

#[test]
fn tcp_and_icmp_record_nothing_in_the_kernel() {
    let mut p = Paths::new(false);
    p.reset();
    for kind in [Kind::TcpSyn, Kind::TcpAck, Kind::IcmpEcho] {
        for fam in [Fam::V4, Fam::V6] {
            assert!(!p.outbound(&flow(fam, kind).packet(true)));
            let (want, got) = p.inbound(&flow(fam, kind).packet(false));
            assert_eq!(got, want, "{fam:?} {kind:?}");
        }
    }
    assert_eq!(p.tc.flow_count().unwrap(), 0);
    // Multicast and later fragments record nothing either.
    let src = support::v4("100.64.0.2");
    let udp = support::udp(40000, 53);
    assert!(!p.outbound(&support::ipv4(17, src, support::v4("239.1.2.3"), 0, &udp)));
    assert!(!p.outbound(&support::ipv4(
        17,
        src,
        support::v4("100.64.0.1"),
        100,
        &udp
    )));
    assert_eq!(p.tc.flow_count().unwrap(), 0);
}

/// Generated sequences of outbound and inbound packets over a few endpoints (UDP, SCTP, TCP,
/// ICMP; IPv4, IPv6, IPv4-mapped) under the table's rules: the same verdict on every inbound
/// packet, and the flow maps grow together.
#[test]
fn generated_sequences_same_verdicts() {
    let mut p = Paths::new(true);
    let mut runner = TestRunner::new(Config::default());
    let strategy = ops(80);
    let (mut cached, mut drops, mut inbound) = (0, 0, 0);
    for case in 0..300 {
        p.reset();
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        for (i, (outbound, f)) in ops.iter().enumerate() {
            let packet = f.packet(*outbound);
            if *outbound {
                p.outbound(&packet);
                continue;
            }
            let (want, got) = p.inbound(&packet);
            assert_eq!(got, want, "case {case}, op {i}: {f:?}");
            inbound += 1;
            match want {
                Verdict::Accept if p.filter.check_inbound(&packet) != Verdict::Accept => {
                    cached += 1;
                }
                Verdict::Drop(_) => drops += 1,
                Verdict::Accept => {}
            }
        }
    }
    eprintln!("{inbound} inbound packets: {cached} accepted as replies, {drops} dropped");
    assert!(cached >= 300, "only {cached} replies accepted by the cache");
    assert!(drops >= 300, "only {drops} drops");
}
