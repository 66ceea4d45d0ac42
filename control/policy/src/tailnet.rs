//! The tailnet snapshot a policy is compiled against: plain data the server fills in.
//!
//! It holds only what the policy looks at: who owns a node, its tags, its addresses, the
//! subnet routes approved for it and whether it is an approved exit node. How addresses are
//! allocated, which router is primary for a prefix (§11.2) and who is online is the server's
//! business; a router that is not primary still gets the rules for the prefixes approved for
//! it, as Headscale and Tailscale do, so a fail-over needs no filter change.

use std::net::IpAddr;

use weft_filter::IpNet;

use crate::alias::Alias;
use crate::policy::Policy;

/// A node's stable id (the server's database id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

/// One node as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its id.
    pub id: NodeId,
    /// The login of the user who owns it (`alice@example.com`). A tagged node keeps its
    /// owner here, but user aliases no longer match it: tags replace the user identity.
    pub user: String,
    /// Its tags (`tag:server`); empty for a user's device.
    pub tags: Vec<String>,
    /// Its tailnet addresses (one IPv4 and one IPv6 normally).
    pub addresses: Vec<IpAddr>,
    /// Approved subnet routes it advertises (not the exit routes).
    pub routes: Vec<IpNet>,
    /// Whether it is an approved exit node (both `0.0.0.0/0` and `::/0` advertised and
    /// approved).
    pub exit_node: bool,
}

impl Node {
    /// Whether the node is a user's device (no tags).
    pub fn is_untagged(&self) -> bool {
        self.tags.is_empty()
    }

    /// Whether `addr` is one of its addresses.
    pub fn has_address(&self, addr: IpAddr) -> bool {
        self.addresses.contains(&addr)
    }

    /// The node's local nets for the packet filter: its addresses, its approved routes, and
    /// all of IPv4 and IPv6 when it is an exit node.
    pub fn local_nets(&self) -> Vec<IpNet> {
        let mut v: Vec<IpNet> = self.addresses.iter().map(|a| IpNet::host(*a)).collect();
        v.extend(self.routes.iter().copied());
        if self.exit_node {
            v.extend([IpNet::ANY_V4, IpNet::ANY_V6]);
        }
        v
    }
}

/// The nodes of a tailnet and its address ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tailnet {
    /// The nodes, in any order (ids unique).
    pub nodes: Vec<Node>,
    /// The ranges tailnet addresses come from; `*` as a source stands for these (plus the
    /// approved subnet routes). Default: `100.64.0.0/10` and `fd7a:115c:a1e0::/48`.
    pub ranges: Vec<IpNet>,
}

impl Tailnet {
    /// A tailnet with the default address ranges.
    pub fn new(nodes: Vec<Node>) -> Self {
        Self {
            nodes,
            ranges: default_ranges(),
        }
    }
}

/// `100.64.0.0/10` and `fd7a:115c:a1e0::/48`.
pub fn default_ranges() -> Vec<IpNet> {
    let v4 = IpNet::new(IpAddr::from([100, 64, 0, 0]), 10);
    let v6 = IpNet::new(IpAddr::from([0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0]), 48);
    v4.into_iter().chain(v6).collect()
}

/// Whether prefix `a` and prefix `b` share an address.
pub(crate) fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b.addr()) || b.contains(a.addr())
}

/// Whether prefix `inner` lies inside `outer`.
pub(crate) fn covers(outer: &IpNet, inner: &IpNet) -> bool {
    outer.prefix_len() <= inner.prefix_len() && outer.contains(inner.addr())
}

impl Policy {
    /// Whether `node` is one of the nodes `alias` names. Prefixes name the nodes with an
    /// address inside; `autogroup:self` and `autogroup:internet` name no node by themselves.
    pub(crate) fn node_in(&self, alias: &Alias, node: &Node) -> bool {
        match alias {
            Alias::Any => true,
            Alias::User(u) => node.is_untagged() && user_matches(u, &node.user),
            Alias::Group(g) => {
                node.is_untagged()
                    && self
                        .group_members(g)
                        .iter()
                        .any(|u| user_matches(u, &node.user))
            }
            Alias::Tag(t) => node.tags.iter().any(|x| x == t),
            Alias::Member => node.is_untagged(),
            Alias::Tagged => !node.is_untagged(),
            Alias::Prefix(p) => node.addresses.iter().any(|a| p.contains(*a)),
            Alias::Host(_) | Alias::SelfDevices | Alias::Internet => false,
        }
    }
}

/// `alice@example.com` matches that login; `alice@` matches the user named exactly `alice`
/// (a login without a domain), as Headscale resolves it — never `alice` at some other domain,
/// which in a tailnet of several domains would be someone else.
pub(crate) fn user_matches(alias: &str, login: &str) -> bool {
    alias == login || alias.strip_suffix('@') == Some(login)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_alias_forms() {
        assert!(user_matches("alice@example.com", "alice@example.com"));
        assert!(!user_matches("alice@example.com", "alice@example.org"));
        // `alice@` is the user named `alice`, not alice at any domain.
        assert!(!user_matches("alice@", "alice@example.org"));
        assert!(user_matches("alice@", "alice"));
        assert!(!user_matches("alice@", "malice@example.org"));
        assert!(!user_matches("alice@", "bob@example.org"));
    }

    #[test]
    fn prefix_relations() {
        let n = |s: &str| crate::alias::parse_prefix(s).unwrap();
        assert!(overlaps(&n("10.0.0.0/8"), &n("10.33.0.0/16")));
        assert!(overlaps(&n("10.33.0.0/16"), &n("10.0.0.0/8")));
        assert!(!overlaps(&n("10.0.0.0/8"), &n("192.168.0.0/16")));
        assert!(!overlaps(&n("10.0.0.0/8"), &n("::/0")));
        assert!(covers(&n("10.0.0.0/8"), &n("10.33.0.0/16")));
        assert!(!covers(&n("10.33.0.0/16"), &n("10.0.0.0/8")));
        assert_eq!(default_ranges().len(), 2);
    }
}
