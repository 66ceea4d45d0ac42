//! Tests of the allowed-IPs trie: the kernel self-test's fixed cases, a naive model, churn.
use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// An IPv6 address from four big-endian 32-bit words, like the kernel self-test's `ip6()`.
fn v6(a: u32, b: u32, c: u32, d: u32) -> IpAddr {
    let key = u128::from(a) << 96 | u128::from(b) << 64 | u128::from(c) << 32 | u128::from(d);
    IpAddr::V6(Ipv6Addr::from(key))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Checks every structural invariant of one family's trie.
fn check_trie<T>(trie: &Trie<T>, bits: u8) {
    let mut reached = 0;
    let mut valued = 0;
    let mut stack = vec![(trie.root, None::<(u128, u8, bool)>)];
    while let Some((index, parent)) = stack.pop() {
        if index == NIL {
            continue;
        }
        let node = &trie.nodes[index as usize];
        reached += 1;
        assert!(node.cidr <= bits, "prefix longer than the family");
        assert_eq!(mask(node.key, node.cidr), node.key, "host bits set");
        if let Some((parent_key, parent_cidr, side)) = parent {
            assert!(node.cidr > parent_cidr, "child not longer than parent");
            assert_eq!(
                mask(node.key, parent_cidr),
                parent_key,
                "child outside parent"
            );
            assert_eq!(bit(node.key, parent_cidr), side, "child on the wrong side");
        }
        if node.value.is_some() {
            valued += 1;
        } else {
            assert!(
                node.children.iter().all(|&c| c != NIL),
                "valueless node without two children"
            );
        }
        for (side, child) in [(false, node.children[0]), (true, node.children[1])] {
            stack.push((child, Some((node.key, node.cidr, side))));
        }
    }
    assert_eq!(valued, trie.len, "len is not the number of valued nodes");
    assert_eq!(reached, trie.live_nodes(), "unreachable live nodes");
    assert!(
        reached <= (2 * trie.len).saturating_sub(1),
        "too many nodes"
    );
    let free: BTreeSet<u32> = trie.free.iter().copied().collect();
    assert_eq!(free.len(), trie.free.len(), "slot freed twice");
    for &index in &trie.free {
        let node = &trie.nodes[index as usize];
        assert!(node.value.is_none(), "freed slot keeps its owner alive");
    }
}

fn check<T>(table: &AllowedIps<T>) {
    check_trie(&table.v4, 32);
    check_trie(&table.v6, 128);
}

/// The fixed cases of the kernel's `selftest/allowedips.c`, peers `a`..=`h`.
#[test]
fn kernel_selftest_fixed_table() {
    let mut t = AllowedIps::new();
    let inserts = [
        (v4(192, 168, 4, 0), 24, 'a'),
        (v4(192, 168, 4, 4), 32, 'b'),
        (v4(192, 168, 0, 0), 16, 'c'),
        (v4(192, 95, 5, 64), 27, 'd'),
        // Same prefix once masked: replaces d.
        (v4(192, 95, 5, 65), 27, 'c'),
        (v6(0x26075300, 0x60006b00, 0, 0xc05f0543), 128, 'd'),
        (v6(0x26075300, 0x60006b00, 0, 0), 64, 'c'),
        (v4(0, 0, 0, 0), 0, 'e'),
        (v6(0, 0, 0, 0), 0, 'e'),
        // Replaces e.
        (v6(0, 0, 0, 0), 0, 'f'),
        (v6(0x24046800, 0, 0, 0), 32, 'g'),
        // Needs masking.
        (v6(0x24046800, 0x40040800, 0xdeadbeef, 0xdeadbeef), 64, 'h'),
        (v6(0x24046800, 0x40040800, 0xdeadbeef, 0xdeadbeef), 128, 'a'),
        (v6(0x24446800, 0x40e40800, 0xdeaebeef, 0x0defbeef), 128, 'c'),
        (v6(0x24446800, 0xf0e40800, 0xeeaebeef, 0), 98, 'b'),
        (v4(64, 15, 112, 0), 20, 'g'),
        // Needs masking.
        (v4(64, 15, 123, 211), 25, 'h'),
        (v4(10, 0, 0, 0), 25, 'a'),
        (v4(10, 0, 0, 128), 25, 'b'),
        (v4(10, 1, 0, 0), 30, 'a'),
        (v4(10, 1, 0, 4), 30, 'b'),
        (v4(10, 1, 0, 8), 29, 'c'),
        (v4(10, 1, 0, 16), 29, 'd'),
    ];
    for (addr, cidr, peer) in inserts {
        t.insert(addr, cidr, peer).unwrap();
        check(&t);
    }
    let lookups = [
        (v4(192, 168, 4, 20), 'a'),
        (v4(192, 168, 4, 0), 'a'),
        (v4(192, 168, 4, 4), 'b'),
        (v4(192, 168, 200, 182), 'c'),
        (v4(192, 95, 5, 68), 'c'),
        (v4(192, 95, 5, 96), 'e'),
        (v6(0x26075300, 0x60006b00, 0, 0xc05f0543), 'd'),
        (v6(0x26075300, 0x60006b00, 0, 0xc02e01ee), 'c'),
        (v6(0x26075300, 0x60006b01, 0, 0), 'f'),
        (v6(0x24046800, 0x40040806, 0, 0x1006), 'g'),
        (v6(0x24046800, 0x40040806, 0x1234, 0x5678), 'g'),
        (v6(0x240467ff, 0x40040806, 0x1234, 0x5678), 'f'),
        (v6(0x24046801, 0x40040806, 0x1234, 0x5678), 'f'),
        (v6(0x24046800, 0x40040800, 0x1234, 0x5678), 'h'),
        (v6(0x24046800, 0x40040800, 0, 0), 'h'),
        (v6(0x24046800, 0x40040800, 0x10101010, 0x10101010), 'h'),
        (v6(0x24046800, 0x40040800, 0xdeadbeef, 0xdeadbeef), 'a'),
        (v4(64, 15, 116, 26), 'g'),
        (v4(64, 15, 127, 3), 'g'),
        (v4(64, 15, 123, 1), 'g'),
        (v4(64, 15, 123, 128), 'h'),
        (v4(64, 15, 123, 129), 'h'),
        (v4(10, 0, 0, 52), 'a'),
        (v4(10, 0, 0, 220), 'b'),
        (v4(10, 1, 0, 2), 'a'),
        (v4(10, 1, 0, 6), 'b'),
        (v4(10, 1, 0, 10), 'c'),
        (v4(10, 1, 0, 20), 'd'),
    ];
    for (addr, peer) in lookups {
        assert_eq!(t.lookup(addr), Some(&peer), "lookup {addr}");
    }

    for first in [1, 64, 128, 192, 255] {
        t.insert(v4(first, 0, 0, 0), 32, 'a').unwrap();
    }
    t.remove_by_value(&'a');
    check(&t);
    for first in [1, 64, 128, 192, 255] {
        assert_ne!(t.lookup(v4(first, 0, 0, 0)), Some(&'a'));
    }
    assert!(t.prefixes_of(&'a').is_empty());

    t.clear();
    assert!(t.is_empty());
    assert_eq!(t.node_count(), 0);
    t.insert(v4(192, 168, 0, 0), 16, 'a').unwrap();
    t.insert(v4(192, 168, 0, 0), 24, 'a').unwrap();
    t.remove_by_value(&'a');
    check(&t);
    assert_ne!(t.lookup(v4(192, 168, 0, 1)), Some(&'a'));
    assert!(t.is_empty());
    assert_eq!(t.node_count(), 0);
}

/// The kernel's deep-trie case: 128 host routes, each all ones but for one bit, so the trie
/// reaches every depth; removal must take it all down.
#[test]
fn kernel_selftest_every_depth() {
    let mut t = AllowedIps::new();
    let addrs: Vec<IpAddr> = (0..128)
        .map(|i| IpAddr::V6(Ipv6Addr::from(!(1u128 << i))))
        .collect();
    for &addr in &addrs {
        t.insert(addr, 128, 'a').unwrap();
        check(&t);
    }
    assert_eq!(t.len(), 128);
    for &addr in &addrs {
        assert_eq!(t.lookup(addr), Some(&'a'));
    }
    assert_eq!(t.lookup(IpAddr::V6(Ipv6Addr::from(u128::MAX))), None);
    t.remove_by_value(&'a');
    check(&t);
    assert!(t.is_empty());
    assert_eq!(t.node_count(), 0);
}

/// The kernel's listing case: a peer's prefixes come back masked, once each.
#[test]
fn kernel_selftest_listing() {
    let mut t = AllowedIps::new();
    t.insert(v4(192, 95, 5, 93), 27, 'a').unwrap();
    t.insert(v6(0x26075300, 0x60006b00, 0, 0xc05f0543), 128, 'a')
        .unwrap();
    t.insert(v4(10, 1, 0, 20), 29, 'a').unwrap();
    t.insert(v6(0x26075300, 0x6d8a6bf8, 0xdab1f1df, 0xc05f1523), 83, 'a')
        .unwrap();
    t.insert(v6(0x26075300, 0x6d8a6bf8, 0xdab1f1df, 0xc05f1523), 21, 'a')
        .unwrap();
    t.insert(v4(10, 0, 0, 0), 8, 'b').unwrap();
    check(&t);
    // Deterministic order: IPv4 then IPv6, ascending, shorter first.
    assert_eq!(
        t.prefixes_of(&'a'),
        vec![
            (v4(10, 1, 0, 16), 29),
            (v4(192, 95, 5, 64), 27),
            (v6(0x26075000, 0, 0, 0), 21),
            (v6(0x26075300, 0x60006b00, 0, 0xc05f0543), 128),
            (v6(0x26075300, 0x6d8a6bf8, 0xdab1e000, 0), 83),
        ]
    );
    assert_eq!(t.prefixes_of(&'b'), vec![(v4(10, 0, 0, 0), 8)]);
    assert!(t.prefixes_of(&'z').is_empty());
}

#[test]
fn host_bits_are_masked() {
    let mut t = AllowedIps::new();
    t.insert(ip("10.1.2.3"), 8, 1).unwrap();
    t.insert(ip("fd00::1234"), 16, 2).unwrap();
    t.insert(ip("192.168.1.77"), 32, 3).unwrap();
    assert_eq!(
        t.iter().map(|(a, c, v)| (a, c, *v)).collect::<Vec<_>>(),
        vec![
            (ip("10.0.0.0"), 8, 1),
            (ip("192.168.1.77"), 32, 3),
            (ip("fd00::"), 16, 2)
        ]
    );
    // Removal masks too.
    assert_eq!(t.remove(ip("10.200.0.9"), 8), Some(1));
    assert_eq!(t.remove(ip("fd00:ffff::"), 16), Some(2));
    assert_eq!(t.len(), 1);
}

#[test]
fn default_routes() {
    let mut t = AllowedIps::default();
    assert_eq!(t.lookup(ip("1.2.3.4")), None);
    t.insert(ip("0.0.0.0"), 0, 'a').unwrap();
    assert_eq!(t.lookup(ip("1.2.3.4")), Some(&'a'));
    assert_eq!(t.lookup(ip("255.255.255.255")), Some(&'a'));
    assert_eq!(t.lookup(ip("::1")), None);
    // Host bits under /0 are all bits.
    t.insert(ip("2001:db8::1"), 0, 'b').unwrap();
    assert_eq!(t.lookup(ip("::")), Some(&'b'));
    assert_eq!(t.lookup(ip("ffff::ffff")), Some(&'b'));
    t.insert(ip("10.0.0.0"), 8, 'c').unwrap();
    assert_eq!(t.lookup(ip("10.9.9.9")), Some(&'c'));
    assert_eq!(t.lookup(ip("11.0.0.0")), Some(&'a'));
    assert_eq!(t.remove(ip("9.9.9.9"), 0), Some('a'));
    assert_eq!(t.lookup(ip("11.0.0.0")), None);
    assert_eq!(t.lookup(ip("10.0.0.1")), Some(&'c'));
    check(&t);
}

#[test]
fn v4_and_v4_mapped_v6_are_separate() {
    let mut t = AllowedIps::new();
    t.insert(ip("10.0.0.0"), 8, 'a').unwrap();
    assert_eq!(t.lookup(ip("::ffff:10.1.2.3")), None);
    t.insert(ip("::ffff:0.0.0.0"), 96, 'b').unwrap();
    assert_eq!(t.lookup(ip("::ffff:10.1.2.3")), Some(&'b'));
    assert_eq!(t.lookup(ip("10.1.2.3")), Some(&'a'));
    assert_eq!(t.lookup(ip("11.1.2.3")), None);
    // Same bits, other family: removing one leaves the other.
    t.insert(ip("::a00:0"), 104, 'c').unwrap();
    assert_eq!(t.remove(ip("10.0.0.0"), 8), Some('a'));
    assert_eq!(t.lookup(ip("::10.0.0.1")), Some(&'c'));
    assert_eq!(t.lookup(ip("10.0.0.1")), None);
}

#[test]
fn same_prefix_changes_owner() {
    let mut t = AllowedIps::new();
    t.insert(ip("10.0.0.0"), 24, 'a').unwrap();
    t.insert(ip("10.0.0.0"), 16, 'a').unwrap();
    t.insert(ip("10.0.0.99"), 24, 'b').unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t.lookup(ip("10.0.0.1")), Some(&'b'));
    assert_eq!(t.lookup(ip("10.0.1.1")), Some(&'a'));
    assert_eq!(t.prefixes_of(&'a'), vec![(ip("10.0.0.0"), 16)]);
    assert_eq!(t.prefixes_of(&'b'), vec![(ip("10.0.0.0"), 24)]);
    check(&t);
}

