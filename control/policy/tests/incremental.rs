//! Incremental updates against recompilation: after any sequence of node joins, changes and
//! removals through `upsert_node` / `remove_node`, every node's filter and peer list equal
//! those of the policy compiled from scratch for the resulting tailnet, and every node whose
//! filter or peers changed is in the returned "affected" set.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;

use proptest::prelude::*;
use support::*;
use weft_policy::{CompiledPolicy, Node, NodeId, Policy, Tailnet};

fn policies() -> Vec<String> {
    vec![
        include_str!("../../../configs/policy.hujson").to_owned(),
        weft_policy::DEFAULT_POLICY.to_owned(),
        policy_with(
            r#""acls": [
                {"action": "accept", "src": ["*"], "dst": ["tag:server:22", "corp:*"]},
                {"action": "accept", "src": ["10.0.0.0/8", "group:eng"], "dst": ["autogroup:internet:*", "dbhost:5432"]},
                {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"], "proto": "tcp"},
                {"action": "accept", "src": ["tag:db", "carol@example.org"], "dst": ["autogroup:tagged:*", "fd7a:115c:a1e0::/48:80"]},
            ]"#,
        ),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Upsert {
        id: u64,
        user: usize,
        tags: usize,
        routes: usize,
        exit: bool,
        addr: u8,
    },
    Remove {
        id: u64,
    },
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => (1u64..11, 0usize..3, 0usize..4, 0usize..3, any::<bool>(), 1u8..20).prop_map(
            |(id, user, tags, routes, exit, addr)| Op::Upsert { id, user, tags, routes, exit, addr }
        ),
        1 => (1u64..11).prop_map(|id| Op::Remove { id }),
    ];
    prop::collection::vec(op, 1..12)
}

fn make(id: u64, user: usize, tags: usize, routes: usize, exit: bool, addr: u8) -> Node {
    let users = ["alice@example.com", "bob@example.com", "carol@example.org"];
    let tag_sets: [&[&str]; 4] = [
        &[],
        &["tag:server"],
        &["tag:db", "tag:router"],
        &["tag:exit"],
    ];
    let route_sets: [&[&str]; 3] = [&[], &["10.33.0.0/16"], &["192.168.1.0/24", "fd00:33::/64"]];
    Node {
        id: NodeId(id),
        user: users[user].to_owned(),
        tags: tag_sets[tags].iter().map(|t| (*t).to_owned()).collect(),
        addresses: vec![
            IpAddr::from([100, 64, 1, addr]),
            IpAddr::from([0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 1, u16::from(addr)]),
        ],
        routes: route_sets[routes].iter().map(|r| net(r)).collect(),
        exit_node: exit,
    }
}

fn snapshot(c: &CompiledPolicy, ids: &[NodeId]) -> BTreeMap<NodeId, (String, Vec<NodeId>)> {
    ids.iter()
        .map(|&id| {
            let f = serde_json::to_string(&c.filter_for(id)).unwrap();
            (id, (f, c.peers_of(id).into_iter().collect()))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn incremental_equals_recompiled(which in 0usize..3, ops in ops()) {
        let text = &policies()[which];
        let policy = Policy::parse(text).unwrap();
        let mut tailnet = tailnet();
        let mut c = policy.compile(&tailnet);
        let ids: Vec<NodeId> = (1..11).map(NodeId).collect();
        for op in ops {
            let before = snapshot(&c, &ids);
            let affected = match op {
                Op::Upsert { id, user, tags, routes, exit, addr } => {
                    let n = make(id, user, tags, routes, exit, addr);
                    tailnet.nodes.retain(|x| x.id != n.id);
                    tailnet.nodes.push(n.clone());
                    c.upsert_node(n)
                }
                Op::Remove { id } => {
                    tailnet.nodes.retain(|x| x.id != NodeId(id));
                    c.remove_node(NodeId(id))
                }
            };
            let fresh = policy.compile(&Tailnet { nodes: tailnet.nodes.clone(), ranges: tailnet.ranges.clone() });
            let after = snapshot(&c, &ids);
            prop_assert_eq!(&after, &snapshot(&fresh, &ids));
            for id in &ids {
                if before[id] != after[id] {
                    prop_assert!(affected.contains(id), "{:?} changed but was not reported", id);
                }
            }
        }
    }
}

#[test]
fn upsert_reports_a_small_affected_set() {
    let policy = Policy::parse(include_str!("../../../configs/policy.hujson")).unwrap();
    let mut c = policy.compile(&tailnet());
    // The database moves: only the servers (its only peer) and itself are affected.
    let mut db = c.node(DB).unwrap().clone();
    db.addresses = vec![IpAddr::from([100, 64, 9, 9])];
    let affected = c.upsert_node(db);
    assert_eq!(affected.into_iter().collect::<Vec<_>>(), [SERVER, DB]);
    assert!(c.filter_for(DB)[0]
        .dst_ports
        .iter()
        .all(|d| d.ip == "100.64.9.9"));
    // Removing a user's laptop affects its former peers.
    let affected = c.remove_node(BOB_LAPTOP);
    assert_eq!(
        affected.into_iter().collect::<Vec<_>>(),
        [BOB_LAPTOP, SERVER, ROUTER, EXIT]
    );
    assert!(c.peers_of(SERVER).iter().all(|&p| p != BOB_LAPTOP));
}
