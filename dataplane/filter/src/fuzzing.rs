//! The invariants of the `filter_inbound` fuzz target, and the naive reference model the
//! property tests compare [`Filter`] with. Not part of the stable API.
//!
//! The model reads the packet bytes directly (no `weft-packet`), keeps the rules as given
//! (no per-family split) and follows the crate doc's steps literally, so that it shares no
//! code with the matcher beyond the rule types.

use std::net::IpAddr;

use crate::rules::{proto, FilterRule, IpNet, NetPortRange, PortRange, Rule};
use crate::{compile, DropReason, Filter, Verdict};

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Violation(pub String);

fn be16(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

fn addr(p: &[u8], at: usize, v6: bool) -> Option<IpAddr> {
    if v6 {
        let b: [u8; 16] = p.get(at..at + 16)?.try_into().ok()?;
        Some(IpAddr::from(b))
    } else {
        let b: [u8; 4] = p.get(at..at + 4)?.try_into().ok()?;
        Some(IpAddr::from(b))
    }
}

/// A flow as the reference model keeps it: protocol, remote address and port, local address
/// and port, addresses in their 16-byte form.
type RefFlow = (u8, [u8; 16], u16, [u8; 16], u16);

/// The reference model of the reverse-flow cache: a list, most recently used last, cut to
/// its capacity from the front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceFlows {
    flows: Vec<RefFlow>,
    capacity: usize,
}

impl ReferenceFlows {
    /// An empty cache of `capacity` flows.
    pub fn new(capacity: usize) -> Self {
        Self {
            flows: Vec::new(),
            capacity,
        }
    }

    /// Flows held.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is held.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    fn use_flow(&mut self, f: RefFlow, add: bool) -> bool {
        let held = self.flows.iter().position(|x| *x == f);
        if let Some(i) = held {
            self.flows.remove(i);
        }
        if held.is_some() || add {
            self.flows.push(f);
        }
        if self.flows.len() > self.capacity {
            self.flows.remove(0);
        }
        held.is_some()
    }
}