#[test]
fn remove_is_exact() {
    let mut t = AllowedIps::new();
    t.insert(ip("10.0.0.0"), 16, 'a').unwrap();
    t.insert(ip("10.0.0.0"), 24, 'b').unwrap();
    assert_eq!(t.remove(ip("10.0.0.0"), 20), None);
    assert_eq!(t.remove(ip("10.0.0.0"), 8), None);
    assert_eq!(t.remove(ip("10.0.0.0"), 32), None);
    assert_eq!(t.remove(ip("::"), 0), None);
    assert_eq!(t.remove(ip("10.0.0.0"), 16), Some('a'));
    assert_eq!(t.remove(ip("10.0.0.0"), 16), None);
    assert_eq!(t.lookup(ip("10.0.0.1")), Some(&'b'));
    assert_eq!(t.lookup(ip("10.0.1.1")), None);
    check(&t);
    assert_eq!(t.remove(ip("10.0.0.0"), 24), Some('b'));
    assert!(t.is_empty());
    assert_eq!(t.node_count(), 0);
}

#[test]
fn remove_by_value_leaves_others() {
    let mut t = AllowedIps::new();
    t.insert(ip("10.0.0.0"), 8, 1).unwrap();
    t.insert(ip("10.1.0.0"), 16, 2).unwrap();
    t.insert(ip("10.1.2.0"), 24, 1).unwrap();
    t.insert(ip("fd00::"), 8, 1).unwrap();
    t.insert(ip("fd00:1::"), 32, 2).unwrap();
    t.remove_by_value(&1);
    check(&t);
    assert_eq!(t.len(), 2);
    assert_eq!(t.lookup(ip("10.1.2.3")), Some(&2));
    assert_eq!(t.lookup(ip("10.2.0.0")), None);
    assert_eq!(t.lookup(ip("fd00:1::1")), Some(&2));
    assert_eq!(t.lookup(ip("fd00:2::1")), None);
    t.remove_by_value(&3);
    assert_eq!(t.len(), 2);
}

