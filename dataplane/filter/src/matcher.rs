//! The inbound matcher: [`Filter`], [`Verdict`], [`DropReason`]. The semantics are in the
//! crate doc.

use std::net::{IpAddr, Ipv4Addr};

use crate::decode::{Decoded, L4};
use crate::flows::{addr16, FlowKey, FlowTable};
use crate::rules::{Dst, IpNet, PortRange, ProtoSet, Rule};

/// The verdict on one inbound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Deliver the packet.
    Accept,
    /// Drop it; the reason is for counters.
    Drop(DropReason),
}

/// Why a packet was dropped (one counter each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DropReason {
    /// Between 1 and 19 bytes.
    #[error("shorter than 20 bytes")]
    TooShort,
    /// The IP version is neither 4 nor 6.
    #[error("not IPv4 or IPv6")]
    BadVersion,
    /// The packet is shorter than its IP length field, or a header (IPv6 fixed header,
    /// Fragment header, transport header) does not fit in the IP length.
    #[error("truncated header")]
    Truncated,
    /// An IPv4 header length below 5 words or beyond the total length, or a TCP data offset
    /// below 5 words.
    #[error("malformed header")]
    Malformed,
    /// Protocol 0 (IPv6 Hop-by-Hop) or 255, or a fragmented TSMP message.
    #[error("unknown protocol")]
    UnknownProtocol,
    /// A non-first fragment at an offset below 80 bytes (could overlap a transport header).
    #[error("fragment offset overlaps a transport header")]
    FragmentOverlap,
    /// A multicast destination.
    #[error("multicast destination")]
    Multicast,
    /// A link-local unicast destination other than 169.254.169.254.
    #[error("link-local destination")]
    LinkLocal,
    /// The destination is not one of the node's addresses or routes.
    #[error("destination not local")]
    NotLocal,
    /// No rule allows the packet.
    #[error("no rule matched")]
    NoRule,
}

/// A rule of one address family: sources and destinations of that family only. A rule with
/// no source or no destination of a family does not exist in that family.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FamilyRule {
    protocols: ProtoSet,
    srcs: Vec<IpNet>,
    dsts: Vec<Dst>,
}

/// The packet filter of one node: rules and local nets. Immutable; build a new one to change
/// the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    rules4: Vec<FamilyRule>,
    rules6: Vec<FamilyRule>,
    local: Vec<IpNet>,
}

/// The address used by cloud metadata services (and GCP's DNS), allowed although link-local.
const METADATA_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

impl Filter {
    /// A filter with `rules` (from [`crate::compile`]) for a node whose local nets — its own
    /// addresses and the routes it serves — are `local`.
    pub fn new(rules: &[Rule], local: impl IntoIterator<Item = IpNet>) -> Self {
        let family = |v6: bool| {
            rules
                .iter()
                .filter_map(|r| {
                    let srcs: Vec<IpNet> =
                        r.srcs.iter().copied().filter(|n| n.is_v6() == v6).collect();
                    let dsts: Vec<Dst> = r
                        .dsts
                        .iter()
                        .copied()
                        .filter(|d| d.net.is_v6() == v6)
                        .collect();
                    (!srcs.is_empty() && !dsts.is_empty()).then_some(FamilyRule {
                        protocols: r.protocols,
                        srcs,
                        dsts,
                    })
                })
                .collect()
        };
        Self {
            rules4: family(false),
            rules6: family(true),
            local: local.into_iter().collect(),
        }
    }

    /// A filter that drops every packet that needs a rule.
    pub fn deny_all(local: impl IntoIterator<Item = IpNet>) -> Self {
        Self::new(&[], local)
    }

    /// The verdict on `packet`, an IP packet (no link-layer header) a peer sent to this node,
    /// without a reverse-flow cache: a UDP or SCTP reply needs a rule. The data plane uses
    /// [`check_inbound_with`](Self::check_inbound_with).
    pub fn check_inbound(&self, packet: &[u8]) -> Verdict {
        self.inbound(packet, None)
    }

    /// The verdict on `packet`, an IP packet a peer sent to this node, where a UDP or SCTP
    /// packet that answers a flow in `flows` (recorded by
    /// [`check_outbound`](Self::check_outbound)) is accepted without a rule and refreshes that
    /// flow. Everything else is judged as by [`check_inbound`](Self::check_inbound).
    pub fn check_inbound_with(&self, packet: &[u8], flows: &mut FlowTable) -> Verdict {
        self.inbound(packet, Some(flows))
    }

    fn inbound(&self, packet: &[u8], flows: Option<&mut FlowTable>) -> Verdict {
        match Decoded::parse(packet) {
            Ok(None) => Verdict::Accept,
            Ok(Some(d)) => match self.decide(&d, flows) {
                Ok(()) => Verdict::Accept,
                Err(r) => Verdict::Drop(r),
            },
            Err(reason) => Verdict::Drop(reason),
        }
    }

