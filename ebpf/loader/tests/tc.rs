//! The tc program's loader: a rule set over the limits is refused before anything is written
//! and the live generation keeps judging; counters and test runs. (Verdict parity with the
//! userspace matcher is tested in weft-filter's tests/ebpf_parity.rs.) Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use weft_ebpf::common::{tc_counter, Slot, SlotBits, FAMILY_V4, SLOTS};
use weft_ebpf::{Error, Prefix, TcFilter, TcTables};

fn v4(a: [u8; 4], len: u8) -> Prefix {
    let mut addr = [0; 16];
    addr[..4].copy_from_slice(&a);
    Prefix {
        family: FAMILY_V4,
        addr,
        len,
    }
}

/// A UDP packet from 10.0.0.1 to 100.64.0.1 port 53.
fn packet() -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 100, 64, 0, 1,
    ];
    p.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 8, 0, 0]);
    p
}

/// Allows UDP to 100.64.0.1:53 from 10.0.0.0/8.
fn allow_dns() -> TcTables {
    let mut bits = SlotBits::default();
    bits.set(0);
    let mut slot = Slot {
        port_first: 53,
        port_last: 53,
        ..Slot::default()
    };
    slot.protos[0] = 1 << 17;
    TcTables {
        src: vec![(v4([10, 0, 0, 0], 8), bits)],
        dst: vec![(v4([100, 64, 0, 1], 32), bits)],
        local: vec![v4([100, 64, 0, 0], 10)],
        slots: vec![slot],
    }
}

#[test]
fn oversized_rule_set_is_refused_and_the_live_one_stays() {
    let mut tc = TcFilter::load(0).unwrap();
    tc.install(&allow_dns()).unwrap();
    let gen = tc.active_generation();
    assert_eq!(tc.test_run(&packet()).unwrap(), 0);

    let mut big = allow_dns();
    big.slots = vec![Slot::default(); SLOTS + 1];
    assert!(matches!(tc.install(&big), Err(Error::TooLarge(_))));
    assert_eq!(tc.active_generation(), gen);
    assert_eq!(
        tc.test_run(&packet()).unwrap(),
        0,
        "the live rules still allow"
    );

    tc.install(&TcTables {
        local: allow_dns().local,
        ..TcTables::default()
    })
    .unwrap();
    assert_eq!(tc.test_run(&packet()).unwrap(), 2, "no rules: dropped");
    let c = tc.counters().unwrap();
    assert_eq!(c.passed(), 2);
    assert_eq!(c.dropped(), 1);
    assert_eq!(c.get(tc_counter::DROP_NO_RULE), 1);
}

#[test]
fn test_run_refuses_frames_the_kernel_would() {
    let tc = TcFilter::load(0).unwrap();
    assert!(matches!(
        tc.test_run(&[0; 14]),
        Err(Error::TestPacketSize(14))
    ));
    assert!(matches!(
        tc.test_run(&[0; 4000]),
        Err(Error::TestPacketSize(4000))
    ));
}

/// The kernel times repeated runs; the counters move by the repeat count.
#[test]
fn timed_runs_count_every_run() {
    let mut tc = TcFilter::load(0).unwrap();
    tc.install(&allow_dns()).unwrap();
    let ns = tc.time_per_run(&packet(), 10_000).unwrap();
    eprintln!("tc program: {ns} ns per allowed UDP packet (BPF_PROG_TEST_RUN mean)");
    assert!(ns < 1_000_000, "{ns} ns per run");
    assert_eq!(tc.counters().unwrap().passed(), 10_000);
}