#[test]
fn prefix_too_long() {
    let mut t = AllowedIps::new();
    assert_eq!(
        t.insert(ip("10.0.0.1"), 33, 'a'),
        Err(AllowedIpsError::PrefixTooLong(33))
    );
    assert_eq!(
        t.insert(ip("::1"), 129, 'a'),
        Err(AllowedIpsError::PrefixTooLong(129))
    );
    assert_eq!(
        t.insert(ip("::1"), 255, 'a'),
        Err(AllowedIpsError::PrefixTooLong(255))
    );
    assert!(t.is_empty());
    t.insert(ip("10.0.0.1"), 32, 'a').unwrap();
    t.insert(ip("::1"), 128, 'a').unwrap();
    assert_eq!(t.remove(ip("10.0.0.1"), 33), None);
    assert_eq!(t.remove(ip("::1"), 255), None);
    assert_eq!(t.len(), 2);
    assert_eq!(
        AllowedIpsError::PrefixTooLong(33).to_string(),
        "prefix length 33 is too long for the address family"
    );
}

#[test]
fn clear_and_len() {
    let mut t = AllowedIps::new();
    assert!(t.is_empty());
    t.insert(ip("10.0.0.0"), 8, 'a').unwrap();
    t.insert(ip("10.0.0.0"), 8, 'b').unwrap();
    t.insert(ip("::"), 0, 'a').unwrap();
    assert_eq!(t.len(), 2);
    t.clear();
    assert!(t.is_empty());
    assert_eq!(t.lookup(ip("10.0.0.1")), None);
    assert_eq!(t.iter().count(), 0);
    assert_eq!(t.node_count(), 0);
}

