//! Generators of rule sets, local nets and packets biased toward the rules (shared by the
//! reference-model test and the eBPF parity test): addresses at the first and last address of
//! rule and local prefixes (and one past them), ports at range edges ±1, protocols the rules
//! name, so accepts are about as frequent as drops.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::manual_is_multiple_of
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use weft_filter::{Dst, IpNet, PortRange, ProtoSet, Rule};

use super as support;

pub fn net_strategy(v6: bool) -> impl Strategy<Value = IpNet> {
    let w: u8 = if v6 { 128 } else { 32 };
    // A small address space (a few high bits vary) so generated prefixes overlap often.
    (any::<u8>(), any::<u16>(), 0..=w).prop_map(move |(hi, lo, len)| {
        let bits: u128 = if v6 {
            (0xfd7a_u128 << 112) | (u128::from(hi & 3) << 64) | u128::from(lo)
        } else {
            (100u128 << 24) | (64 << 16) | (u128::from(hi & 3) << 8) | u128::from(lo & 0xff)
        };
        let mask = if len == 0 {
            0
        } else {
            let all = if v6 { u128::MAX } else { u128::from(u32::MAX) };
            all & !(all.checked_shr(u32::from(len)).unwrap_or(0))
        };
        let addr = if v6 {
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        } else {
            IpAddr::V4(Ipv4Addr::from((bits & mask) as u32))
        };
        IpNet::new(addr, len).unwrap()
    })
}

pub fn any_net() -> impl Strategy<Value = IpNet> {
    prop_oneof![net_strategy(false), net_strategy(true)]
}

pub fn ports() -> impl Strategy<Value = PortRange> {
    prop_oneof![
        2 => Just(PortRange::ALL),
        5 => (any::<u16>(), 0u16..300).prop_map(|(f, n)| PortRange {
            first: f,
            last: f.saturating_add(n)
        }),
        // Possibly backwards (first > last), which matches no port.
        1 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| PortRange { first: a, last: b }),
    ]
}

pub const PROTOS: [u8; 12] = [6, 17, 1, 58, 132, 99, 47, 60, 44, 43, 0, 255];

/// A rule, mostly of one family (sources and destinations), sometimes mixed.
pub fn rule() -> impl Strategy<Value = Rule> {
    any::<bool>()
        .prop_flat_map(|v6| {
            let net = move || prop_oneof![4 => net_strategy(v6), 1 => any_net()];
            (
                prop::option::of(prop::collection::vec(
                    prop::sample::select(&PROTOS[..]),
                    1..4,
                )),
                prop::collection::vec(net(), 1..4),
                prop::collection::vec((net(), ports()), 1..4),
            )
        })
        .prop_map(|(protos, srcs, dsts)| {
            let protocols = match protos {
                None => ProtoSet::default_protocols(),
                Some(ps) => {
                    let mut s = ProtoSet::default();
                    ps.into_iter().for_each(|p| s.insert(p));
                    s
                }
            };
            Rule {
                protocols,
                srcs,
                src_caps: vec![],
                dsts: dsts
                    .into_iter()
                    .map(|(net, ports)| Dst { net, ports })
                    .collect(),
            }
        })
}

