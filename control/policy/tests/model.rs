//! Randomized check of the compiler against a naive evaluator of the policy text's meaning.
//!
//! Random policies over the fixture's aliases are compiled; every node's filter (built with
//! `weft_filter` as the data plane builds it) judges TCP SYN and UDP packets from every node
//! (and from the router's LAN) to every local address of every node, and the verdict must be
//! what the naive evaluator derives directly from the rules: "some rule whose protocol,
//! source alias, destination alias and ports all match". In particular a compiled filter
//! never accepts a source the policy does not name. Visibility is checked against the same
//! evaluator: A sees B exactly when some probe in either direction is allowed, families
//! aside (as Headscale compares address sets), and always when packets may flow.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::net::IpAddr;

use proptest::prelude::*;
use support::*;
use weft_policy::{Invalid, Node, NodeId, Policy, PolicyError};

const ALIASES: &[&str] = &[
    "*",
    "alice@example.com",
    "bob@example.com",
    "carol@example.org",
    "group:eng",
    "group:empty",
    "tag:server",
    "tag:db",
    "tag:router",
    "tag:exit",
    "autogroup:member",
    "autogroup:tagged",
    "100.64.0.3",
    "10.0.0.0/8",
    "corp",
    "dbhost",
    "fd7a:115c:a1e0::/48",
];
const DST_ONLY: &[&str] = &["autogroup:self", "autogroup:internet"];
const PORTS: &[&str] = &["*", "22", "80,443", "1000-2000"];
const PROTOS: &[Option<&str>] = &[None, Some("tcp"), Some("udp")];
const PROBE_PORTS: &[u16] = &[22, 80, 443, 999, 1000, 2000, 2001, 8080];

#[derive(Debug, Clone)]
struct RAcl {
    srcs: Vec<usize>,
    dsts: Vec<(usize, usize)>,
    proto: usize,
}

fn acls() -> impl Strategy<Value = Vec<RAcl>> {
    let acl = (
        prop::collection::vec(0..ALIASES.len(), 1..3),
        prop::collection::vec((0..ALIASES.len() + DST_ONLY.len(), 0..PORTS.len()), 1..3),
        0..PROTOS.len(),
    )
        .prop_map(|(srcs, dsts, proto)| RAcl { srcs, dsts, proto });
    prop::collection::vec(acl, 0..4)
}

fn alias_text(i: usize) -> &'static str {
    ALIASES
        .get(i)
        .copied()
        .unwrap_or_else(|| DST_ONLY[i - ALIASES.len()])
}

fn policy_text(acls: &[RAcl]) -> String {
    let rules: Vec<String> = acls
        .iter()
        .map(|a| {
            let srcs: Vec<String> = a
                .srcs
                .iter()
                .map(|&s| format!("{:?}", alias_text(s)))
                .collect();
            let dsts: Vec<String> = a
                .dsts
                .iter()
                .map(|&(d, p)| format!("\"{}:{}\"", alias_text(d), PORTS[p]))
                .collect();
            let proto = PROTOS[a.proto].map_or(String::new(), |p| format!(", \"proto\": {p:?}"));
            format!(
                r#"{{"action": "accept", "src": [{}], "dst": [{}]{proto}}}"#,
                srcs.join(", "),
                dsts.join(", ")
            )
        })
        .collect();
    policy_with(&format!("\"acls\": [\n{}\n]", rules.join(",\n")))
}

fn net_of(alias: &str) -> Option<weft_filter::IpNet> {
    let text = match alias {
        "corp" => "10.33.0.0/16",
        "dbhost" => "100.64.0.5",
        a if !a.contains('@') && (a.contains('.') || a.contains("::")) => a,
        _ => return None,
    };
    Some(net(text))
}