/// Tiny deterministic generator for the randomized tests (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn u128(&mut self) -> u128 {
        u128::from(self.next()) << 64 | u128::from(self.next())
    }
}

/// The obvious implementation: a list, scanned in full; the longest matching prefix wins.
#[derive(Default)]
struct Model {
    /// (is IPv6, masked left-aligned key, cidr, value).
    entries: Vec<(bool, u128, u8, u32)>,
}

impl Model {
    fn insert(&mut self, addr: IpAddr, cidr: u8, value: u32) {
        let (family, key) = split(addr);
        let entry = (family == Family::V6, mask(key, cidr), cidr);
        match self.entries.iter_mut().find(|e| (e.0, e.1, e.2) == entry) {
            Some(e) => e.3 = value,
            None => self.entries.push((entry.0, entry.1, entry.2, value)),
        }
    }

    fn remove(&mut self, addr: IpAddr, cidr: u8) -> Option<u32> {
        let (family, key) = split(addr);
        let entry = (family == Family::V6, mask(key, cidr), cidr);
        let at = self.entries.iter().position(|e| (e.0, e.1, e.2) == entry)?;
        Some(self.entries.swap_remove(at).3)
    }

    fn remove_by_value(&mut self, value: u32) {
        self.entries.retain(|e| e.3 != value);
    }