    /// The verdict on an already decoded packet (steps 3–6 of the crate doc), without a
    /// reverse-flow cache.
    pub fn check_decoded(&self, d: &Decoded) -> Verdict {
        match self.decide(d, None) {
            Ok(()) => Verdict::Accept,
            Err(r) => Verdict::Drop(r),
        }
    }

    /// Notes `packet`, an IP packet this node sends to a peer, in `flows` when it opens or
    /// continues a UDP or SCTP flow, so that the replies are accepted (see the crate doc).
    /// Outbound packets are never dropped; returns whether a flow was recorded.
    pub fn check_outbound(&self, packet: &[u8], flows: &mut FlowTable) -> bool {
        let Ok(Some(d)) = Decoded::parse(packet) else {
            return false;
        };
        if check_destination_kind(d.dst).is_err() {
            return false;
        }
        let L4::Ports { src_port, dst_port } = d.l4 else {
            return false;
        };
        flows.insert(FlowKey {
            remote: addr16(d.dst),
            local: addr16(d.src),
            remote_port: dst_port,
            local_port: src_port,
            proto: d.protocol,
            pad: [0; 3],
        });
        true
    }

    fn decide(&self, d: &Decoded, flows: Option<&mut FlowTable>) -> Result<(), DropReason> {
        check_destination_kind(d.dst)?;
        if d.l4 == L4::NonFirstFragment {
            return Ok(());
        }
        if !self.local.iter().any(|n| n.contains(d.dst)) {
            return Err(DropReason::NotLocal);
        }
        let rules = if d.dst.is_ipv6() {
            &self.rules6
        } else {
            &self.rules4
        };
        let allowed = match d.l4 {
            L4::Icmp { type_code } => {
                type_code.is_some_and(|tc| is_icmp_reply_or_error(d.dst.is_ipv6(), tc))
                    || rules.iter().any(|r| {
                        src_matches(r, d.src) && r.dsts.iter().any(|x| x.net.contains(d.dst))
                    })
            }
            L4::Tcp {
                dst_port, flags, ..
            } => {
                let syn = weft_packet::tcp::flags::SYN;
                let ack = weft_packet::tcp::flags::ACK;
                flags & (syn | ack) != syn || port_match(rules, d, dst_port)
            }
            L4::Ports { src_port, dst_port } => {
                let reply = FlowKey {
                    remote: addr16(d.src),
                    local: addr16(d.dst),
                    remote_port: src_port,
                    local_port: dst_port,
                    proto: d.protocol,
                    pad: [0; 3],
                };
                flows.is_some_and(|f| f.touch(&reply)) || port_match(rules, d, dst_port)
            }
            L4::Tsmp => true,
            L4::Other | L4::NonFirstFragment => rules.iter().any(|r| {
                r.protocols.contains(d.protocol)
                    && src_matches(r, d.src)
                    && r.dsts
                        .iter()
                        .any(|x| x.ports == PortRange::ALL && x.net.contains(d.dst))
            }),
        };
        if allowed {
            Ok(())
        } else {
            Err(DropReason::NoRule)
        }
    }
}

fn src_matches(r: &FamilyRule, src: IpAddr) -> bool {
    r.srcs.iter().any(|n| n.contains(src))
}

fn port_match(rules: &[FamilyRule], d: &Decoded, port: u16) -> bool {
    rules.iter().any(|r| {
        r.protocols.contains(d.protocol)
            && src_matches(r, d.src)
            && r.dsts
                .iter()
                .any(|x| x.net.contains(d.dst) && x.ports.contains(port))
    })
}

/// Echo replies (code 0) and errors, which are accepted without a rule.
fn is_icmp_reply_or_error(v6: bool, (ty, code): (u8, u8)) -> bool {
    if v6 {
        // Echo Reply; Destination Unreachable, Packet Too Big, Time Exceeded, Parameter Problem.
        (ty == 129 && code == 0) || matches!(ty, 1..=4)
    } else {
        // Echo Reply; Destination Unreachable, Time Exceeded, Parameter Problem, and 18 (see
        // the crate doc).
        (ty == 0 && code == 0) || matches!(ty, 3 | 11 | 12 | 18)
    }
}

/// Step 3 of the crate doc: multicast and link-local destinations.
fn check_destination_kind(dst: IpAddr) -> Result<(), DropReason> {
    let (v4, exempt) = match dst {
        IpAddr::V4(a) => (a, true),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(m) => (m, false),
            None => {
                let seg = a.segments()[0];
                if seg & 0xff00 == 0xff00 {
                    return Err(DropReason::Multicast);
                }
                if seg & 0xffc0 == 0xfe80 {
                    return Err(DropReason::LinkLocal);
                }
                return Ok(());
            }
        },
    };
    if v4.is_multicast() {
        return Err(DropReason::Multicast);
    }
    if v4.is_link_local() && !(exempt && v4 == METADATA_ADDR) {
        return Err(DropReason::LinkLocal);
    }
    Ok(())
}
