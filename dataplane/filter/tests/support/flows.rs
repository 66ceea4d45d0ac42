//! Flows between this node (the table's local nets) and a few peers, as outbound packets and
//! the inbound packets that answer them, for the reverse-flow cache tests of the matcher and
//! of the tc programs. Endpoints come from small pools so that generated sequences revisit
//! flows, answer them, miss them by one field and evict them.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super as support;

/// The transport of a flow's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Udp,
    Sctp,
    TcpSyn,
    TcpAck,
    IcmpEcho,
}

/// Address family of a flow: IPv4, IPv6, or IPv6 packets carrying IPv4-mapped addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fam {
    V4,
    V6,
    Mapped,
}

/// One flow: this node's address and port, a peer's address and port, the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub fam: Fam,
    pub local: usize,
    pub remote: usize,
    pub local_port: u16,
    pub remote_port: u16,
    pub kind: Kind,
}

/// Local addresses (in the table's local nets, or — mapped — in [`local_with_mapped`]).
const LOCAL4: [Ipv4Addr; 2] = [Ipv4Addr::new(100, 64, 0, 2), Ipv4Addr::new(10, 1, 0, 5)];
/// Peers: one with no rule, one in the table's UDP rule source range, one with an SCTP rule.
const REMOTE4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(100, 64, 0, 1),
    Ipv4Addr::new(100, 64, 0, 10),
    Ipv4Addr::new(100, 64, 0, 40),
];
/// Ports: DNS, the table's UDP rule range edge, the SCTP rule port, two ephemeral ports.
pub const PORTS: [u16; 5] = [53, 1000, 5000, 40000, 40001];

fn v6(i: usize, last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, i as u16, last)
}

/// The table's local nets plus the IPv4-mapped forms of the IPv4 local addresses.
pub fn local_with_mapped() -> Vec<weft_filter::IpNet> {
    let mut l = support::table_local();
    for a in LOCAL4 {
        l.push(weft_filter::IpNet::host(IpAddr::V6(a.to_ipv6_mapped())));
    }
    l
}

impl Flow {
    /// (local, remote) addresses.
    pub fn addrs(&self) -> (IpAddr, IpAddr) {
        let l4 = LOCAL4[self.local % LOCAL4.len()];
        let r4 = REMOTE4[self.remote % REMOTE4.len()];
        match self.fam {
            Fam::V4 => (IpAddr::V4(l4), IpAddr::V4(r4)),
            // fd7a:115c:a1e0::2 is local; the peers are ::1, ::1:1 and ::2:1.
            Fam::V6 => (
                IpAddr::V6(v6(0, 2 + 0x100 * (self.local as u16 % 2))),
                IpAddr::V6(v6(self.remote % 3, 1)),
            ),
            Fam::Mapped => (
                IpAddr::V6(l4.to_ipv6_mapped()),
                IpAddr::V6(r4.to_ipv6_mapped()),
            ),
        }
    }

    /// The packet this node sends (`outbound`) or receives in this flow.
    pub fn packet(&self, outbound: bool) -> Vec<u8> {
        let (local, remote) = self.addrs();
        let (src, dst, sport, dport) = if outbound {
            (local, remote, self.local_port, self.remote_port)
        } else {
            (remote, local, self.remote_port, self.local_port)
        };
        let (proto, body) = match self.kind {
            Kind::Udp => (17, support::udp(sport, dport)),
            Kind::Sctp => (132, support::sctp(sport, dport)),
            Kind::TcpSyn => (6, support::tcp(sport, dport, 0x02)),
            Kind::TcpAck => (6, support::tcp(sport, dport, 0x10)),
            Kind::IcmpEcho if self.fam == Fam::V4 => (1, support::icmp(8, 0)),
            Kind::IcmpEcho => (58, support::icmp(128, 0)),
        };
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => support::ipv4(proto, s, d, 0, &body),
            (IpAddr::V6(s), IpAddr::V6(d)) => support::ipv6(proto, s, d, &body),
            _ => unreachable!("one family per flow"),
        }
    }
}

pub fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => Just(Kind::Udp),
        2 => Just(Kind::Sctp),
        1 => Just(Kind::TcpSyn),
        1 => Just(Kind::TcpAck),
        1 => Just(Kind::IcmpEcho),
    ]
}

pub fn flow() -> impl Strategy<Value = Flow> {
    (
        prop_oneof![Just(Fam::V4), Just(Fam::V6), Just(Fam::Mapped)],
        0usize..2,
        0usize..3,
        0usize..PORTS.len(),
        0usize..PORTS.len(),
        kind(),
    )
        .prop_map(|(fam, local, remote, lp, rp, kind)| Flow {
            fam,
            local,
            remote,
            local_port: PORTS[lp],
            remote_port: PORTS[rp],
            kind,
        })
}

/// A sequence of packets: `true` = outbound, `false` = inbound. Each sequence draws its
/// packets from a pool of up to 10 flows, so that replies to earlier packets are common.
pub fn ops(max: usize) -> impl Strategy<Value = Vec<(bool, Flow)>> {
    (
        prop::collection::vec(flow(), 1..10),
        prop::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 1..max),
    )
        .prop_map(|(pool, picks)| {
            picks
                .into_iter()
                .map(|(out, i)| (out, pool[i.index(pool.len())]))
                .collect()
        })
}