    fn lookup(&self, addr: IpAddr) -> Option<u32> {
        let (family, key) = split(addr);
        self.entries
            .iter()
            .filter(|e| e.0 == (family == Family::V6) && mask(key, e.2) == e.1)
            .max_by_key(|e| e.2)
            .map(|e| e.3)
    }

    fn sorted(&self) -> Vec<(IpAddr, u8, u32)> {
        let mut entries = self.entries.clone();
        entries.sort_unstable();
        entries
            .into_iter()
            .map(|(is_v6, key, cidr, value)| {
                let family = if is_v6 { Family::V6 } else { Family::V4 };
                (family.address(key), cidr, value)
            })
            .collect()
    }
}

fn listing(t: &AllowedIps<u32>) -> Vec<(IpAddr, u8, u32)> {
    t.iter().map(|(a, c, v)| (a, c, *v)).collect()
}

/// A random address, usually sharing a random-length prefix with one seen before (as the
/// kernel's randomized test mutates its routes), so lookups and inserts hit existing nodes.
fn biased_addr(rng: &mut Rng, pool: &[IpAddr]) -> IpAddr {
    let fresh = rng.u128();
    let base = match pool.get(rng.below(pool.len() as u64 + 1) as usize) {
        Some(&base) if rng.below(5) != 0 => base,
        _ => {
            return if rng.below(2) == 0 {
                Family::V4.address(mask(fresh, 32))
            } else {
                Family::V6.address(fresh)
            };
        }
    };
    let (family, key) = split(base);
    let keep = rng.below(u64::from(family.bits()) + 1) as u8;
    let mixed = mask(key, keep) | (fresh & !mask(u128::MAX, keep));
    family.address(mask(mixed, family.bits()))
}

