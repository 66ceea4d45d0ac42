//! `autoApprovers`: routes and exit nodes approved without an administrator.
//!
//! Semantics (checked against captures of Tailscale SaaS in Headscale's test data):
//! * `routes` maps a prefix to approvers; a node's advertised prefix is approved when it lies
//!   inside (or equals) such a prefix and the node is one of its approvers.
//! * Exit routes (`0.0.0.0/0`, `::/0`) are approved only through `exitNode`, never through
//!   a `routes` entry, even `"0.0.0.0/0": [...]`.
//! * Approvers are users, groups, tags, `autogroup:member` and `autogroup:tagged`, matched
//!   as everywhere else (a tagged node is its tags, not its owner).

use weft_filter::IpNet;

use crate::policy::Policy;
use crate::tailnet::{covers, Node};

impl Policy {
    /// Whether `node`'s advertised subnet route `prefix` is auto-approved. Always `false` for
    /// an exit route (`/0`): see [`Policy::auto_approves_exit_node`].
    pub fn auto_approves_route(&self, node: &Node, prefix: IpNet) -> bool {
        if prefix.prefix_len() == 0 {
            return false;
        }
        self.auto_routes
            .iter()
            .filter(|(r, _)| covers(r, &prefix))
            .any(|(_, who)| who.iter().any(|a| self.node_in(a, node)))
    }

    /// Whether `node`, advertising both exit routes, is auto-approved as an exit node.
    pub fn auto_approves_exit_node(&self, node: &Node) -> bool {
        self.auto_exit.iter().any(|a| self.node_in(a, node))
    }
}
