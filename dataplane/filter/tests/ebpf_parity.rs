//! The tc program (`weft-ebpf`, built from `ebpf/progs/acl_tc.c`) against the userspace
//! matcher: the same verdict, drop reason included, on the crafted table and on generated rule
//! sets and packets. Packets go through the loaded program with `BPF_PROG_TEST_RUN`; the drop
//! reason is read from the program's per-CPU counters (the one counter that moved).
//!
//! Needs root (CAP_BPF) and a kernel with BTF; CI runs as root. No bpffs: nothing is pinned.
//! Both layer-2 offsets are tested: 0 (the TUN case; the kernel's test run needs more than 14
//! bytes, so packets that short are covered by the offset-14 run only) and 14, with an Ethernet
//! header prepended.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use support::ebpf::verdict_of;

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};
use support::strategies::{build, case, plan};
use weft_ebpf::common::tc_counter;
use weft_ebpf::TcFilter;
use weft_filter::fuzzing::{fuzz_local, fuzz_rule_sets};
use weft_filter::{compile, tc_tables, DropReason, Filter, IpNet, Rule, Verdict};

/// A loaded program with one L2 offset.
struct Prog {
    tc: TcFilter,
    l2: usize,
}

impl Prog {
    fn load(l2: usize) -> Self {
        let tc = TcFilter::load(l2 as u32).unwrap_or_else(|e| {
            panic!("loading the tc program (needs root, CAP_BPF and BTF): {e}")
        });
        Self { tc, l2 }
    }

    fn install(&mut self, rules: &[Rule], local: &[IpNet]) {
        self.tc.install(&tc_tables(rules, local).unwrap()).unwrap();
    }

    /// The program's verdict on `packet`, or `None` if the test run cannot carry it (the
    /// kernel wants more than an Ethernet header's 14 bytes: the empty packet, and with an L2
    /// offset of 0 packets of 14 bytes or fewer or, rarely, a packet whose bytes 12-13 read as
    /// an IP Ethernet type).
    fn verdict(&self, packet: &[u8]) -> Option<Verdict> {
        let mut frame = Vec::with_capacity(self.l2 + packet.len());
        if self.l2 > 0 {
            let ethertype: [u8; 2] = match packet.first().map(|b| b >> 4) {
                Some(6) if packet.len() >= 40 => [0x86, 0xdd],
                Some(4) if packet.len() >= 20 => [0x08, 0x00],
                _ => [0x88, 0xb5], // the kernel's test run refuses a short IP header
            };
            frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
            frame.extend_from_slice(&ethertype);
            frame.resize(self.l2, 0);
        }
        frame.extend_from_slice(packet);
        if frame.len() <= 14 {
            return None;
        }
        // The kernel's test run also refuses a frame whose Ethernet type (bytes 12-13, the
        // packet's own bytes when the L2 offset is 0) announces an IP header that is not there.
        let need = match frame[12..14] {
            [0x08, 0x00] => 14 + 20,
            [0x86, 0xdd] => 14 + 40,
            _ => 0,
        };
        if frame.len() < need {
            return None;
        }
        let before = self.tc.counters().unwrap();
        let ret = self
            .tc
            .test_run(&frame)
            .unwrap_or_else(|e| panic!("{e}: frame {frame:02x?}"));
        let after = self.tc.counters().unwrap();
        let moved: Vec<u32> = (0..tc_counter::COUNT)
            .filter(|&i| after.get(i) != before.get(i))
            .collect();
        assert_eq!(moved.len(), 1, "counters {before:?} -> {after:?}");
        let v = verdict_of(moved[0]);
        // TC_ACT_OK is 0, TC_ACT_SHOT is 2.
        assert_eq!(ret, if v == Verdict::Accept { 0 } else { 2 }, "{v:?}");
        Some(v)
    }
}