fn random_cidr(rng: &mut Rng, addr: IpAddr) -> u8 {
    let bits = split(addr).0.bits();
    if rng.below(20) == 0 {
        0
    } else {
        rng.below(u64::from(bits)) as u8 + 1
    }
}

#[test]
fn randomized_against_model() {
    for seed in 1..=6u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut t = AllowedIps::new();
        let mut model = Model::default();
        let mut pool: Vec<IpAddr> = Vec::new();
        let peers = 40;
        for step in 0..6000 {
            match rng.below(200) {
                0..100 => {
                    let addr = biased_addr(&mut rng, &pool);
                    let cidr = random_cidr(&mut rng, addr);
                    let value = rng.below(peers) as u32;
                    t.insert(addr, cidr, value).unwrap();
                    model.insert(addr, cidr, value);
                    pool.push(addr);
                }
                100..130 => {
                    // Usually an existing prefix, sometimes a near miss.
                    let (addr, cidr) = match model
                        .sorted()
                        .get(rng.below(model.entries.len() as u64 + 1) as usize)
                    {
                        Some(&(addr, cidr, _)) if rng.below(4) != 0 => (addr, cidr),
                        _ => {
                            let addr = biased_addr(&mut rng, &pool);
                            (addr, random_cidr(&mut rng, addr))
                        }
                    };
                    assert_eq!(t.remove(addr, cidr), model.remove(addr, cidr));
                }
                130 => {
                    let value = rng.below(peers) as u32;
                    t.remove_by_value(&value);
                    model.remove_by_value(value);
                }
                _ => {
                    for _ in 0..20 {
                        let addr = biased_addr(&mut rng, &pool);
                        assert_eq!(
                            t.lookup(addr).copied(),
                            model.lookup(addr),
                            "seed {seed}, step {step}, lookup {addr}"
                        );
                    }
                }
            }
            assert_eq!(t.len(), model.entries.len());
            if step % 97 == 0 {
                check(&t);
                assert_eq!(listing(&t), model.sorted());
            }
        }
        check(&t);
        assert_eq!(listing(&t), model.sorted());
        for value in 0..peers as u32 {
            let expected: Vec<(IpAddr, u8)> = model
                .sorted()
                .into_iter()
                .filter(|e| e.2 == value)
                .map(|e| (e.0, e.1))
                .collect();
            assert_eq!(t.prefixes_of(&value), expected);
            t.remove_by_value(&value);
            model.remove_by_value(value);
            check(&t);
        }
        assert!(t.is_empty());
        assert_eq!(t.node_count(), 0);
    }
}

