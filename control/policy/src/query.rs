//! Per-node queries on a [`CompiledPolicy`]: the packet filter and the visible peers.
//! The output shapes and the visibility rule are in [`crate::compile`].

use std::collections::BTreeSet;
use std::net::IpAddr;

use weft_filter::rules::NetPortRange;
use weft_filter::{FilterRule, PortRange};

use crate::alias::prefix_text;
use crate::compile::{CompiledAcl, CompiledPolicy, DstKind, NodeSet, INTERNET_RANGES};
use crate::policy::Policy;
use crate::tailnet::{Node, NodeId};

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
            .filter(|id| acl.names_source(**id))
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
                self.src_ips(acl).to_vec()
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
                if acl.any {
                    out.extend(self.nodes.keys().copied());
                } else {
                    out.extend(acl.alias_members.iter().copied());
                    out.extend(acl.prefix_members.iter().copied());
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
                    if node.is_untagged() && acl.names_source(id) {
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
