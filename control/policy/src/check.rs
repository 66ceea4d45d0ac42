//! The `tests` section: assertions a policy must pass before it is accepted.
//!
//! Each test is run against the compiled filters with `weft_filter`'s matcher, the same code
//! the data plane runs, so a test passes exactly when the packets would pass:
//! * the source alias names addresses (a node alias: its nodes' addresses; an IP: that
//!   address; a CIDR: its network address);
//! * each destination `alias:port` (one port, one address or a node alias: what Tailscale
//!   accepts in a test) names (node, address) targets: a node alias its nodes' addresses; an
//!   IP the node that has it, or else the routers serving it, or else (public addresses) the
//!   exit nodes;
//! * for every source address and target address of the same family (a node sending to
//!   itself is skipped) a packet is built (TCP SYN, UDP, SCTP, ICMP echo request, or the bare
//!   protocol) and given to the target's [`weft_filter::Filter`]. Without `proto`, the pair
//!   counts as allowed if TCP or UDP is.
//! * `accept` needs every pair allowed, `deny` needs every pair denied (Headscale requires
//!   every source to pass as well).
//!
//! A source or destination that names no address fails the test: an assertion about nothing
//! is more likely a typo than an intent. Tailscale's outcomes were checked against its
//! captured verdicts (`tests/saas_vectors.rs`); the one known difference is a destination
//! address that no node holds or routes, which Tailscale evaluates against the rules alone
//! (it can pass there) and weft fails, since such packets reach no filter.

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_filter::{Decoded, Filter, Verdict, L4};

use crate::alias::Alias;
use crate::compile::{in_internet, CompiledPolicy};
use crate::error::PolicyError;
use crate::policy::{Destination, Policy, PolicyTest};
use crate::tailnet::{NodeId, Tailnet};

/// TCP SYN flag (RFC 9293).
const TCP_SYN: u8 = 0x02;
/// The source port of test packets (any ephemeral port).
const TEST_SRC_PORT: u16 = 40_000;

impl Policy {
    /// Parses `text`, compiles it for `tailnet` and runs its `tests`: the whole check a new
    /// policy passes before it replaces the one in force.
    ///
    /// # Errors
    /// As [`Policy::parse`] and [`CompiledPolicy::run_tests`].
    pub fn load(text: &str, tailnet: &Tailnet) -> Result<CompiledPolicy, PolicyError> {
        let compiled = Self::parse(text)?.compile(tailnet);
        compiled.run_tests()?;
        Ok(compiled)
    }
}

impl CompiledPolicy {
    /// Runs the `tests` section.
    ///
    /// # Errors
    /// [`PolicyError::TestFailed`] for the first failing test, naming its line, its source
    /// and every failed assertion.
    pub fn run_tests(&self) -> Result<(), PolicyError> {
        let mut filters = BTreeMap::new();
        for (index, t) in self.policy.tests.iter().enumerate() {
            let failures = self.run_test(t, &mut filters);
            if !failures.is_empty() {
                return Err(PolicyError::TestFailed {
                    at: t.at,
                    index,
                    src: t.src_text.clone(),
                    failures,
                });
            }
        }
        Ok(())
    }

    /// Whether a packet of protocol `proto` (None: TCP or UDP) from `src` to `dst` port
    /// `port` on node `to` passes that node's filter.
    pub fn allows(
        &self,
        src: IpAddr,
        to: NodeId,
        dst: IpAddr,
        port: u16,
        proto: Option<u8>,
    ) -> bool {
        let mut filters = BTreeMap::new();
        self.allowed(&mut filters, src, to, dst, port, proto)
    }