/// Peers coming and going must not leave dead nodes behind.
#[test]
fn churn_returns_to_baseline() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut t = AllowedIps::new();
    let baseline = [
        (ip("0.0.0.0"), 0),
        (ip("10.0.0.0"), 8),
        (ip("10.1.0.0"), 16),
        (ip("192.168.7.1"), 32),
        (ip("::"), 0),
        (ip("fd00::"), 8),
        (ip("2001:db8::1"), 128),
    ];
    for &(addr, cidr) in &baseline {
        t.insert(addr, cidr, 0).unwrap();
    }
    let base_nodes = t.node_count();
    let base_listing = listing(&t);
    let pool: Vec<IpAddr> = baseline.iter().map(|&(addr, _)| addr).collect();
    for round in 0..6 {
        let mut inserted = Vec::new();
        while inserted.len() < 10_000 {
            let addr = biased_addr(&mut rng, &pool);
            let cidr = random_cidr(&mut rng, addr).max(1);
            let value = 1 + rng.below(100) as u32;
            // Do not clobber the baseline's owners.
            if base_listing.iter().any(|&(a, c, _)| {
                c == cidr && split(a) == (split(addr).0, mask(split(addr).1, cidr))
            }) {
                continue;
            }
            let before = t.len();
            t.insert(addr, cidr, value).unwrap();
            if t.len() > before {
                inserted.push((addr, cidr));
            }
        }
        assert_eq!(t.len(), baseline.len() + 10_000);
        check(&t);
        assert!(t.node_count() > base_nodes);
        if round % 2 == 0 {
            // Remove one by one, in a scrambled order.
            for i in (1..inserted.len()).rev() {
                inserted.swap(i, rng.below(i as u64 + 1) as usize);
            }
            for (addr, cidr) in inserted {
                t.remove(addr, cidr);
            }
        } else {
            for value in 1..=100 {
                t.remove_by_value(&value);
            }
        }
        check(&t);
        assert_eq!(t.node_count(), base_nodes, "round {round}");
        assert_eq!(listing(&t), base_listing, "round {round}");
        // Freed slots are reused: the arena never outgrows one round's worth of prefixes.
        let arena = t.v4.nodes.len() + t.v6.nodes.len();
        assert!(
            arena <= 2 * (10_000 + baseline.len()),
            "round {round}: {arena}"
        );
    }
}

/// One operation on a deliberately small address space, so prefixes nest and collide.
#[derive(Clone, Debug)]
enum Op {
    Insert(IpAddr, u8, u32),
    Remove(IpAddr, u8),
    RemoveByValue(u32),
    Lookup(IpAddr),
}

fn small_addr() -> impl Strategy<Value = IpAddr> {
    let octet = prop::sample::select(vec![0u8, 1, 10, 127, 128, 192, 255]);
    let group = prop::sample::select(vec![0u16, 1, 0x2001, 0x8000, 0xfd00, 0xffff]);
    prop_oneof![
        [octet.clone(), octet.clone(), octet.clone(), octet]
            .prop_map(|[a, b, c, d]| IpAddr::V4(Ipv4Addr::new(a, b, c, d))),
        [group.clone(), group.clone(), group.clone(), group]
            .prop_map(|[a, b, c, d]| { IpAddr::V6(Ipv6Addr::new(a, b, 0, 0, 0, 0, c, d)) }),
    ]
}

fn small_prefix() -> impl Strategy<Value = (IpAddr, u8)> {
    small_addr().prop_flat_map(|addr| {
        let bits = split(addr).0.bits();
        (Just(addr), 0..=bits)
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (small_prefix(), 0u32..4).prop_map(|((a, c), v)| Op::Insert(a, c, v)),
        2 => small_prefix().prop_map(|(a, c)| Op::Remove(a, c)),
        1 => (0u32..4).prop_map(Op::RemoveByValue),
        4 => small_addr().prop_map(Op::Lookup),
    ]
}

proptest! {
    #[test]
    fn agrees_with_model(ops in prop::collection::vec(op(), 1..120)) {
        let mut t = AllowedIps::new();
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Insert(addr, cidr, value) => {
                    t.insert(addr, cidr, value).unwrap();
                    model.insert(addr, cidr, value);
                }
                Op::Remove(addr, cidr) => {
                    prop_assert_eq!(t.remove(addr, cidr), model.remove(addr, cidr));
                }
                Op::RemoveByValue(value) => {
                    t.remove_by_value(&value);
                    model.remove_by_value(value);
                }
                Op::Lookup(addr) => {
                    prop_assert_eq!(t.lookup(addr).copied(), model.lookup(addr));
                }
            }
            check(&t);
            prop_assert_eq!(listing(&t), model.sorted());
        }
    }
}
