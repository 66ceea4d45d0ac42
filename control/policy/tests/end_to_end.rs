//! End to end: a policy compiled for the fixture tailnet, each node's filter built with
//! `weft_filter` exactly as the data plane builds it, and crafted IPv4/IPv6 packets (TCP SYN,
//! UDP, ICMP) checked for their verdicts. Also the example policy file and the default
//! policy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::net::IpAddr;

use support::*;
use weft_policy::{affected_by, CompiledPolicy, NodeId, Policy, PolicyError, DEFAULT_POLICY};

const EXAMPLE: &str = include_str!("../../../configs/policy.hujson");

fn example() -> CompiledPolicy {
    compile(EXAMPLE)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn example_policy_parses_and_its_tests_pass() {
    let p = Policy::parse(EXAMPLE).unwrap();
    assert!(p.ignored_sections().is_empty());
    assert_eq!(p.tests().len(), 5);
    p.compile(&tailnet()).run_tests().unwrap();
    let loaded = Policy::load(EXAMPLE, &tailnet()).unwrap();
    assert_eq!(loaded.filter_for(SERVER), example().filter_for(SERVER));
}

#[test]
fn example_policy_packets_between_nodes() {
    let c = example();
    for (fam, addr) in [("v4", v4 as fn(NodeId) -> IpAddr), ("v6", v6)] {
        let ok = |to, from, proto, port| accepts(&c, to, addr(from), addr(to), proto, port);
        // Engineers reach the servers on 22, 80, 443 and nothing else.
        assert!(ok(SERVER, BOB_LAPTOP, TCP, 22), "{fam}");
        assert!(ok(SERVER, BOB_LAPTOP, TCP, 443), "{fam}");
        assert!(!ok(SERVER, BOB_LAPTOP, TCP, 8080), "{fam}");
        assert!(!ok(SERVER, CAROL, TCP, 22), "{fam}");
        // DNS over UDP only.
        assert!(ok(SERVER, CAROL, UDP, 53), "{fam}");
        assert!(!ok(SERVER, CAROL, TCP, 53), "{fam}");
        // Databases only from the servers.
        assert!(ok(DB, SERVER, TCP, 5432), "{fam}");
        assert!(!ok(DB, SERVER, TCP, 22), "{fam}");
        assert!(!ok(DB, BOB_LAPTOP, TCP, 5432), "{fam}");
        assert!(!ok(DB, ALICE_LAPTOP, TCP, 5432), "{fam}");
        // Own devices: alice's phone reaches her laptop on any port; bob does not.
        assert!(ok(ALICE_LAPTOP, ALICE_PHONE, TCP, 3389), "{fam}");
        assert!(ok(ALICE_LAPTOP, ALICE_PHONE, UDP, 9), "{fam}");
        assert!(!ok(ALICE_LAPTOP, BOB_LAPTOP, TCP, 3389), "{fam}");
        // ICMP follows "any port open": alice's phone may ping her laptop, bob may ping a
        // server (22 is open to him), carol may too (UDP 53), nobody pings the database but
        // the servers.
        assert!(ok(
            ALICE_LAPTOP,
            ALICE_PHONE,
            if fam == "v4" { 1 } else { 58 },
            0
        ));
        assert!(ok(DB, SERVER, if fam == "v4" { 1 } else { 58 }, 0));
        assert!(!ok(DB, CAROL, if fam == "v4" { 1 } else { 58 }, 0));
    }
}

#[test]
fn example_policy_subnet_and_exit_traffic() {
    let c = example();
    let office = ip("10.33.0.5");
    let printer = ip("10.33.0.20");
    // Admins reach the office LAN through the router; bob only the printer ports.
    assert!(accepts(&c, ROUTER, v4(ALICE_LAPTOP), office, TCP, 22));
    assert!(!accepts(&c, ROUTER, v4(BOB_LAPTOP), office, TCP, 22));
    assert!(accepts(&c, ROUTER, v4(BOB_LAPTOP), printer, TCP, 631));
    assert!(!accepts(&c, ROUTER, v4(BOB_LAPTOP), printer, TCP, 22));
    // Nobody else accepts office traffic (not a local net there).
    assert!(!accepts(&c, SERVER, v4(ALICE_LAPTOP), office, TCP, 22));
    // Members use the exit node for the internet, v4 and v6; tagged nodes do not.
    for dst in [ip("8.8.8.8"), ip("2001:4860:4860::8888")] {
        let src = |id| if dst.is_ipv4() { v4(id) } else { v6(id) };
        assert!(accepts(&c, EXIT, src(CAROL), dst, TCP, 443), "{dst}");
        assert!(accepts(&c, EXIT, src(BOB_LAPTOP), dst, UDP, 443), "{dst}");
        assert!(!accepts(&c, EXIT, src(SERVER), dst, TCP, 443), "{dst}");
    }
    // Private ranges are not "the internet".
    assert!(!accepts(&c, EXIT, v4(CAROL), ip("192.168.1.1"), TCP, 443));
    assert!(!accepts(&c, EXIT, v4(CAROL), ip("10.1.2.3"), TCP, 443));
    // The exit node's own address is not open to members.
    assert!(!accepts(&c, EXIT, v4(CAROL), v4(EXIT), TCP, 22));
}

#[test]
fn example_policy_visibility() {
    let c = example();
    let peers = |id| c.peers_of(id).into_iter().collect::<Vec<_>>();
    // bob: the servers (eng, DNS), the router (printer), the exit node (internet).
    assert_eq!(peers(BOB_LAPTOP), [SERVER, ROUTER, EXIT]);
    // alice also has her phone.
    assert_eq!(peers(ALICE_LAPTOP), [ALICE_PHONE, SERVER, ROUTER, EXIT]);
    // The database sees only the servers; the servers see the database and the members.
    assert_eq!(peers(DB), [SERVER]);
    assert_eq!(
        peers(SERVER),
        [ALICE_LAPTOP, ALICE_PHONE, BOB_LAPTOP, DB, CAROL]
    );
    // Visibility is symmetric.
    for a in tailnet().nodes.iter().map(|n| n.id) {
        for b in c.peers_of(a) {
            assert!(c.can_see(b, a), "{a:?} sees {b:?} but not the reverse");
        }
    }
}

#[test]
fn failing_test_refuses_the_policy_and_names_it() {
    let broken = EXAMPLE.replace(
        r#"{"src": "tag:server", "accept": ["tag:db:5432"], "deny": ["tag:db:22"]},"#,
        r#"{"src": "tag:server", "accept": ["tag:db:22"]},"#,
    );
    assert_ne!(broken, EXAMPLE);
    assert!(matches!(
        Policy::load(&broken, &tailnet()),
        Err(PolicyError::TestFailed { index: 1, .. })
    ));
    let p = Policy::parse(&broken).unwrap();
    match p.compile(&tailnet()).run_tests() {
        Err(PolicyError::TestFailed {
            index,
            src,
            at,
            failures,
        }) => {
            assert_eq!((index, src.as_str()), (1, "tag:server"));
            let line = 1 + EXAMPLE
                .lines()
                .position(|l| l.contains(r#"{"src": "tag:server""#))
                .unwrap();
            assert_eq!((at.line, at.column), (line, 3));
            assert_eq!(failures.len(), 1, "{failures:?}");
            assert!(failures[0].contains("expected accepted"), "{failures:?}");
        }
        other => panic!("{other:?}"),
    }
    // A source naming no device fails too.
    let p = Policy::parse(&policy_with(
        r#""acls": [], "tests": [{"src": "nobody@example.com", "deny": ["tag:db:22"]}]"#,
    ))
    .unwrap();
    assert!(matches!(
        p.compile(&tailnet()).run_tests(),
        Err(PolicyError::TestFailed { .. })
    ));
}

#[test]
fn default_policy_allows_everything_inside_the_tailnet() {
    assert!(DEFAULT_POLICY.contains("//"));
    let c = compile(DEFAULT_POLICY);
    let all: Vec<NodeId> = tailnet().nodes.iter().map(|n| n.id).collect();
    for &a in &all {
        assert_eq!(c.peers_of(a).len(), all.len() - 1);
        for &b in &all {
            if a != b {
                assert!(accepts(&c, b, v4(a), v4(b), TCP, 12345));
                assert!(accepts(&c, b, v6(a), v6(b), UDP, 53));
            }
        }
    }
    // From outside the tailnet ranges nothing gets in, but the office LAN behind the router
    // is a source too (Tailscale's `*`).
    assert!(!accepts(&c, SERVER, ip("1.2.3.4"), v4(SERVER), TCP, 22));
    assert!(accepts(&c, SERVER, ip("10.33.1.1"), v4(SERVER), TCP, 22));
}

#[test]
fn changes_affect_only_the_peers_of_the_changed_node() {
    let p = Policy::parse(EXAMPLE).unwrap();
    let before = p.compile(&tailnet());
    // The database gets a new address.
    let mut t = tailnet();
    for n in &mut t.nodes {
        if n.id == DB {
            n.addresses = vec![ip("100.64.1.5"), ip("fd7a:115c:a1e0::1:5")];
        }
    }
    let after = p.compile(&t);
    let affected = affected_by(&before, &after, DB);
    assert_eq!(affected.iter().copied().collect::<Vec<_>>(), [SERVER, DB]);
    for n in t.nodes.iter().map(|n| n.id) {
        if !affected.contains(&n) {
            assert_eq!(before.filter_for(n), after.filter_for(n), "{n:?}");
            assert_eq!(before.peers_of(n), after.peers_of(n), "{n:?}");
        }
    }
    assert_ne!(before.filter_for(DB), after.filter_for(DB));
}
