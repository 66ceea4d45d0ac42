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
        self.allocate_after(used, None)
    }

    /// The first free address after `after` (wrapping to the start of the range once), so
    /// that sequential allocation costs O(1) per address instead of a scan from the start;
    /// freed addresses are reused once the range wraps.
    pub fn allocate_after(
        &self,
        used: &BTreeSet<Ipv4Addr>,
        after: Option<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        let base = u32::from(self.net);
        let size = 1u64 << (32 - u32::from(self.len));
        let last = size.saturating_sub(1);
        let start = after
            .filter(|a| self.contains(*a))
            .map_or(1, |a| u64::from(u32::from(a).wrapping_sub(base)) + 1);
        let start = if start >= last { 1 } else { start };
        (start..last)
            .chain(1..start)
            .take(MAX_PROBES as usize)
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
        self.allocate_after(used, None)
    }

    /// As [`V4Range::allocate_after`].
    pub fn allocate_after(
        &self,
        used: &BTreeSet<Ipv6Addr>,
        after: Option<Ipv6Addr>,
    ) -> Option<Ipv6Addr> {
        let base = u128::from(self.net);
        let size_bits = 128 - u32::from(self.len);
        let last: u128 = if size_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << size_bits) - 1
        };
        let quad100 = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0x53);
        let start = after
            .filter(|a| self.contains(*a))
            .map_or(1, |a| u128::from(a).wrapping_sub(base).saturating_add(1));
        let start = if start > last { 1 } else { start };
        (start..=last)
            .chain(1..start)
            .take(MAX_PROBES as usize)
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
    fn allocation_continues_after_the_last_and_wraps() {
        let r = V4Range::new(Ipv4Addr::new(10, 0, 0, 0), 29).unwrap();
        let mut used = BTreeSet::new();
        let a = r.allocate_after(&used, None).unwrap();
        used.insert(a);
        let b = r.allocate_after(&used, Some(a)).unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 0, 0, 2));
        used.insert(b);
        used.remove(&a); // freed
        let c = r.allocate_after(&used, Some(b)).unwrap();
        assert_eq!(
            c,
            Ipv4Addr::new(10, 0, 0, 3),
            "continues, does not reuse at once"
        );
        for x in 3..=6 {
            used.insert(Ipv4Addr::new(10, 0, 0, x));
        }
        assert_eq!(
            r.allocate_after(&used, Some(Ipv4Addr::new(10, 0, 0, 6))),
            Some(Ipv4Addr::new(10, 0, 0, 1)),
            "wraps to the freed address"
        );
        let v6 = DEFAULT_V6;
        let mut u6 = BTreeSet::new();
        let x = v6.allocate_after(&u6, None).unwrap();
        u6.insert(x);
        assert_eq!(v6.allocate_after(&u6, Some(x)).unwrap().segments()[7], 2);
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
