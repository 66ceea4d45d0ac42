//! The rules and local nets of a [`Filter`](crate::Filter) as the contents of the tc
//! program's maps ([`TcTables`], layouts in `weft-ebpf-common`).
//!
//! Why here: this is the one place that knows both the rule semantics and the map layout, and
//! it is pure computation, so it lives in the core crate (which may depend on the dependency-
//! free `weft-ebpf-common`, never on the loader).
//!
//! The layout (`ebpf/README.md` has the whole design): every (rule, destination) pair of a
//! rule with at least one source is a *slot* carrying the rule's protocols and the
//! destination's ports. The source trie maps each source prefix of any rule to the slots of
//! every rule with a source containing it; the destination trie maps each destination prefix
//! to every slot whose destination contains it. An LPM lookup returns only the longest match,
//! so storing under each prefix the union over all the prefixes that contain it makes one
//! lookup per address enough: a packet's candidate slots are the AND of its two bitmaps. That
//! AND pairs a rule's sources and destinations of the packet's family only, which is exactly
//! [`Filter::new`](crate::Filter::new)'s per-family split.
//!
//! A rule set with more slots than the program has ([`SLOTS`]), or more prefixes than one
//! generation of a trie holds, is refused with [`TablesError`]: the caller then enforces with
//! the userspace matcher. The tables never silently differ from the matcher.

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_ebpf_common::{
    Prefix, Slot, SlotBits, TcTables, FAMILY_V4, FAMILY_V6, LPM_ENTRIES_PER_GEN, SLOTS,
};

use crate::rules::{IpNet, Rule};