/// Whether node `n` is named by a node alias (independent of the crate's own matcher).
fn named(alias: &str, n: &Node) -> bool {
    let untagged = n.tags.is_empty();
    match alias {
        "*" => true,
        "group:eng" => untagged && (n.user == "alice@example.com" || n.user == "bob@example.com"),
        "group:empty" => false,
        "autogroup:member" => untagged,
        "autogroup:tagged" => !untagged,
        a if a.starts_with("tag:") => n.tags.iter().any(|t| t == a),
        a if a.contains('@') => untagged && n.user == a,
        _ => false,
    }
}

fn is_internet(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => {
            let o = v.octets();
            !(o[0] == 10
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 169 && o[1] == 254)
                || (o[0] == 172 && (16..32).contains(&o[1]))
                || (o[0] == 192 && o[1] == 168))
        }
        IpAddr::V6(v) => (v.segments()[0] & 0xe000) == 0x2000,
    }
}

/// The naive evaluator: may `s_addr` (of node `s`) open `proto`/`port` to `d_addr` on `d`?
#[allow(clippy::too_many_arguments)]
fn reference(
    acls: &[RAcl],
    nodes: &[Node],
    s: &Node,
    s_addr: IpAddr,
    d: &Node,
    d_addr: IpAddr,
    proto: u8,
    port: u16,
) -> bool {
    let in_ranges = |a: IpAddr| {
        net("100.64.0.0/10").contains(a) && !net("100.115.92.0/23").contains(a)
            || net("fd7a:115c:a1e0::/48").contains(a)
            || nodes.iter().any(|n| n.routes.iter().any(|r| r.contains(a)))
    };
    acls.iter().any(|a| {
        let proto_ok = match PROTOS[a.proto] {
            None => true,
            Some("tcp") => proto == TCP,
            Some(_) => proto == UDP,
        };
        let src_ok = |alias: &str| match net_of(alias) {
            Some(p) => p.contains(s_addr),
            None if alias == "*" => in_ranges(s_addr),
            None => named(alias, s) && s.addresses.contains(&s_addr),
        };
        let srcs_ok = a.srcs.iter().any(|&i| src_ok(alias_text(i)));
        // autogroup:self: the source node is named by a source alias, and same user.
        let self_ok = a.srcs.iter().any(|&i| named(alias_text(i), s))
            && s.tags.is_empty()
            && d.tags.is_empty()
            && s.user == d.user
            && s.addresses.contains(&s_addr);
        let dst_ok = |alias: &str| match (alias, net_of(alias)) {
            (_, Some(p)) => srcs_ok && p.contains(d_addr),
            ("*", _) => srcs_ok,
            ("autogroup:self", _) => self_ok && d.addresses.contains(&d_addr),
            ("autogroup:internet", _) => srcs_ok && d.exit_node && is_internet(d_addr),
            (a, _) => srcs_ok && named(a, d) && d.addresses.contains(&d_addr),
        };
        proto_ok
            && a.dsts.iter().any(|&(di, pi)| {
                let ports = weft_policy::alias::parse_ports(PORTS[pi]).unwrap();
                dst_ok(alias_text(di)) && ports.iter().any(|r| r.contains(port))
            })
    })
}

/// Source probes: every node address, plus a host on the router's LAN (as the router).
fn sources(nodes: &[Node]) -> Vec<(&Node, IpAddr)> {
    let mut v: Vec<(&Node, IpAddr)> = nodes
        .iter()
        .flat_map(|n| n.addresses.iter().map(move |a| (n, *a)))
        .collect();
    let router = nodes.iter().find(|n| n.id == ROUTER).unwrap();
    v.push((router, "10.33.1.1".parse().unwrap()));
    v
}

