//! Tailnet address allocation: one IPv4 and one IPv6 address per node, sequential from the
//! start of each configured prefix, never reused while a node holds it.
//!
//! Sequential (as Headscale's default) rather than random: addresses are stable and
//! predictable in a lab, and the allocator needs no entropy. Reserved addresses are never
//! handed out: the network address, the quad-100 service addresses (`100.100.100.0/24`,
//! `fd7a:115c:a1e0::53`), the ChromeOS VM range `100.115.92.0/23` (protocol reference §11.1),
//! and in IPv4 the prefix's last (broadcast-looking) address.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

/// How many addresses the allocator tries before it reports the prefix full. Bounds the work
/// of one allocation in a nearly full or very large prefix.
const MAX_PROBES: u32 = 1 << 20;

/// An IPv4 prefix to allocate from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V4Range {
    /// First address of the prefix.
    pub net: Ipv4Addr,
    /// Prefix length (at most 30).
    pub len: u8,
}

/// An IPv6 prefix to allocate from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V6Range {
    /// First address of the prefix.
    pub net: Ipv6Addr,
    /// Prefix length (at most 126).
    pub len: u8,
}

/// Tailscale's CGNAT range `100.64.0.0/10`.
pub const DEFAULT_V4: V4Range = V4Range {
    net: Ipv4Addr::new(100, 64, 0, 0),
    len: 10,
};
/// Tailscale's ULA range `fd7a:115c:a1e0::/48`.
pub const DEFAULT_V6: V6Range = V6Range {
    net: Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0),
    len: 48,
};

fn v4_reserved(a: Ipv4Addr) -> bool {
    let o = a.octets();
    (o[0] == 100 && o[1] == 100 && o[2] == 100)
        || (o[0] == 100 && o[1] == 115 && (o[2] & 0xfe) == 92)
}

impl V4Range {
    /// The range, with `net` masked to `len`; `None` if `len` leaves no room (> 30).
    pub fn new(net: Ipv4Addr, len: u8) -> Option<Self> {
        if len > 30 {
            return None;
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        Some(Self {
            net: Ipv4Addr::from(u32::from(net) & mask),
            len,
        })
    }

    /// Whether `a` lies inside.
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
        u32::from(a) & mask == u32::from(self.net)
    }

    /// The first free address, skipping `used` and the reserved ones.
    pub fn allocate(&self, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let base = u32::from(self.net);
        let size = 1u64 << (32 - u32::from(self.len));
        let last = size.saturating_sub(1);
        (1..last.min(u64::from(MAX_PROBES)))
            .filter_map(|i| u32::try_from(i).ok())
            .map(|i| Ipv4Addr::from(base.wrapping_add(i)))
            .find(|a| !v4_reserved(*a) && !used.contains(a))
    }
}

impl V6Range {
    /// The range, with `net` masked to `len`; `None` if `len` leaves no room (> 126).
    pub fn new(net: Ipv6Addr, len: u8) -> Option<Self> {
        if len > 126 {
            return None;
        }
        let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
        Some(Self {
            net: Ipv6Addr::from(u128::from(net) & mask),
            len,
        })
    }

    /// Whether `a` lies inside.
    pub fn contains(&self, a: Ipv6Addr) -> bool {
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.len))
            .unwrap_or(0);
        u128::from(a) & mask == u128::from(self.net)
    }

    /// The first free address, skipping `used` and the reserved ones.
    pub fn allocate(&self, used: &BTreeSet<Ipv6Addr>) -> Option<Ipv6Addr> {
        let base = u128::from(self.net);
        let size_bits = 128 - u32::from(self.len);
        let last: u128 = if size_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << size_bits) - 1
        };
        let quad100 = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0x53);
        (1..=last.min(u128::from(MAX_PROBES)))
            .map(|i| Ipv6Addr::from(base.wrapping_add(i)))
            .find(|a| *a != quad100 && !used.contains(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_and_skips_used_and_reserved() {
        let mut used = BTreeSet::new();
        let a = DEFAULT_V4.allocate(&used).unwrap();
        assert_eq!(a, Ipv4Addr::new(100, 64, 0, 1));
        used.insert(a);
        assert_eq!(
            DEFAULT_V4.allocate(&used).unwrap(),
            Ipv4Addr::new(100, 64, 0, 2)
        );
        let r = V4Range::new(Ipv4Addr::new(100, 100, 100, 0), 23).unwrap();
        assert_eq!(
            r.allocate(&BTreeSet::new()).unwrap(),
            Ipv4Addr::new(100, 100, 101, 0)
        );
        let v6 =
            V6Range::new(Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0x52), 120).unwrap();
        let mut u6 = BTreeSet::new();
        for _ in 0..0x60 {
            let a = v6.allocate(&u6).unwrap();
            assert_ne!(a.segments()[7], 0x53);
            u6.insert(a);
        }
    }

    #[test]
    fn a_full_range_says_so() {
        let r = V4Range::new(Ipv4Addr::new(10, 0, 0, 0), 30).unwrap();
        let mut used = BTreeSet::new();
        used.insert(r.allocate(&used).unwrap());
        used.insert(r.allocate(&used).unwrap());
        assert_eq!(r.allocate(&used), None);
        assert!(V4Range::new(Ipv4Addr::new(10, 0, 0, 0), 31).is_none());
        assert!(r.contains(Ipv4Addr::new(10, 0, 0, 3)));
        assert!(!r.contains(Ipv4Addr::new(10, 0, 0, 4)));
    }
}