/// Why a rule set does not fit the tc program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TablesError {
    /// More (rule, destination) pairs than the program's slots.
    #[error("{count} (rule, destination) pairs; the eBPF program holds {max}")]
    TooManySlots {
        /// Pairs in the rule set.
        count: usize,
        /// The program's limit.
        max: usize,
    },
    /// More distinct prefixes for one trie than a generation holds.
    #[error("{count} {trie} prefixes; one eBPF rule generation holds {max}")]
    TooManyPrefixes {
        /// Which trie: "source", "destination" or "local".
        trie: &'static str,
        /// Distinct prefixes.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// The map contents for `rules` (as given to [`Filter::new`](crate::Filter::new)) and the
/// node's `local` nets.
///
/// # Errors
/// [`TablesError`] when the rule set exceeds the program's limits.
pub fn tc_tables(rules: &[Rule], local: &[IpNet]) -> Result<TcTables, TablesError> {
    let mut slots = Vec::new();
    // (destination prefix, slot) and (source prefix, the rule's slots).
    let mut dst_slots: Vec<(IpNet, usize)> = Vec::new();
    let mut src_rules: Vec<(IpNet, SlotBits)> = Vec::new();
    let count: usize = rules
        .iter()
        .filter(|r| !r.srcs.is_empty())
        .map(|r| r.dsts.len())
        .sum();
    if count > SLOTS {
        return Err(TablesError::TooManySlots { count, max: SLOTS });
    }
    for rule in rules.iter().filter(|r| !r.srcs.is_empty()) {
        let mut mine = SlotBits::default();
        for d in &rule.dsts {
            let s = slots.len();
            slots.push(Slot {
                protos: rule.protocols.words(),
                port_first: d.ports.first,
                port_last: d.ports.last,
                pad: 0,
            });
            mine.set(s);
            dst_slots.push((d.net, s));
        }
        src_rules.extend(rule.srcs.iter().map(|n| (*n, mine)));
    }

    let src = pushed_down(src_rules.iter().copied());
    let dst = pushed_down(dst_slots.iter().map(|(n, s)| {
        let mut b = SlotBits::default();
        b.set(*s);
        (*n, b)
    }));
    let mut local_set: Vec<Prefix> = local.iter().map(prefix).collect();
    local_set.sort_unstable();
    local_set.dedup();
    for (trie, n) in [
        ("source", src.len()),
        ("destination", dst.len()),
        ("local", local_set.len()),
    ] {
        if n > LPM_ENTRIES_PER_GEN {
            return Err(TablesError::TooManyPrefixes {
                trie,
                count: n,
                max: LPM_ENTRIES_PER_GEN,
            });
        }
    }
    Ok(TcTables {
        src,
        dst,
        local: local_set,
        slots,
    })
}

/// One entry per distinct prefix, valued with the union of the bits of every given prefix
/// that contains it (itself included), because an LPM lookup returns the longest match only.
fn pushed_down(entries: impl Iterator<Item = (IpNet, SlotBits)>) -> Vec<(Prefix, SlotBits)> {
    let mut own: BTreeMap<IpNet, SlotBits> = BTreeMap::new();
    for (net, bits) in entries {
        own.entry(net).or_default().union(&bits);
    }
    own.keys()
        .map(|p| {
            let mut bits = SlotBits::default();
            for (q, b) in &own {
                if contains_net(q, p) {
                    bits.union(b);
                }
            }
            (prefix(p), bits)
        })
        .collect()
}

/// Whether prefix `outer` contains all of prefix `inner`.
fn contains_net(outer: &IpNet, inner: &IpNet) -> bool {
    outer.prefix_len() <= inner.prefix_len() && outer.contains(inner.addr())
}

fn prefix(n: &IpNet) -> Prefix {
    let mut addr = [0u8; 16];
    let family = match n.addr() {
        IpAddr::V4(a) => {
            if let Some(head) = addr.first_chunk_mut::<4>() {
                *head = a.octets();
            }
            FAMILY_V4
        }
        IpAddr::V6(a) => {
            addr = a.octets();
            FAMILY_V6
        }
    };
    Prefix {
        family,
        addr,
        len: n.prefix_len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Dst, PortRange, ProtoSet};

    fn net(s: &str) -> IpNet {
        let (a, l) = s.split_once('/').unwrap();
        IpNet::new(a.parse().unwrap(), l.parse().unwrap()).unwrap()
    }

    fn rule(srcs: &[&str], dsts: &[(&str, u16, u16)]) -> Rule {
        Rule {
            protocols: ProtoSet::default_protocols(),
            srcs: srcs.iter().map(|s| net(s)).collect(),
            src_caps: Vec::new(),
            dsts: dsts
                .iter()
                .map(|(n, a, b)| Dst {
                    net: net(n),
                    ports: PortRange {
                        first: *a,
                        last: *b,
                    },
                })
                .collect(),
        }
    }

    fn bits_of(t: &[(Prefix, SlotBits)], n: &str) -> SlotBits {
        let p = prefix(&net(n));
        t.iter().find(|(q, _)| *q == p).unwrap().1
    }

    #[test]
    fn containing_prefixes_push_their_slots_down() {
        let rules = [
            rule(&["10.0.0.0/8"], &[("100.64.0.1/32", 22, 22)]),
            rule(&["10.1.0.0/16", "fd00::/8"], &[("100.64.0.0/10", 80, 81)]),
        ];
        let t = tc_tables(&rules, &[net("100.64.0.1/32")]).unwrap();
        assert_eq!(t.slots.len(), 2);
        assert_eq!(bits_of(&t.src, "10.0.0.0/8").w[0], 0b01);
        assert_eq!(bits_of(&t.src, "10.1.0.0/16").w[0], 0b11);
        assert_eq!(bits_of(&t.src, "fd00::/8").w[0], 0b10);
        assert_eq!(bits_of(&t.dst, "100.64.0.0/10").w[0], 0b10);
        assert_eq!(bits_of(&t.dst, "100.64.0.1/32").w[0], 0b11);
        assert_eq!((t.slots[1].port_first, t.slots[1].port_last), (80, 81));
        assert_eq!(t.local.len(), 1);
    }

    #[test]
    fn rules_without_sources_take_no_slots() {
        let mut r = rule(&[], &[("0.0.0.0/0", 0, 65535)]);
        r.src_caps.push("cap:x".into());
        let t = tc_tables(&[r], &[]).unwrap();
        assert!(t.slots.is_empty() && t.src.is_empty() && t.dst.is_empty());
    }

    #[test]
    fn too_many_slots_is_an_error() {
        let dsts: Vec<(String, u16, u16)> = (0..=SLOTS)
            .map(|i| (format!("100.64.{}.{}/32", i / 256, i % 256), 1, 1))
            .collect();
        let dsts: Vec<(&str, u16, u16)> =
            dsts.iter().map(|(n, a, b)| (n.as_str(), *a, *b)).collect();
        let err = tc_tables(&[rule(&["10.0.0.0/8"], &dsts)], &[]).unwrap_err();
        assert_eq!(
            err,
            TablesError::TooManySlots {
                count: SLOTS + 1,
                max: SLOTS
            }
        );
        // Exactly at the limit fits.
        assert!(tc_tables(&[rule(&["10.0.0.0/8"], &dsts[..SLOTS])], &[]).is_ok());
    }

    #[test]
    fn too_many_local_prefixes_is_an_error() {
        let local: Vec<IpNet> = (0..=LPM_ENTRIES_PER_GEN as u32)
            .map(|i| IpNet::host(IpAddr::V4((0x0a00_0000 + i).into())))
            .collect();
        assert!(matches!(
            tc_tables(&[], &local),
            Err(TablesError::TooManyPrefixes { trie: "local", .. })
        ));
    }
}