/// An address of family `v6` picked from `nets`: its first or last address, one inside,
/// one just before or after it, or anywhere.
pub fn pick_addr(nets: &[IpNet], v6: bool, choice: u8, noise: u128) -> IpAddr {
    let fam: Vec<&IpNet> = nets.iter().filter(|n| n.is_v6() == v6).collect();
    let w: u32 = if v6 { 128 } else { 32 };
    let bits = if fam.is_empty() || choice % 8 == 7 {
        noise
    } else {
        let n = fam[usize::from(choice / 8) % fam.len()];
        let base = match n.addr() {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        let size_minus_1 = (1u128 << (w - u32::from(n.prefix_len())).min(127)) - 1;
        match choice % 8 {
            0 | 1 => base,
            2 | 3 => base.wrapping_add(size_minus_1),
            4 | 5 => base.wrapping_add(noise & size_minus_1),
            _ if choice & 0x80 != 0 => base.wrapping_sub(1),
            _ => base.wrapping_add(size_minus_1).wrapping_add(1),
        }
    };
    if v6 {
        IpAddr::V6(Ipv6Addr::from(bits))
    } else {
        IpAddr::V4(Ipv4Addr::from(bits as u32))
    }
}

#[derive(Debug, Clone)]
pub struct PacketPlan {
    pub v6: bool,
    pub src_choice: u8,
    pub dst_choice: u8,
    pub noise: (u128, u128),
    pub proto: u8,
    pub port_choice: u8,
    pub port_noise: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub fragment: u8,
    pub cut: Option<usize>,
    pub flip: Option<(usize, u8)>,
}

pub fn plan() -> impl Strategy<Value = PacketPlan> {
    (
        (
            any::<bool>(),
            any::<u8>(),
            any::<u8>(),
            any::<(u128, u128)>(),
        ),
        (
            prop_oneof![prop::sample::select(&PROTOS[..]), any::<u8>()],
            any::<u8>(),
            any::<u16>(),
        ),
        (
            prop::sample::select(&[0x02u8, 0x10, 0x12, 0x00, 0x03][..]),
            prop::sample::select(&[0u8, 3, 8, 11, 12, 18, 128, 129, 2, 135][..]),
            any::<u8>(),
        ),
        (
            prop::option::weighted(0.05, 0usize..80),
            prop::option::weighted(0.05, (0usize..80, any::<u8>())),
        ),
    )
        .prop_map(
            |(
                (v6, src_choice, dst_choice, noise),
                (proto, port_choice, port_noise),
                (tcp_flags, icmp_type, fragment),
                (cut, flip),
            )| PacketPlan {
                v6,
                src_choice,
                dst_choice,
                noise,
                proto,
                port_choice,
                port_noise,
                tcp_flags,
                icmp_type,
                fragment,
                cut,
                flip,
            },
        )
}

pub fn build(p: &PacketPlan, rules: &[Rule], local: &[IpNet]) -> Vec<u8> {
    // Targeted (most plans): one rule, one of its destinations, a source of the same family
    // from that rule, a port at that destination's edges. Otherwise anything from the pools.
    let target = rules.get(usize::from(p.src_choice) % rules.len().max(1));
    let target_dst = target.and_then(|r| {
        r.dsts
            .get(usize::from(p.dst_choice) % r.dsts.len().max(1))
            .filter(|d| r.srcs.iter().any(|s| s.is_v6() == d.net.is_v6()))
    });
    let (v6, srcs, dsts, edges): (bool, Vec<IpNet>, Vec<IpNet>, Vec<u16>) =
        match (target, target_dst) {
            (Some(r), Some(d)) if p.port_noise % 8 != 0 => (
                d.net.is_v6(),
                r.srcs.clone(),
                vec![d.net],
                vec![d.ports.first, d.ports.last],
            ),
            _ => {
                let mut dsts: Vec<IpNet> = rules
                    .iter()
                    .flat_map(|r| r.dsts.iter().map(|d| d.net))
                    .collect();
                dsts.extend_from_slice(local);
                (
                    p.v6,
                    rules.iter().flat_map(|r| r.srcs.iter().copied()).collect(),
                    dsts,
                    rules
                        .iter()
                        .flat_map(|r| r.dsts.iter())
                        .flat_map(|d| [d.ports.first, d.ports.last])
                        .collect(),
                )
            }
        };
    let src = pick_addr(&srcs, v6, p.src_choice, p.noise.0);
    let dst = pick_addr(&dsts, v6, p.dst_choice, p.noise.1);
    // Mostly a protocol the targeted rule names (SYN-only for TCP), else the plan's.
    let named: Vec<u8> = (0..=255u8)
        .filter(|x| target.is_some_and(|r| r.protocols.contains(*x)))
        .collect();
    let proto = if named.is_empty() || p.port_noise % 3 == 0 {
        p.proto
    } else {
        named[usize::from(p.port_choice) % named.len()]
    };
    let tcp_flags = if p.port_noise % 5 < 2 {
        0x02
    } else {
        p.tcp_flags
    };
    // An edge, or one past it, or one before it, or anything.
    let port = if edges.is_empty() || p.port_choice % 8 == 7 {
        p.port_noise
    } else {
        let e = edges[usize::from(p.port_choice / 8) % edges.len()];
        match p.port_choice % 8 {
            0..=3 => e,
            4 | 5 => e.wrapping_sub(1),
            _ => e.wrapping_add(1),
        }
    };
    let icmp_proto = if v6 { 58 } else { 1 };
    let l4 = match proto {
        6 => support::tcp(40000, port, tcp_flags),
        17 => support::udp(40000, port),
        132 => support::sctp(40000, port),
        x if x == icmp_proto => support::icmp(p.icmp_type, p.icmp_type & 1),
        _ => vec![0; 16],
    };
    // Fragments: 0..=199 none; then first fragment, later fragment, overlapping offset.
    let (frag_offset, more) = match p.fragment {
        0..=219 => (0u16, false),
        220..=231 => (0, true),
        232..=243 => (10 + u16::from(p.fragment % 7), p.fragment % 2 == 0),
        _ => (u16::from(p.fragment % 10), true),
    };
    let mut packet = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ff = frag_offset | if more { 0x2000 } else { 0 };
            support::ipv4(proto, s, d, ff, &l4)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            if p.fragment >= 220 {
                let payload = [support::frag6(proto, frag_offset, more), l4].concat();
                support::ipv6(44, s, d, &payload)
            } else {
                support::ipv6(proto, s, d, &l4)
            }
        }
        _ => unreachable!(),
    };
    if let Some((i, b)) = p.flip {
        if let Some(x) = packet.get_mut(i) {
            *x ^= b;
        }
    }
    if let Some(c) = p.cut {
        packet.truncate(c);
    }
    packet
}

/// Rules, local nets (random ones plus, mostly, the rules' destinations) and a packet plan.
pub fn case() -> impl Strategy<Value = (Vec<Rule>, Vec<IpNet>, PacketPlan)> {
    (
        prop::collection::vec(rule(), 0..5),
        prop::collection::vec(any_net(), 0..3),
        any::<u32>(),
        plan(),
    )
        .prop_map(|(rules, mut local, include, plan)| {
            let dsts = rules.iter().flat_map(|r| r.dsts.iter().map(|d| d.net));
            for (i, net) in dsts.enumerate() {
                if include.rotate_left(i as u32) & 7 != 0 {
                    local.push(net);
                }
            }
            (rules, local, plan)
        })
}