/// Destination probes of a node: its addresses, an address behind its routes, and the
/// internet (v4, v6) and a private address for exit nodes.
fn destinations(n: &Node) -> Vec<IpAddr> {
    let mut v = n.addresses.clone();
    if !n.routes.is_empty() {
        v.extend(["10.33.0.9", "fd00:33::9"].map(|s| s.parse::<IpAddr>().unwrap()));
    }
    if n.exit_node {
        v.extend(["8.8.8.8", "2001:db8::1", "192.168.1.1"].map(|s| s.parse::<IpAddr>().unwrap()));
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn compiled_filters_match_the_naive_evaluator(acls in acls()) {
        let text = policy_text(&acls);
        let policy = match Policy::parse(&text) {
            Ok(p) => p,
            // autogroup:self with a source it does not allow: the only refusal possible here.
            Err(PolicyError::Invalid { kind: Invalid::SelfWithSource, .. }) => return Ok(()),
            Err(e) => panic!("{e}\n{text}"),
        };
        let t = tailnet();
        let c = policy.compile(&t);
        let mut visible = std::collections::BTreeSet::new();
        for d in &t.nodes {
            let f = filter(&c, d.id);
            for d_addr in destinations(d) {
                for &(s, s_addr) in &sources(&t.nodes) {
                    if s.id == d.id || s_addr.is_ipv4() != d_addr.is_ipv4() {
                        continue;
                    }
                    for &proto in &[TCP, UDP] {
                        for &port in PROBE_PORTS {
                            let got = f.check_inbound(&packet(s_addr, d_addr, proto, port)) == weft_filter::Verdict::Accept;
                            let want = reference(&acls, &t.nodes, s, s_addr, d, d_addr, proto, port);
                            prop_assert_eq!(got, want, "{} -> {} {}/{} on {:?}\n{}", s_addr, d_addr, proto, port, d.id, text);
                            if got {
                                visible.insert((s.id.min(d.id), s.id.max(d.id)));
                            }
                        }
                    }
                }
            }
        }
        // Visibility follows Headscale's CanAccess, which compares address sets without
        // regard to family: the reference visibility is the naive evaluator over every
        // (source address, destination address) combination of the two nodes, in either
        // direction. Every pair that may actually exchange packets must be visible.
        let mut ref_visible = std::collections::BTreeSet::new();
        for d in &t.nodes {
            for d_addr in destinations(d) {
                for &(s, s_addr) in &sources(&t.nodes) {
                    if s.id == d.id {
                        continue;
                    }
                    let any = [TCP, UDP].iter().any(|&proto| PROBE_PORTS.iter().any(|&port| {
                        reference(&acls, &t.nodes, s, s_addr, d, d_addr, proto, port)
                    }));
                    if any {
                        ref_visible.insert((s.id.min(d.id), s.id.max(d.id)));
                    }
                }
            }
        }
        prop_assert!(visible.is_subset(&ref_visible));
        for a in &t.nodes {
            for b in &t.nodes {
                if a.id < b.id {
                    let want = ref_visible.contains(&(a.id, b.id));
                    prop_assert_eq!(c.can_see(a.id, b.id), want, "{:?} {:?}\n{}", a.id, b.id, text);
                    prop_assert_eq!(c.can_see(b.id, a.id), want);
                }
            }
        }
    }
}

#[test]
fn generator_reaches_both_verdicts() {
    // A fixed policy through the same machinery: allowed and denied probes both occur.
    let acls = vec![RAcl {
        srcs: vec![2],
        dsts: vec![(6, 1)],
        proto: 0,
    }];
    let t = tailnet();
    let s = &t.nodes[2];
    let d = &t.nodes[3];
    assert_eq!(s.id, BOB_LAPTOP);
    assert_eq!(d.id, SERVER);
    assert!(reference(
        &acls,
        &t.nodes,
        s,
        v4(s.id),
        d,
        v4(d.id),
        TCP,
        22
    ));
    assert!(!reference(
        &acls,
        &t.nodes,
        s,
        v4(s.id),
        d,
        v4(d.id),
        TCP,
        23
    ));
    let c = compile(&policy_text(&acls));
    assert!(accepts(&c, SERVER, v4(BOB_LAPTOP), v4(SERVER), TCP, 22));
    assert!(!accepts(&c, SERVER, v4(BOB_LAPTOP), v4(SERVER), TCP, 23));
    let _: NodeId = SERVER;
}
