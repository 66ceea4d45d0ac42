//! Cost of the policy queries a coordination server makes, on synthetic tailnets of 1 000 and
//! 10 000 nodes under the example policy (`configs/policy.hujson`): parsing the HuJSON,
//! compiling against the snapshot (once per policy or snapshot change), and the per-node
//! queries (`filter_for`, `peers_of`) that a map update needs, and one node's change
//! (`upsert_node`, which returns the affected nodes; two per iteration).
//!
//! Run: `cargo bench -p weft-policy --bench compile`. Numbers drift on a shared VM; compare
//! rows of one run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use weft_policy::{Node, NodeId, Policy, Tailnet};

const EXAMPLE: &str = include_str!("../../../configs/policy.hujson");

/// `n` nodes: a tenth tag:server, a tenth tag:db, one router and one exit node, the rest
/// users' devices (alice, bob and many others, three devices each).
fn tailnet(n: u32) -> Tailnet {
    let nodes = (0..n)
        .map(|i| {
            let tags: Vec<String> = match i % 10 {
                0 => vec!["tag:server".into()],
                1 => vec!["tag:db".into()],
                _ if i == 2 => vec!["tag:router".into()],
                _ if i == 3 => vec!["tag:exit".into()],
                _ => vec![],
            };
            let user = match i % 7 {
                0 => "alice@example.com".to_owned(),
                1 => "bob@example.com".to_owned(),
                _ => format!("user{}@example.com", i / 3),
            };
            let b = (i + 1).to_be_bytes();
            Node {
                id: NodeId(u64::from(i)),
                user,
                tags,
                addresses: vec![
                    IpAddr::from([100, 64 + b[1], b[2], b[3]]),
                    IpAddr::from([
                        0xfd7a,
                        0x115c,
                        0xa1e0,
                        0,
                        0,
                        0,
                        u16::from(b[1]),
                        u16::from_be_bytes([b[2], b[3]]),
                    ]),
                ],
                routes: if i == 2 {
                    vec![weft_policy::alias::parse_prefix("10.33.0.0/16").unwrap()]
                } else {
                    vec![]
                },
                exit_node: i == 3,
            }
        })
        .collect();
    Tailnet::new(nodes)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy");
    g.sample_size(10);
    g.bench_function("parse_example", |b| {
        b.iter(|| Policy::parse(black_box(EXAMPLE)).unwrap())
    });
    let policy = Policy::parse(EXAMPLE).unwrap();
    for n in [1_000u32, 10_000] {
        let t = tailnet(n);
        g.bench_function(format!("compile/{n}"), |b| {
            b.iter(|| policy.compile(black_box(&t)))
        });
        let compiled = policy.compile(&t);
        // One user's device changes its address, back and forth: two updates per iteration,
        // each returning the affected nodes.
        let original = compiled.node(NodeId(5)).unwrap().clone();
        let mut moved = original.clone();
        moved.addresses = vec![IpAddr::from([100, 127, 255, 1])];
        let mut live = compiled.clone();
        g.bench_function(format!("upsert_node_x2/{n}"), |b| {
            b.iter(|| {
                black_box(live.upsert_node(moved.clone()));
                black_box(live.upsert_node(original.clone()))
            })
        });
        // A user's device (own devices, servers, printer, internet rules) and a database.
        for (what, id) in [("member", NodeId(5)), ("db", NodeId(1))] {
            g.bench_function(format!("filter_for_{what}/{n}"), |b| {
                b.iter(|| compiled.filter_for(black_box(id)))
            });
            g.bench_function(format!("peers_of_{what}/{n}"), |b| {
                b.iter(|| compiled.peers_of(black_box(id)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