/// IPv6 as is, IPv4 as `::ffff:a.b.c.d`, built byte by byte.
fn bytes16(a: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match a {
        IpAddr::V4(v4) => {
            out[10] = 0xff;
            out[11] = 0xff;
            for (o, b) in out.iter_mut().skip(12).zip(v4.octets()) {
                *o = b;
            }
        }
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

/// The verdict of the reference model for `packet` under `rules` and `local`.
pub fn reference_verdict(rules: &[Rule], local: &[IpNet], packet: &[u8]) -> Verdict {
    match reference(rules, local, packet, None) {
        Ok(()) => Verdict::Accept,
        Err(r) => Verdict::Drop(r),
    }
}

/// The verdict of the reference model for an inbound `packet` with the reverse-flow cache
/// `flows` (a reply refreshes its flow).
pub fn reference_verdict_with(
    rules: &[Rule],
    local: &[IpNet],
    packet: &[u8],
    flows: &mut ReferenceFlows,
) -> Verdict {
    match reference(rules, local, packet, Some(flows)) {
        Ok(()) => Verdict::Accept,
        Err(r) => Verdict::Drop(r),
    }
}

/// The reference model of an outbound `packet`: whether it records a flow in `flows`.
pub fn reference_outbound(packet: &[u8], flows: &mut ReferenceFlows) -> bool {
    // Everything before the local-nets check is direction-agnostic: run the inbound model
    // with the packet's own destination as the only local net and watch what it parses.
    let mut seen = None;
    let dst = match packet.first().map(|b| b >> 4) {
        Some(4) => addr(packet, 16, false),
        Some(6) => addr(packet, 24, true),
        _ => None,
    };
    let Some(dst) = dst else { return false };
    let local = [IpNet::host(dst)];
    let verdict = reference_inner(&[], &local, packet, &mut |f| {
        seen = Some(f);
        false
    });
    if verdict == Err(DropReason::NoRule) {
        if let Some((proto, src, sport, dst, dport)) = seen {
            flows.use_flow((proto, dst, dport, src, sport), true);
            return true;
        }
    }
    false
}

fn reference(
    rules: &[Rule],
    local: &[IpNet],
    p: &[u8],
    mut flows: Option<&mut ReferenceFlows>,
) -> Result<(), DropReason> {
    reference_inner(rules, local, p, &mut |(proto, src, sport, dst, dport)| {
        flows
            .as_mut()
            .is_some_and(|f| f.use_flow((proto, src, sport, dst, dport), false))
    })
}

/// The model; `reply` is asked, for a UDP or SCTP packet past the local-nets check, whether
/// (protocol, source, source port, destination, destination port) answers a recorded flow.
fn reference_inner(
    rules: &[Rule],
    local: &[IpNet],
    p: &[u8],
    reply: &mut dyn FnMut(RefFlow) -> bool,
) -> Result<(), DropReason> {
    use DropReason::*;
    if p.is_empty() {
        return Ok(());
    }
    if p.len() < 20 {
        return Err(TooShort);
    }
    let version = p.first().map_or(0, |b| b >> 4);
    // (src, dst, protocol, transport bytes or None for a later fragment, v4 more-fragments)
    let (src, dst, mut protocol, l4, mf) = match version {
        4 => {
            let ihl = usize::from(p.first().map_or(0, |b| b & 15)) * 4;
            if ihl < 20 {
                return Err(Malformed);
            }
            let total = usize::from(be16(p, 2).ok_or(Truncated)?);
            if p.len() < ihl {
                return Err(Truncated);
            }
            if total > p.len() {
                return Err(Truncated);
            }
            if total < ihl {
                return Err(Malformed);
            }
            let frag = be16(p, 6).ok_or(Truncated)?;
            let offset = frag & 0x1fff;
            let src = addr(p, 12, false).ok_or(Truncated)?;
            let dst = addr(p, 16, false).ok_or(Truncated)?;
            let protocol = p.get(9).copied().ok_or(Truncated)?;
            if offset != 0 && offset < 10 {
                return Err(FragmentOverlap);
            }
            let l4 = (offset == 0).then(|| p.get(ihl..total).unwrap_or_default());
            (src, dst, protocol, l4, frag & 0x2000 != 0)
        }
        6 => {
            if p.len() < 40 {
                return Err(Truncated);
            }
            let end = 40 + usize::from(be16(p, 4).ok_or(Truncated)?);
            let body = p.get(40..end).ok_or(Truncated)?;
            let src = addr(p, 8, true).ok_or(Truncated)?;
            let dst = addr(p, 24, true).ok_or(Truncated)?;
            let nh = p.get(6).copied().ok_or(Truncated)?;
            if nh == 44 {
                if body.len() < 8 {
                    return Err(Truncated);
                }
                let offset = be16(body, 2).ok_or(Truncated)? >> 3;
                let inner = body.first().copied().ok_or(Truncated)?;
                if offset != 0 && offset < 10 {
                    return Err(FragmentOverlap);
                }
                let l4 = (offset == 0).then(|| body.get(8..).unwrap_or_default());
                (src, dst, inner, l4, false)
            } else {
                (src, dst, nh, Some(body), false)
            }
        }
        _ => return Err(BadVersion),
    };
    let v6 = version == 6;
    let icmp = if v6 { proto::ICMPV6 } else { proto::ICMPV4 };
    let mut icmp_type = None;
    let mut tcp_flags = 0u8;
    let mut port = None;
    let mut sport = None;
    if let Some(t) = l4 {
        let need = match protocol {
            0 | 255 => return Err(UnknownProtocol),
            p if p == icmp => 4,
            proto::IGMP if !v6 => 8,
            proto::TCP => 20,
            proto::UDP => 8,
            proto::SCTP => 12,
            proto::TSMP if mf => return Err(UnknownProtocol),
            proto::TSMP => 7,
            _ => 0,
        };
        if t.len() < need {
            return Err(Truncated);
        }
        if protocol == proto::TCP {
            let doff = usize::from(t.get(12).map_or(0, |b| b >> 4)) * 4;
            if doff < 20 {
                return Err(Malformed);
            }
            if t.len() < doff {
                return Err(Truncated);
            }
            tcp_flags = t.get(13).copied().unwrap_or(0);
        }
        if matches!(protocol, proto::TCP | proto::UDP | proto::SCTP) {
            port = be16(t, 2);
            sport = be16(t, 0);
        }
        if protocol == icmp && t.len() >= 8 {
            icmp_type = Some((
                t.first().copied().unwrap_or(0),
                t.get(1).copied().unwrap_or(0),
            ));
        }
    } else {
        protocol = 255;
    }

    let dst_v4 = match dst {
        IpAddr::V4(a) => Some((a, true)),
        IpAddr::V6(a) => a.to_ipv4_mapped().map(|m| (m, false)),
    };
    match (dst, dst_v4) {
        (_, Some((a, real))) => {
            if a.octets()[0] >= 224 && a.octets()[0] <= 239 {
                return Err(Multicast);
            }
            if a.octets()[0] == 169
                && a.octets()[1] == 254
                && !(real && a.octets() == [169, 254, 169, 254])
            {
                return Err(LinkLocal);
            }
        }
        (IpAddr::V6(a), None) => {
            if a.octets()[0] == 0xff {
                return Err(Multicast);
            }
            if a.octets()[0] == 0xfe && a.octets()[1] & 0xc0 == 0x80 {
                return Err(LinkLocal);
            }
        }
        _ => {}
    }
    if l4.is_none() {
        return Ok(());
    }
    if !local.iter().any(|n| n.contains(dst)) {
        return Err(NotLocal);
    }
    let src_in = |r: &Rule| r.srcs.iter().any(|n| n.contains(src));
    let ok = if protocol == icmp {
        let free = match icmp_type {
            Some((t, c)) if v6 => (t == 129 && c == 0) || (1..=4).contains(&t),
            Some((t, c)) => (t == 0 && c == 0) || [3, 11, 12, 18].contains(&t),
            None => false,
        };
        free || rules
            .iter()
            .any(|r| src_in(r) && r.dsts.iter().any(|d| d.net.contains(dst)))
    } else if protocol == proto::TSMP {
        true
    } else if let Some(port) = port {
        let is_reply = protocol != proto::TCP
            && reply((
                protocol,
                bytes16(src),
                sport.unwrap_or(0),
                bytes16(dst),
                port,
            ));
        is_reply
            || (protocol == proto::TCP && tcp_flags & 0x12 != 0x02)
            || rules.iter().any(|r| {
                r.protocols.contains(protocol)
                    && src_in(r)
                    && r.dsts
                        .iter()
                        .any(|d| d.net.contains(dst) && d.ports.contains(port))
            })
    } else {
        rules.iter().any(|r| {
            r.protocols.contains(protocol)
                && src_in(r)
                && r.dsts
                    .iter()
                    .any(|d| d.net.contains(dst) && d.ports == PortRange::ALL)
        })
    };
    if ok {
        Ok(())
    } else {
        Err(NoRule)
    }
}

fn wire_rule(srcs: &[&str], dsts: &[(&str, u16, u16)], protos: &[i64]) -> FilterRule {
    FilterRule {
        src_ips: srcs.iter().map(|s| (*s).to_owned()).collect(),
        src_bits: None,
        dst_ports: dsts
            .iter()
            .map(|(ip, first, last)| NetPortRange {
                ip: (*ip).to_owned(),
                bits: None,
                ports: PortRange {
                    first: *first,
                    last: *last,
                },
            })
            .collect(),
        ip_proto: protos.to_vec(),
    }
}

/// The three rule sets every fuzz input runs under: a mixed one, allow-all, deny-all.
pub fn fuzz_rule_sets() -> [Vec<FilterRule>; 3] {
    [
        vec![
            wire_rule(
                &["100.64.0.0/10", "fd7a:115c:a1e0::/48"],
                &[("*", 22, 22), ("100.64.0.2", 1000, 2000)],
                &[],
            ),
            wire_rule(
                &["10.0.0.1-10.0.0.9"],
                &[("10.1.0.0/16", 0, 65535)],
                &[47, 132, 43],
            ),
        ],
        vec![wire_rule(&["*"], &[("*", 0, 65535)], &[])],
        vec![],
    ]
}

/// The local nets of the fuzz target.
pub fn fuzz_local() -> Vec<IpNet> {
    [
        "100.64.0.2",
        "10.1.0.0",
        "fd7a:115c:a1e0::2",
        "169.254.169.254",
        "::ffff:100.64.0.2",
    ]
    .iter()
    .zip([32u8, 16, 128, 32, 128])
    .filter_map(|(a, l)| IpNet::new(a.parse().ok()?, l))
    .collect()
}

/// The fuzz target's invariants for one input, a packet run under each of
/// [`fuzz_rule_sets`]. The matcher must not panic and must agree with [`reference_verdict`]; a
/// packet whose verdict needs no rule (anything but [`DropReason::NoRule`] or an accept that
/// a rule gave) must get the same verdict under every rule set. Sent as an outbound packet,
/// it must record a flow exactly when the model does, and its verdict as an inbound packet
/// afterwards (with the cache) must be the model's.
///
/// # Errors
/// A [`Violation`] naming the broken invariant.
pub fn check_inbound(data: &[u8]) -> Result<(), Violation> {
    let packet = data;
    let local = fuzz_local();
    let mut verdicts = Vec::new();
    for (set, wire) in fuzz_rule_sets().iter().enumerate() {
        let compiled = compile(wire).map_err(|e| Violation(e.to_string()))?;
        let filter = Filter::new(&compiled.rules, local.iter().copied());
        let got = filter.check_inbound(packet);
        let want = reference_verdict(&compiled.rules, &local, packet);
        if got != want {
            return Err(Violation(format!(
                "rule set {set}: matcher {got:?}, reference {want:?}"
            )));
        }
        verdicts.push(got);
    }
    let filter = Filter::deny_all(local.iter().copied());
    let mut flows = crate::FlowTable::with_capacity(4);
    let mut model = ReferenceFlows::new(4);
    let recorded = filter.check_outbound(packet, &mut flows);
    if recorded != reference_outbound(packet, &mut model) {
        return Err(Violation(format!("outbound: matcher recorded {recorded}")));
    }
    let got = filter.check_inbound_with(packet, &mut flows);
    let want = reference_verdict_with(&[], &local, packet, &mut model);
    if got != want {
        return Err(Violation(format!(
            "inbound with flows: matcher {got:?}, reference {want:?}"
        )));
    }
    // Allow-all accepts everything deny-all accepts; deny-all drops only what allow-all
    // drops or for lack of a rule.
    let (all, none) = (verdicts.get(1), verdicts.get(2));
    if let (Some(all), Some(none)) = (all, none) {
        if *none == Verdict::Accept && *all != Verdict::Accept {
            return Err(Violation(format!("deny-all accepts, allow-all {all:?}")));
        }
        if let Verdict::Drop(r) = all {
            if *none != Verdict::Drop(*r) && *r != DropReason::NoRule {
                return Err(Violation(format!("allow-all {all:?}, deny-all {none:?}")));
            }
        }
    }
    Ok(())
}
