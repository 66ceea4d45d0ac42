//! Compilation of a [`Policy`] against a [`Tailnet`]: per-node packet filters and peer
//! visibility.
//!
//! # Shape of the output (what Tailscale sends, from captures of Tailscale SaaS)
//! * A node gets only the rules it is a destination of (§9.2: clients filter inbound only).
//!   For a destination that names nodes (user, group, tag, autogroup), the node's own
//!   addresses are listed, not the other members'. An IP or CIDR destination (or host) is
//!   kept as written on the nodes it concerns: one of their addresses is inside it, it
//!   overlaps one of their approved subnet routes, or they are an exit node and it lies in
//!   the public internet. `*` stays `"*"` on every node. `autogroup:internet` becomes the
//!   internet ranges on exit nodes only.
//! * Sources: a node alias lists its nodes' addresses (never their routes); `*` lists the
//!   tailnet ranges (`100.64.0.0/10` written without the ChromeOS range `100.115.92.0/23`,
//!   as Tailscale does) and every approved subnet route, not exit routes.
//! * Rules with the same sources and protocols are merged into one, in policy order.
//! * `IPProto` is omitted without `proto`; the legacy `Bits`/`SrcBits` are never written.
//! * With no `acls` key, every node gets `FilterAllowAll` and sees every other node.
//!
//! # Visibility
//! Node A sees node B if either may send to the other under some rule (Headscale's
//! `CanAccess` in both directions): A is a source of the rule (one of its addresses is in
//! the sources, or one of its routes overlaps them) and B is covered by a destination as
//! above. A node never sees itself.
//!
//! # Cost
//! [`Policy::compile`] resolves every alias once against the tailnet and indexes each
//! destination under the nodes it covers: O(rules × destinations × nodes) once. After that
//! [`CompiledPolicy::filter_for`] touches only the entries indexed under that node (plus the
//! `*` ones), and [`CompiledPolicy::peers_of`] only the rules that node is a source or a
//! destination of; neither re-reads the HuJSON nor walks every node's map. After a change to
//! one node, [`affected_by`] names the nodes whose filter or peers may differ.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use weft_filter::rules::NetPortRange;
use weft_filter::{FilterRule, IpNet, PortRange};

use crate::alias::{prefix_text, Alias};
use crate::policy::Policy;
use crate::tailnet::{covers, overlaps, Node, NodeId, Tailnet};

/// The public internet as Tailscale writes it in filters: IPv4 without the private,
/// CGNAT and link-local ranges, and IPv6 global unicast (`2000::/3`).
pub const INTERNET_RANGES: [&str; 7] = [
    "0.0.0.0-9.255.255.255",
    "11.0.0.0-100.63.255.255",
    "100.128.0.0-169.253.255.255",
    "169.255.0.0-172.15.255.255",
    "172.32.0.0-192.167.255.255",
    "192.169.0.0-255.255.255.255",
    "2000::-3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
];

/// IPv4 ranges that are not "the internet".
const NOT_INTERNET_V4: [([u8; 4], u8); 5] = [
    ([10, 0, 0, 0], 8),
    ([100, 64, 0, 0], 10),
    ([169, 254, 0, 0], 16),
    ([172, 16, 0, 0], 12),
    ([192, 168, 0, 0], 16),
];

/// Whether `p` lies entirely in the public internet.
pub(crate) fn in_internet(p: &IpNet) -> bool {
    if p.is_v6() {
        IpNet::new(IpAddr::from([0x2000, 0, 0, 0, 0, 0, 0, 0]), 3).is_some_and(|g| covers(&g, p))
    } else {
        NOT_INTERNET_V4
            .iter()
            .all(|(a, len)| IpNet::new(IpAddr::from(*a), *len).is_none_or(|n| !overlaps(&n, p)))
    }
}

/// A set of nodes, with "all of them" kept symbolic.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NodeSet {
    All,
    Some(BTreeSet<NodeId>),
}

impl NodeSet {
    fn contains(&self, id: NodeId) -> bool {
        match self {
            Self::All => true,
            Self::Some(s) => s.contains(&id),
        }
    }
}

/// What a destination entry becomes on a node it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DstKind {
    /// The node's own addresses.
    NodeAddresses,
    /// The prefix as written.
    Prefix(IpNet),
    /// `"*"`.
    Any,
    /// The internet ranges.
    Internet,
    /// The node's own addresses, with the same user's devices as sources.
    SelfDevices,
}