fn table_parity(l2: usize, rules: &[Rule]) -> usize {
    let local = support::table_local();
    let filter = Filter::new(rules, local.iter().copied());
    let mut prog = Prog::load(l2);
    prog.install(rules, &local);
    let mut failures = Vec::new();
    let mut run = 0;
    for (name, packet, _) in support::table() {
        let want = filter.check_inbound(&packet);
        if let Some(got) = prog.verdict(&packet) {
            run += 1;
            if got != want {
                failures.push(format!("{name}: matcher {want:?}, tc program {got:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "l2 offset {l2}:\n{}",
        failures.join("\n")
    );
    run
}

#[test]
fn crafted_table_same_verdicts_l2_offset_0() {
    let run = table_parity(0, &support::table_rules());
    let testable = support::table()
        .iter()
        .filter(|(_, p, _)| p.len() > 14)
        .count();
    assert_eq!(run, testable);
    assert!(testable + 4 >= support::table().len());
}

#[test]
fn crafted_table_same_verdicts_l2_offset_14() {
    let run = table_parity(14, &support::table_rules());
    let non_empty = support::table()
        .iter()
        .filter(|(_, p, _)| !p.is_empty())
        .count();
    assert_eq!(run, non_empty);
}

#[test]
fn crafted_table_same_verdicts_without_rules() {
    table_parity(0, &[]);
}

/// Generated rule sets and packets biased toward the rules' prefixes and port edges (the
/// generator of the reference-model test). Each case loads its rules as a new generation of
/// the same program, so this also exercises many generation switches.
#[test]
fn generated_cases_same_verdicts() {
    // Each install waits for an RCU grace period (about 12 ms here), so every generated rule
    // set judges several packets planned against it: 400 rule sets, 4000 packets.
    const RULE_SETS: usize = 400;
    const PACKETS_PER_SET: usize = 10;
    let mut prog = Prog::load(0);
    let mut runner = TestRunner::new(Config {
        cases: 4000,
        ..Config::default()
    });
    let strategy = case();
    let more_plans = plan();
    let (mut accepts, mut drops, mut rule_accepts) = (0, 0, 0);
    for _ in 0..RULE_SETS {
        let (rules, local, first) = strategy.new_tree(&mut runner).unwrap().current();
        let filter = Filter::new(&rules, local.iter().copied());
        let deny = Filter::deny_all(local.iter().copied());
        prog.install(&rules, &local);
        let mut plans = vec![first];
        for _ in 1..PACKETS_PER_SET {
            plans.push(more_plans.new_tree(&mut runner).unwrap().current());
        }
        for plan in &plans {
            let packet = build(plan, &rules, &local);
            let want = filter.check_inbound(&packet);
            let Some(got) = prog.verdict(&packet) else {
                continue;
            };
            assert_eq!(
                got, want,
                "rules {rules:?}\nlocal {local:?}\npacket {packet:02x?}"
            );
            match want {
                Verdict::Accept => {
                    accepts += 1;
                    if deny.check_inbound(&packet) == Verdict::Drop(DropReason::NoRule) {
                        rule_accepts += 1;
                    }
                }
                Verdict::Drop(_) => drops += 1,
            }
        }
    }
    eprintln!("{accepts} accepts ({rule_accepts} given by a rule), {drops} drops");
    assert!(
        rule_accepts >= 300,
        "only {rule_accepts} rule-given accepts"
    );
    assert!(drops >= 800, "only {drops} drops");
}

/// A generation switch is one write: the old rules apply until it, the new ones right after,
/// and the generation alternates.
#[test]
fn install_switches_generation() {
    let local = support::table_local();
    let rules = support::table_rules();
    let mut prog = Prog::load(0);
    let allowed: Vec<Vec<u8>> = support::table()
        .into_iter()
        .map(|(_, p, _)| p)
        .filter(|p| {
            p.len() > 14
                && Filter::new(&rules, local.iter().copied()).check_inbound(p) == Verdict::Accept
                && Filter::deny_all(local.iter().copied()).check_inbound(p)
                    == Verdict::Drop(DropReason::NoRule)
        })
        .collect();
    assert!(!allowed.is_empty());
    for round in 0..6 {
        let with_rules = round % 2 == 0;
        let gen_before = prog.tc.active_generation();
        prog.install(if with_rules { &rules } else { &[] }, &local);
        assert_ne!(prog.tc.active_generation(), gen_before);
        for p in &allowed {
            let want = if with_rules {
                Verdict::Accept
            } else {
                Verdict::Drop(DropReason::NoRule)
            };
            assert_eq!(prog.verdict(p), Some(want), "round {round}");
        }
    }
}

/// The committed corpus of the `filter_inbound` fuzz target (crafted packets and the inputs
/// the fuzzer kept) under the fuzz target's three rule sets: mixed, allow-all, deny-all.
#[test]
fn fuzz_corpus_same_verdicts() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/filter_inbound");
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 50, "corpus of {} inputs", inputs.len());
    let local = fuzz_local();
    let mut failures = Vec::new();
    let mut run = 0;
    for (set, wire) in fuzz_rule_sets().iter().enumerate() {
        let rules = compile(wire).unwrap().rules;
        let filter = Filter::new(&rules, local.iter().copied());
        for l2 in [0, 14] {
            let mut prog = Prog::load(l2);
            prog.install(&rules, &local);
            for (name, packet) in &inputs {
                let want = filter.check_inbound(packet);
                if let Some(got) = prog.verdict(packet) {
                    run += 1;
                    if got != want {
                        failures.push(format!(
                            "set {set}, l2 {l2}, {name}: matcher {want:?}, tc program {got:?}"
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(run >= inputs.len() * 5, "only {run} runs");
}

/// One program for the property tests below (loading per case would be slow).
fn table_prog() -> &'static std::sync::Mutex<Prog> {
    static PROG: std::sync::OnceLock<std::sync::Mutex<Prog>> = std::sync::OnceLock::new();
    PROG.get_or_init(|| {
        let mut prog = Prog::load(0);
        prog.install(&support::table_rules(), &support::table_local());
        std::sync::Mutex::new(prog)
    })
}

/// The matcher's and the program's verdicts under the table's rules (the program's is the
/// matcher's where the test run cannot carry the packet, which `Prog::verdict` makes rare).
fn table_verdicts(packet: &[u8]) -> (Verdict, Verdict) {
    let filter = Filter::new(&support::table_rules(), support::table_local());
    let want = filter.check_inbound(packet);
    let got = table_prog().lock().unwrap().verdict(packet);
    (want, got.unwrap_or(want))
}

proptest! {
    #![proptest_config(Config { cases: 1000, ..Config::default() })]

    /// Arbitrary bytes, a third of them starting like IPv4 or IPv6.
    #[test]
    fn arbitrary_bytes_same_verdicts(
        mut bytes in prop::collection::vec(any::<u8>(), 15..120),
        version in 0u8..3,
    ) {
        match version {
            0 => bytes[0] = 0x45,
            1 => bytes[0] = 0x60,
            _ => {}
        }
        let (want, got) = table_verdicts(&bytes);
        prop_assert_eq!(got, want, "packet {:02x?}", bytes);
    }

    /// Packets of the crafted table with a byte changed, cut short or extended.
    #[test]
    fn mutated_table_packets_same_verdicts(
        index in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in any::<prop::sample::Index>(),
        how in 0u8..4,
    ) {
        let table = support::table();
        let (_, mut packet, _) = table[index.index(table.len())].clone();
        if packet.is_empty() {
            packet.push(value);
        }
        let i = at.index(packet.len());
        match how {
            0 => packet[i] = value,
            1 => packet[i] ^= 1 << (value % 8),
            2 => packet.truncate(cut.index(packet.len() + 1)),
            _ => packet.extend_from_slice(&[value; 9]),
        }
        if packet.len() > 14 {
            let (want, got) = table_verdicts(&packet);
            prop_assert_eq!(got, want, "packet {:02x?}", packet);
        }
    }
}

/// Rule swaps while packets are judged: one thread test-runs an allowed and a denied packet
/// without pause while this one installs the table's rules again and again, alternately in
/// their order and reversed (so every slot number changes). A packet checked against a mix
/// of two generations would be misjudged; none may be.
#[test]
fn rule_swaps_under_traffic_misjudge_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let local = support::table_local();
    let rules = support::table_rules();
    let reversed: Vec<Rule> = rules.iter().rev().cloned().collect();
    let filter = Filter::new(&rules, local.iter().copied());
    let deny = Filter::deny_all(local.iter().copied());
    let pick = |want: Verdict| {
        support::table()
            .into_iter()
            .map(|(_, p, _)| p)
            .find(|p| {
                p.len() >= 60
                    && filter.check_inbound(p) == want
                    && deny.check_inbound(p) == Verdict::Drop(DropReason::NoRule)
            })
            .unwrap()
    };
    let allowed = pick(Verdict::Accept);
    let denied = pick(Verdict::Drop(DropReason::NoRule));
    assert_eq!(
        Filter::new(&reversed, local.iter().copied()).check_inbound(&allowed),
        Verdict::Accept
    );

    let mut prog = Prog::load(0);
    prog.install(&rules, &local);
    let runner = prog.tc.test_runner().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicUsize::new(0));
    // Rounds of the judging thread between which at least one swap landed.
    let interleaved = Arc::new(AtomicUsize::new(0));
    let judge = {
        let (stop, swaps, interleaved) = (
            Arc::clone(&stop),
            Arc::clone(&swaps),
            Arc::clone(&interleaved),
        );
        std::thread::spawn(move || {
            let (mut runs, mut wrong, mut last) = (0u64, 0u64, 0);
            while !stop.load(Ordering::Relaxed) {
                wrong += u64::from(runner.run(&allowed).unwrap() != 0);
                wrong += u64::from(runner.run(&denied).unwrap() != 2);
                runs += 2;
                let now = swaps.load(Ordering::Relaxed);
                if now != last {
                    interleaved.fetch_add(1, Ordering::Relaxed);
                }
                last = now;
            }
            (runs, wrong)
        })
    };
    // Swap until 200 swaps have landed between judged rounds (a busy machine schedules the
    // judging thread less often), at most 50 000 times.
    let tables = [
        tc_tables(&reversed, &local).unwrap(),
        tc_tables(&rules, &local).unwrap(),
    ];
    let mut i = 0;
    while interleaved.load(Ordering::Relaxed) < 200 && i < 50_000 {
        prog.tc.install(&tables[i % 2]).unwrap();
        swaps.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let (runs, wrong) = judge.join().unwrap();
    let interleaved = interleaved.load(Ordering::Relaxed);
    eprintln!("{runs} packets judged across {i} swaps ({interleaved} landed between rounds)");
    assert_eq!(wrong, 0, "{wrong} of {runs} packets misjudged");
    assert!(
        interleaved >= 200,
        "{runs} runs, {i} swaps, {interleaved} interleaved"
    );
}
