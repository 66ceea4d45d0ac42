//! The compiler against filters captured from Tailscale SaaS.
//!
//! `vectors/tailscale_saas.jsonl` holds one case per line: a policy as it was POSTed to
//! Tailscale's API, the tailnet it was applied to (users, tags, addresses, approved routes;
//! an exit node has both default routes approved), and each node's `PacketFilter` as the
//! official client received it, or the refusal message when the API refused the policy. The
//! cases are a quarter of the accepted captures and all the refused ones of Headscale's
//! compatibility test data (`hscontrol/policy/v2/testdata/{acl_results,routes_results,
//! issue_3212}` at juanfont/headscale f20f1f12, BSD-3-Clause), converted to this compact
//! form: the facts are Tailscale's, not Headscale's code. All 342 captures were checked when
//! the file was made, filters and peer lists.
//!
//! `vectors/tailscale_saas_tests.jsonl` holds policies with a `tests` section and whether
//! Tailscale accepted them (Headscale's `policytest_results`, the cases without `grants`,
//! which weft does not implement).
//!
//! Filters are compared as sets of (sources, protocols, destination, ports) atoms, so the
//! order of entries and how rules are grouped do not matter; everything else must be equal.
//! Each node's peer list (the netmap's `Peers`) must equal [`CompiledPolicy::peers_of`].
//! A node's approved routes are those of the capture's topology plus those its own netmap
//! shows in `AllowedIPs` (routes `autoApprovers` approved).
//!
//! [`CompiledPolicy::peers_of`]: weft_policy::CompiledPolicy::peers_of
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;

use serde_json::Value;
use weft_policy::{Node, NodeId, Policy, Tailnet};

const VECTORS: &str = include_str!("vectors/tailscale_saas.jsonl");
/// Policies with a `tests` section and whether Tailscale accepted them (Headscale's
/// `policytest_results`, the cases without `grants`).
const TEST_VECTORS: &str = include_str!("vectors/tailscale_saas_tests.jsonl");

/// One string per (sources, protocols, destination entry).
fn atoms(rules: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in rules.as_array().unwrap() {
        let mut srcs: Vec<&str> = r["SrcIPs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        srcs.sort_unstable();
        let proto = match r.get("IPProto") {
            Some(Value::Array(a)) if !a.is_empty() => Value::Array(a.clone()).to_string(),
            _ => "default".to_owned(),
        };
        for d in r["DstPorts"].as_array().into_iter().flatten() {
            out.insert(format!(
                "{} | {proto} | {} {}-{}",
                srcs.join(","),
                d["IP"],
                d["Ports"]["First"],
                d["Ports"]["Last"]
            ));
        }
    }
    out
}

fn node(n: &Value) -> Node {
    let strs = |k: &str| {
        n[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
    };
    Node {
        id: NodeId(n["id"].as_u64().unwrap()),
        user: n["user"].as_str().unwrap().to_owned(),
        tags: strs("tags").collect(),
        addresses: strs("addresses").map(|a| a.parse().unwrap()).collect(),
        routes: strs("routes")
            .map(|r| weft_policy::alias::parse_prefix(&r).unwrap())
            .collect(),
        exit_node: n["exit"].as_bool().unwrap(),
    }
}

#[test]
fn filters_match_tailscale_saas_captures() {
    let (mut accepted, mut refused, mut compared, mut peer_lists) = (0, 0, 0, 0);
    for line in VECTORS.lines() {
        let case: Value = serde_json::from_str(line).unwrap();
        let name = case["name"].as_str().unwrap();
        let parsed = Policy::parse(case["policy"].as_str().unwrap());
        if let Some(msg) = case["refused"].as_str() {
            assert!(
                parsed.is_err(),
                "{name}: Tailscale refused it ({msg}), weft accepted it"
            );
            refused += 1;
            continue;
        }
        let policy = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
        let nodes: Vec<Node> = case["nodes"].as_array().unwrap().iter().map(node).collect();
        let compiled = policy.compile(&Tailnet::new(nodes));
        let name_of = |id: NodeId| {
            let n = case["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["id"] == id.0);
            n.unwrap()["name"].as_str().unwrap().to_owned()
        };
        for n in case["nodes"].as_array().unwrap() {
            let id = NodeId(n["id"].as_u64().unwrap());
            if let Some(want) = case["peers"].get(n["name"].as_str().unwrap()) {
                let mut got: Vec<String> = compiled.peers_of(id).into_iter().map(name_of).collect();
                got.sort();
                let want: Vec<String> = serde_json::from_value(want.clone()).unwrap();
                assert_eq!(got, want, "{name}, peers of {}", n["name"]);
                peer_lists += 1;
            }
            let want = case["expected"]
                .get(n["name"].as_str().unwrap())
                .cloned()
                .unwrap_or(Value::Array(vec![]));
            let got = serde_json::to_value(compiled.filter_for(NodeId(n["id"].as_u64().unwrap())))
                .unwrap();
            let (got, want) = (atoms(&got), atoms(&want));
            assert_eq!(
                got,
                want,
                "{name}, node {}: extra {:?}, missing {:?}",
                n["name"],
                got.difference(&want).collect::<Vec<_>>(),
                want.difference(&got).collect::<Vec<_>>()
            );
            compared += want.len();
        }
        accepted += 1;
    }
    assert!(
        accepted >= 80 && refused >= 16,
        "{accepted} accepted, {refused} refused"
    );
    assert!(compared >= 400, "{compared} atoms");
    assert!(peer_lists >= 600, "{peer_lists} peer lists");
}

#[test]
fn tests_sections_pass_and_fail_as_on_tailscale_saas() {
    let mut cases = 0;
    for line in TEST_VECTORS.lines() {
        let case: Value = serde_json::from_str(line).unwrap();
        let name = case["name"].as_str().unwrap();
        let nodes: Vec<Node> = case["nodes"].as_array().unwrap().iter().map(node).collect();
        let got = Policy::load(case["policy"].as_str().unwrap(), &Tailnet::new(nodes));
        let want = case["accepted"].as_bool().unwrap();
        assert_eq!(
            got.is_ok(),
            want,
            "{name}: {:?}",
            got.err().map(|e| e.to_string())
        );
        cases += 1;
    }
    assert!(cases >= 45, "{cases} cases");
}