#[derive(Debug, Clone)]
struct CompiledDst {
    kind: DstKind,
    ports: Vec<PortRange>,
    covered: NodeSet,
}

#[derive(Debug, Clone)]
struct CompiledAcl {
    /// `SrcIPs` for every destination but `autogroup:self`.
    src_ips: Vec<String>,
    /// Nodes that count as sources (for visibility and `autogroup:self`).
    src_nodes: NodeSet,
    /// Nodes named by node aliases among the sources (`autogroup:self` sources).
    src_alias_nodes: NodeSet,
    dsts: Vec<CompiledDst>,
    proto: Vec<i64>,
}

/// A policy compiled for one tailnet snapshot: answers per-node queries without
/// recompiling. Build a new one when the policy or the snapshot changes.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub(crate) policy: Policy,
    nodes: BTreeMap<NodeId, Node>,
    /// Untagged nodes by user login.
    by_user: BTreeMap<String, Vec<NodeId>>,
    allow_all: bool,
    acls: Vec<CompiledAcl>,
    /// (acl, dst) entries covering every node.
    all_dsts: Vec<(usize, usize)>,
    /// (acl, dst) entries by covered node.
    node_dsts: BTreeMap<NodeId, Vec<(usize, usize)>>,
    /// ACLs whose sources are every node.
    all_srcs: Vec<usize>,
    /// ACLs by source node.
    node_srcs: BTreeMap<NodeId, Vec<usize>>,
}

impl Policy {
    /// Compiles the policy for `tailnet` (see the module doc for the cost).
    pub fn compile(&self, tailnet: &Tailnet) -> CompiledPolicy {
        let nodes: BTreeMap<NodeId, Node> =
            tailnet.nodes.iter().map(|n| (n.id, n.clone())).collect();
        let mut by_user: BTreeMap<String, Vec<NodeId>> = BTreeMap::new();
        for n in nodes.values().filter(|n| n.is_untagged()) {
            by_user.entry(n.user.clone()).or_default().push(n.id);
        }
        let any_src = any_source_ips(tailnet);
        let acls: Vec<CompiledAcl> = self
            .acls
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|acl| {
                let mut src_ips = BTreeSet::new();
                let mut src_nodes = BTreeSet::new();
                let mut alias_nodes = BTreeSet::new();
                let mut any = false;
                for s in &acl.srcs {
                    match s {
                        Alias::Any => {
                            any = true;
                            src_ips.extend(any_src.iter().cloned());
                        }
                        Alias::Prefix(p) => {
                            src_ips.insert(prefix_text(p));
                            for n in nodes.values() {
                                if self.node_in(s, n) || n.routes.iter().any(|r| overlaps(r, p)) {
                                    src_nodes.insert(n.id);
                                }
                            }
                        }
                        _ => {
                            for n in nodes.values().filter(|n| self.node_in(s, n)) {
                                src_nodes.insert(n.id);
                                alias_nodes.insert(n.id);
                                src_ips.extend(n.addresses.iter().map(IpAddr::to_string));
                            }
                        }
                    }
                }
                let dsts = acl
                    .dsts
                    .iter()
                    .map(|d| self.compile_dst(&d.alias, d.ports.clone(), &nodes))
                    .collect();
                CompiledAcl {
                    src_ips: src_ips.into_iter().collect(),
                    src_nodes: if any {
                        NodeSet::All
                    } else {
                        NodeSet::Some(src_nodes)
                    },
                    src_alias_nodes: if any {
                        NodeSet::All
                    } else {
                        NodeSet::Some(alias_nodes)
                    },
                    dsts,
                    proto: acl.proto.map(i64::from).into_iter().collect(),
                }
            })
            .collect();
        let mut all_dsts = Vec::new();
        let mut node_dsts: BTreeMap<NodeId, Vec<(usize, usize)>> = BTreeMap::new();
        let mut all_srcs = Vec::new();
        let mut node_srcs: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
        for (a, acl) in acls.iter().enumerate() {
            match &acl.src_nodes {
                NodeSet::All => all_srcs.push(a),
                NodeSet::Some(s) => s
                    .iter()
                    .for_each(|id| node_srcs.entry(*id).or_default().push(a)),
            }
            for (d, dst) in acl.dsts.iter().enumerate() {
                match &dst.covered {
                    NodeSet::All => all_dsts.push((a, d)),
                    NodeSet::Some(s) => s
                        .iter()
                        .for_each(|id| node_dsts.entry(*id).or_default().push((a, d))),
                }
            }
        }
        CompiledPolicy {
            policy: self.clone(),
            nodes,
            by_user,
            allow_all: self.acls.is_none(),
            acls,
            all_dsts,
            node_dsts,
            all_srcs,
            node_srcs,
        }
    }

    fn compile_dst(
        &self,
        alias: &Alias,
        ports: Vec<PortRange>,
        nodes: &BTreeMap<NodeId, Node>,
    ) -> CompiledDst {
        let pick = |f: &dyn Fn(&Node) -> bool| {
            NodeSet::Some(nodes.values().filter(|n| f(n)).map(|n| n.id).collect())
        };
        let (kind, covered) = match alias {
            Alias::Any => (DstKind::Any, NodeSet::All),
            Alias::Internet => (DstKind::Internet, pick(&|n| n.exit_node)),
            Alias::SelfDevices => (DstKind::SelfDevices, pick(&Node::is_untagged)),
            Alias::Prefix(p) => (
                DstKind::Prefix(*p),
                pick(&|n| {
                    n.addresses.iter().any(|a| p.contains(*a))
                        || n.routes.iter().any(|r| overlaps(r, p))
                        || (n.exit_node && in_internet(p))
                }),
            ),
            _ => (DstKind::NodeAddresses, pick(&|n| self.node_in(alias, n))),
        };
        CompiledDst {
            kind,
            ports,
            covered,
        }
    }
}

