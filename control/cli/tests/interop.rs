//! Interop tests between third-party WireGuard implementations, run in network
//! namespaces. They validate the harness (weft-testkit) itself: the same
//! scenarios run against weft-wg in `interop_weft.rs`.
//!
//! Needs root, `ip`, `wg`, `wg-quick`, `socat`, `ping`, wireguard-go and
//! boringtun-cli. Tests are named `netns_*` and run one at a time (nextest
//! group `netns`, and the testkit's serial lock under `cargo test`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use common::{basic, counters, roaming, wg_quick_case, Roam};
use weft_testkit::{serial, socket_path, Family, Initiator, PairBuilder, WgImpl, WIREGUARD_GO};

#[test]
fn netns_go_boringtun_outer_v4_a_initiates() {
    basic(
        WgImpl::WireguardGo,
        WgImpl::Boringtun,
        Family::V4,
        Initiator::A,
    )
    .unwrap();
}

#[test]
fn netns_go_boringtun_outer_v4_b_initiates() {
    basic(
        WgImpl::WireguardGo,
        WgImpl::Boringtun,
        Family::V4,
        Initiator::B,
    )
    .unwrap();
}

#[test]
fn netns_go_boringtun_outer_v6_a_initiates() {
    basic(
        WgImpl::WireguardGo,
        WgImpl::Boringtun,
        Family::V6,
        Initiator::A,
    )
    .unwrap();
}

#[test]
fn netns_go_boringtun_outer_v6_b_initiates() {
    basic(
        WgImpl::WireguardGo,
        WgImpl::Boringtun,
        Family::V6,
        Initiator::B,
    )
    .unwrap();
}

#[test]
fn netns_go_roams_address_boringtun_follows_v6() {
    roaming(
        WgImpl::WireguardGo,
        WgImpl::Boringtun,
        Family::V6,
        Roam::Address,
    )
    .unwrap();
}

#[test]
fn netns_boringtun_roams_port_go_follows() {
    roaming(
        WgImpl::Boringtun,
        WgImpl::WireguardGo,
        Family::V4,
        Roam::ListenPort,
    )
    .unwrap();
}

#[test]
fn netns_go_go_byte_counters() {
    counters(WgImpl::WireguardGo, WgImpl::WireguardGo, Family::V4).unwrap();
}

#[test]
fn netns_wg_quick_wireguard_go_with_boringtun_peer() {
    wg_quick_case(Path::new(WIREGUARD_GO), WgImpl::Boringtun).unwrap();
}

/// The guards must remove namespaces, daemons and UAPI sockets when a test
/// panics halfway.
#[test]
fn netns_guards_clean_up_after_a_panic() {
    let _serial = serial();
    let mut seen = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let pair = PairBuilder::new(WgImpl::WireguardGo, WgImpl::Boringtun)
            .build()
            .unwrap();
        seen = Some((
            pair.a.ns.name().to_owned(),
            pair.b.ns.name().to_owned(),
            pair.a.ifname.clone(),
            pair.b.ifname.clone(),
            pair.a.daemon.pid(),
            pair.b.daemon.pid(),
        ));
        panic!("deliberate panic with a live pair");
    }));
    assert!(result.is_err(), "the closure should have panicked");
    let (ns_a, ns_b, if_a, if_b, pid_a, pid_b) = seen.expect("pair was built");
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for ns in [&ns_a, &ns_b] {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns.as_str())),
            "namespace {ns} survived: {list}"
        );
    }
    for ifname in [&if_a, &if_b] {
        assert!(!socket_path(ifname).exists(), "socket of {ifname} survived");
    }
    for pid in [pid_a, pid_b] {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "daemon pid {pid} survived"
        );
    }
}