    fn filter_of<'a>(
        &self,
        cache: &'a mut BTreeMap<NodeId, Filter>,
        id: NodeId,
    ) -> Option<&'a Filter> {
        match cache.entry(id) {
            std::collections::btree_map::Entry::Occupied(e) => Some(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(e) => {
                let node = self.node(id)?;
                // The compiler never writes legacy fields, so this cannot fail; deny if it did.
                let rules = weft_filter::compile(&self.filter_for(id))
                    .map(|c| c.rules)
                    .unwrap_or_default();
                Some(e.insert(Filter::new(&rules, node.local_nets())))
            }
        }
    }

    fn allowed(
        &self,
        cache: &mut BTreeMap<NodeId, Filter>,
        src: IpAddr,
        to: NodeId,
        dst: IpAddr,
        port: u16,
        proto: Option<u8>,
    ) -> bool {
        let Some(filter) = self.filter_of(cache, to) else {
            return false;
        };
        let protos: &[u8] = match proto {
            Some(ref p) => std::slice::from_ref(p),
            None => &[6, 17],
        };
        protos.iter().any(|&p| {
            let l4 = match p {
                6 => L4::Tcp {
                    src_port: TEST_SRC_PORT,
                    dst_port: port,
                    flags: TCP_SYN,
                },
                17 | 132 => L4::Ports {
                    src_port: TEST_SRC_PORT,
                    dst_port: port,
                },
                1 if src.is_ipv4() => L4::Icmp {
                    type_code: Some((8, 0)),
                },
                58 if src.is_ipv6() => L4::Icmp {
                    type_code: Some((128, 0)),
                },
                _ => L4::Other,
            };
            let d = Decoded {
                src,
                dst,
                protocol: p,
                l4,
            };
            filter.check_decoded(&d) == Verdict::Accept
        })
    }

    fn source_addresses(&self, a: &Alias) -> Vec<(Option<NodeId>, IpAddr)> {
        match a {
            Alias::Prefix(p) => {
                let owner = self.nodes().find(|n| n.has_address(p.addr())).map(|n| n.id);
                vec![(owner, p.addr())]
            }
            _ => self
                .nodes()
                .filter(|n| self.policy.node_in(a, n))
                .flat_map(|n| n.addresses.iter().map(move |ad| (Some(n.id), *ad)))
                .collect(),
        }
    }

    fn targets(&self, d: &Destination) -> Vec<(NodeId, IpAddr)> {
        match &d.alias {
            Alias::Prefix(p) => {
                let a = p.addr();
                let owners: Vec<(NodeId, IpAddr)> = self
                    .nodes()
                    .filter(|n| n.has_address(a))
                    .map(|n| (n.id, a))
                    .collect();
                if !owners.is_empty() {
                    return owners;
                }
                let routers: Vec<(NodeId, IpAddr)> = self
                    .nodes()
                    .filter(|n| n.routes.iter().any(|r| r.contains(a)))
                    .map(|n| (n.id, a))
                    .collect();
                if !routers.is_empty() {
                    return routers;
                }
                if in_internet(&weft_filter::IpNet::host(a)) {
                    return self
                        .nodes()
                        .filter(|n| n.exit_node)
                        .map(|n| (n.id, a))
                        .collect();
                }
                Vec::new()
            }
            alias => self
                .nodes()
                .filter(|n| self.policy.node_in(alias, n))
                .flat_map(|n| n.addresses.iter().map(move |ad| (n.id, *ad)))
                .collect(),
        }
    }

    fn run_test(&self, t: &PolicyTest, cache: &mut BTreeMap<NodeId, Filter>) -> Vec<String> {
        let srcs = self.source_addresses(&t.src);
        if srcs.is_empty() {
            return vec![format!("source {:?} names no address", t.src_text)];
        }
        let mut failures = Vec::new();
        for (want, list) in [(true, &t.accept), (false, &t.deny)] {
            for (text, d) in list {
                let targets = self.targets(d);
                let mut pairs = 0usize;
                let mut wrong = None;
                for &(src_node, s) in &srcs {
                    for &(node, a) in &targets {
                        if s.is_ipv4() != a.is_ipv4() || src_node == Some(node) {
                            continue;
                        }
                        for r in &d.ports {
                            for port in [r.first, r.last] {
                                pairs += 1;
                                if self.allowed(cache, s, node, a, port, t.proto) != want
                                    && wrong.is_none()
                                {
                                    wrong = Some(format!("{s} -> {a}:{port}"));
                                }
                            }
                        }
                    }
                }
                if pairs == 0 {
                    failures.push(format!(
                        "{text:?}: names no address reachable from the source"
                    ));
                } else if let Some(w) = wrong {
                    let (exp, got) = if want {
                        ("accepted", "denied")
                    } else {
                        ("denied", "accepted")
                    };
                    failures.push(format!("{text:?}: expected {exp}, {w} is {got}"));
                }
            }
        }
        failures
    }
}
