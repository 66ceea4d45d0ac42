//! Shared fixtures: a small tailnet and crafted packets.
#![allow(dead_code, unreachable_pub)]

use std::net::IpAddr;

use weft_filter::{Filter, IpNet, Verdict};
use weft_policy::{CompiledPolicy, Node, NodeId, Policy, Tailnet};

pub const ALICE_LAPTOP: NodeId = NodeId(1);
pub const ALICE_PHONE: NodeId = NodeId(2);
pub const BOB_LAPTOP: NodeId = NodeId(3);
pub const SERVER: NodeId = NodeId(4);
pub const DB: NodeId = NodeId(5);
pub const ROUTER: NodeId = NodeId(6);
pub const EXIT: NodeId = NodeId(7);
pub const CAROL: NodeId = NodeId(8);

pub fn v4(id: NodeId) -> IpAddr {
    IpAddr::from([100, 64, 0, id.0 as u8])
}

pub fn v6(id: NodeId) -> IpAddr {
    IpAddr::from([0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, id.0 as u16])
}

pub fn net(s: &str) -> IpNet {
    weft_policy::alias::parse_prefix(s).unwrap()
}

fn node(id: NodeId, user: &str, tags: &[&str]) -> Node {
    Node {
        id,
        user: user.to_owned(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        addresses: vec![v4(id), v6(id)],
        routes: vec![],
        exit_node: false,
    }
}

/// Eight nodes: alice's laptop and phone, bob's laptop, carol's laptop (another domain), a
/// tag:server and a tag:db owned by alice, a tag:router serving 10.33.0.0/16 and
/// fd00:33::/64, and a tag:exit exit node.
pub fn tailnet() -> Tailnet {
    let mut router = node(ROUTER, "alice@example.com", &["tag:router"]);
    router.routes = vec![net("10.33.0.0/16"), net("fd00:33::/64")];
    let mut exit = node(EXIT, "alice@example.com", &["tag:exit"]);
    exit.exit_node = true;
    Tailnet::new(vec![
        node(ALICE_LAPTOP, "alice@example.com", &[]),
        node(ALICE_PHONE, "alice@example.com", &[]),
        node(BOB_LAPTOP, "bob@example.com", &[]),
        node(SERVER, "alice@example.com", &["tag:server"]),
        node(DB, "alice@example.com", &["tag:db"]),
        router,
        exit,
        node(CAROL, "carol@example.org", &[]),
    ])
}

/// The usual definitions, followed by `rest` (more top-level members, ending the object).
pub fn policy_with(rest: &str) -> String {
    format!(
        r#"{{
  "groups": {{"group:eng": ["alice@example.com", "bob@example.com"], "group:empty": []}},
  "tagOwners": {{
    "tag:server": ["group:eng"], "tag:db": ["alice@example.com"], "tag:router": ["alice@example.com"],
    "tag:exit": ["alice@example.com"],
  }},
  "hosts": {{"corp": "10.33.0.0/16", "dbhost": "100.64.0.5", "v6net": "fd00:33::/64", "lan": "192.168.1.0/24"}},
  {rest}
}}"#
    )
}

pub fn compile(text: &str) -> CompiledPolicy {
    let p = Policy::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    p.compile(&tailnet())
}

/// The filter node `id` would run with the compiled rules.
pub fn filter(c: &CompiledPolicy, id: NodeId) -> Filter {
    let compiled = weft_filter::compile(&c.filter_for(id)).unwrap();
    assert!(compiled.skipped.is_empty(), "{:?}", compiled.skipped);
    Filter::new(&compiled.rules, c.node(id).unwrap().local_nets())
}

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

/// An IPv4 or IPv6 packet: TCP SYN, UDP, ICMP echo request, or a bare protocol.
pub fn packet(src: IpAddr, dst: IpAddr, proto: u8, dst_port: u16) -> Vec<u8> {
    let l4: Vec<u8> = match proto {
        6 => {
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&40000u16.to_be_bytes());
            t[2..4].copy_from_slice(&dst_port.to_be_bytes());
            t[12] = 5 << 4;
            t[13] = 0x02; // SYN
            t
        }
        17 => {
            let mut u = vec![0u8; 8];
            u[0..2].copy_from_slice(&40000u16.to_be_bytes());
            u[2..4].copy_from_slice(&dst_port.to_be_bytes());
            u[4..6].copy_from_slice(&8u16.to_be_bytes());
            u
        }
        1 | 58 => vec![if proto == 1 { 8 } else { 128 }, 0, 0, 0, 0, 1, 0, 1],
        _ => vec![0u8; 8],
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = vec![0u8; 20];
            p[0] = 0x45;
            p[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            p[8] = 64;
            p[9] = proto;
            p[12..16].copy_from_slice(&s.octets());
            p[16..20].copy_from_slice(&d.octets());
            p.extend(l4);
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = vec![0u8; 40];
            p[0] = 0x60;
            p[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
            p[6] = proto;
            p[7] = 64;
            p[8..24].copy_from_slice(&s.octets());
            p[24..40].copy_from_slice(&d.octets());
            p.extend(l4);
            p
        }
        _ => panic!("mixed families"),
    }
}

/// Whether node `to` accepts a packet from `src` to `dst`.
pub fn accepts(
    c: &CompiledPolicy,
    to: NodeId,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    port: u16,
) -> bool {
    filter(c, to).check_inbound(&packet(src, dst, proto, port)) == Verdict::Accept
}

/// The compiled filter of a node as JSON, for exact comparisons.
pub fn filter_json(c: &CompiledPolicy, id: NodeId) -> serde_json::Value {
    serde_json::to_value(c.filter_for(id)).unwrap()
}
