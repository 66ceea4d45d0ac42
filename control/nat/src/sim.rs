//! Simulated NATs for the tests of this crate and of its users: the two kinds the namespace
//! tests build with nftables, modelled on Linux conntrack.
//!
//! Both kinds filter the same way: an inbound datagram passes only if the node sent to exactly
//! its source address and port from the mapping it arrives at (address- and port-dependent
//! filtering, what `masquerade` gives). They differ in mapping: [`NatKind::Easy`] keeps the
//! local port for every destination when it can (`masquerade`), [`NatKind::Hard`] picks a random
//! public port in its range for every new destination (`masquerade fully-random`).
//! Deterministic: the random ports come from a seeded generator.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// The mapping behaviour of a simulated NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// No NAT: the node's address is public and nothing is filtered.
    None,
    /// Endpoint-independent mapping with port preservation.
    Easy,
    /// A random public port in `lo..=hi` per (local port, destination).
    Hard {
        /// Lowest public port.
        lo: u16,
        /// Highest public port.
        hi: u16,
    },
}

/// One NAT in front of one node.
#[derive(Debug)]
pub struct Nat {
    kind: NatKind,
    public_ip: IpAddr,
    rng: ChaCha20Rng,
    /// (local port, destination) → public port.
    out: BTreeMap<(u16, SocketAddr), u16>,
    /// (public port, remote) → local port: the conntrack reply direction.
    back: BTreeMap<(u16, SocketAddr), u16>,
    /// Datagrams refused inbound.
    pub dropped: u64,
}

impl Nat {
    /// A NAT of `kind` with public address `public_ip`.
    pub fn new(kind: NatKind, public_ip: IpAddr, seed: [u8; 32]) -> Self {
        Self {
            kind,
            public_ip,
            rng: ChaCha20Rng::from_seed(seed),
            out: BTreeMap::new(),
            back: BTreeMap::new(),
            dropped: 0,
        }
    }

    /// The public IP.
    pub fn public_ip(&self) -> IpAddr {
        self.public_ip
    }

    /// A datagram leaves from `local_port` to `dst`: the public source it carries, or `None`
    /// when the NAT has no free port for it.
    pub fn outbound(&mut self, local_port: u16, dst: SocketAddr) -> Option<SocketAddr> {
        if self.kind == NatKind::None {
            return Some(SocketAddr::new(self.public_ip, local_port));
        }
        if let Some(&p) = self.out.get(&(local_port, dst)) {
            return Some(SocketAddr::new(self.public_ip, p));
        }
        let port = match self.kind {
            NatKind::None => local_port,
            NatKind::Easy => {
                if self.back.contains_key(&(local_port, dst)) {
                    self.free_port(1024, u16::MAX, dst)?
                } else {
                    local_port
                }
            }
            NatKind::Hard { lo, hi } => self.free_port(lo, hi, dst)?,
        };
        self.out.insert((local_port, dst), port);
        self.back.insert((port, dst), local_port);
        Some(SocketAddr::new(self.public_ip, port))
    }

    /// A datagram from `src` arrives at public port `port`: the local port it is delivered to,
    /// or `None` (dropped, counted) when no mapping expects it.
    pub fn inbound(&mut self, port: u16, src: SocketAddr) -> Option<u16> {
        if self.kind == NatKind::None {
            return Some(port);
        }
        let hit = self.back.get(&(port, src)).copied();
        if hit.is_none() {
            self.dropped += 1;
        }
        hit
    }

    fn free_port(&mut self, lo: u16, hi: u16, dst: SocketAddr) -> Option<u16> {
        let span = u64::from(hi.saturating_sub(lo)) + 1;
        for _ in 0..64 {
            let p = lo.saturating_add(u16::try_from(self.rng.next_u64() % span).ok()?);
            if !self.back.contains_key(&(p, dst)) {
                return Some(p);
            }
        }
        (lo..=hi).find(|p| !self.back.contains_key(&(*p, dst)))
    }
}