/// `SrcIPs` for a `*` source: the tailnet ranges and every approved subnet route.
fn any_source_ips(t: &Tailnet) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in &t.ranges {
        if r.to_string() == "100.64.0.0/10" {
            // Tailscale leaves out the ChromeOS VM range 100.115.92.0/23.
            out.insert("100.64.0.0-100.115.91.255".to_owned());
            out.insert("100.115.94.0-100.127.255.255".to_owned());
        } else {
            out.insert(prefix_text(r));
        }
    }
    for n in &t.nodes {
        out.extend(n.routes.iter().map(prefix_text));
    }
    out
}

/// The wire form of the allow-all filter.
pub fn filter_allow_all() -> Vec<FilterRule> {
    vec![FilterRule {
        src_ips: vec!["*".to_owned()],
        dst_ports: vec![NetPortRange {
            ip: "*".to_owned(),
            ports: PortRange::ALL,
            ..NetPortRange::default()
        }],
        ..FilterRule::default()
    }]
}

impl CompiledPolicy {
    /// The policy this was compiled from.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The nodes of the snapshot, in id order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// A node of the snapshot.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(&id)
    }

    /// The (acl, dst) entries that cover `id`, in policy order.
    fn entries_for(&self, id: NodeId) -> Vec<(usize, usize)> {
        let mut v: Vec<(usize, usize)> = self.all_dsts.clone();
        if let Some(n) = self.node_dsts.get(&id) {
            v.extend(n.iter().copied());
        }
        v.sort_unstable();
        v
    }

    /// The same user's untagged devices that are sources of `acl` (`autogroup:self`).
    fn self_sources<'a>(
        &'a self,
        acl: &'a CompiledAcl,
        node: &'a Node,
    ) -> impl Iterator<Item = &'a Node> + 'a {
        self.by_user
            .get(&node.user)
            .into_iter()
            .flatten()
            .filter(|id| acl.src_alias_nodes.contains(**id))
            .filter_map(|id| self.nodes.get(id))
    }

    /// The packet filter of node `id` in the wire shape (empty for an unknown node: deny).
    pub fn filter_for(&self, id: NodeId) -> Vec<FilterRule> {
        if self.allow_all {
            return filter_allow_all();
        }
        let Some(node) = self.nodes.get(&id) else {
            return Vec::new();
        };
        // (SrcIPs, IPProto) → destinations, in order of first appearance.
        let mut rules: Vec<FilterRule> = Vec::new();
        let mut add = |src_ips: Vec<String>, proto: &Vec<i64>, dsts: Vec<NetPortRange>| {
            if src_ips.is_empty() || dsts.is_empty() {
                return;
            }
            let slot = match rules
                .iter_mut()
                .find(|r| r.src_ips == src_ips && r.ip_proto == *proto)
            {
                Some(r) => r,
                None => {
                    rules.push(FilterRule {
                        src_ips,
                        ip_proto: proto.clone(),
                        ..FilterRule::default()
                    });
                    match rules.last_mut() {
                        Some(r) => r,
                        None => return,
                    }
                }
            };
            for d in dsts {
                if !slot.dst_ports.contains(&d) {
                    slot.dst_ports.push(d);
                }
            }
        };
        for (a, d) in self.entries_for(id) {
            let Some(acl) = self.acls.get(a) else {
                continue;
            };
            let Some(dst) = acl.dsts.get(d) else { continue };
            let ips: Vec<String> = match &dst.kind {
                DstKind::NodeAddresses | DstKind::SelfDevices => {
                    node.addresses.iter().map(IpAddr::to_string).collect()
                }
                DstKind::Prefix(p) => vec![prefix_text(p)],
                DstKind::Any => vec!["*".to_owned()],
                DstKind::Internet => INTERNET_RANGES.iter().map(|s| (*s).to_owned()).collect(),
            };
            let entries = ips
                .iter()
                .flat_map(|ip| {
                    dst.ports.iter().map(move |p| NetPortRange {
                        ip: ip.clone(),
                        ports: *p,
                        ..NetPortRange::default()
                    })
                })
                .collect();
            let srcs = if dst.kind == DstKind::SelfDevices {
                let set: BTreeSet<String> = self
                    .self_sources(acl, node)
                    .flat_map(|n| n.addresses.iter().map(IpAddr::to_string))
                    .collect();
                set.into_iter().collect()
            } else {
                acl.src_ips.clone()
            };
            add(srcs, &acl.proto, entries);
        }
        rules
    }

    /// The nodes `id` may see as peers, in id order (see the module doc).
    pub fn peers_of(&self, id: NodeId) -> BTreeSet<NodeId> {
        let mut out = BTreeSet::new();
        let Some(node) = self.nodes.get(&id) else {
            return out;
        };
        if self.allow_all {
            out.extend(self.nodes.keys().copied());
            out.remove(&id);
            return out;
        }
        // Incoming: the sources of every entry covering this node.
        for (a, d) in self.entries_for(id) {
            let Some(acl) = self.acls.get(a) else {
                continue;
            };
            let Some(dst) = acl.dsts.get(d) else { continue };
            if dst.kind == DstKind::SelfDevices {
                out.extend(self.self_sources(acl, node).map(|n| n.id));
            } else {
                match &acl.src_nodes {
                    NodeSet::All => out.extend(self.nodes.keys().copied()),
                    NodeSet::Some(s) => out.extend(s.iter().copied()),
                }
            }
        }
        // Outgoing: everything covered by the rules this node is a source of.
        let mut mine: Vec<usize> = self.all_srcs.clone();
        mine.extend(self.node_srcs.get(&id).into_iter().flatten().copied());
        for a in mine {
            let Some(acl) = self.acls.get(a) else {
                continue;
            };
            for dst in &acl.dsts {
                if dst.kind == DstKind::SelfDevices {
                    if node.is_untagged() && acl.src_alias_nodes.contains(id) {
                        out.extend(self.by_user.get(&node.user).into_iter().flatten().copied());
                    }
                    continue;
                }
                match &dst.covered {
                    NodeSet::All => out.extend(self.nodes.keys().copied()),
                    NodeSet::Some(s) => out.extend(s.iter().copied()),
                }
            }
        }
        out.remove(&id);
        out
    }

    /// Whether `a` may see `b` (either may send to the other).
    pub fn can_see(&self, a: NodeId, b: NodeId) -> bool {
        a != b && self.peers_of(a).contains(&b)
    }
}

/// The nodes whose filter or peer list may differ after node `changed` was added, removed or
/// changed (addresses, tags, user, routes, exit approval) between snapshot `before` and
/// `after` of the same policy: the node itself and its peers in either snapshot. A policy
/// change, by contrast, can affect every node.
pub fn affected_by(
    before: &CompiledPolicy,
    after: &CompiledPolicy,
    changed: NodeId,
) -> BTreeSet<NodeId> {
    let mut s = before.peers_of(changed);
    s.extend(after.peers_of(changed));
    s.insert(changed);
    s
}
