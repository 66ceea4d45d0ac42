//! The reverse-flow cache: outbound UDP and SCTP flows, so that their replies are accepted
//! without a rule ([`FlowTable`]).
//!
//! Why a hand-made table: the data plane consults it for every inbound UDP packet and updates
//! it for every outbound one, inside a shard loop that must not allocate per packet. A
//! `HashMap` is banned by the workspace's clippy configuration (its random state), and a
//! `BTreeMap` allocates and frees nodes as flows come and go, so neither is allocation-free
//! in steady state. This table allocates its storage once, in [`FlowTable::with_capacity`]:
//! the flows live in a `Vec` of fixed length linked into a recency list by index, and an
//! open-addressing index (linear probing, backward-shift deletion, at most a quarter full)
//! finds them. Evicting the least recently used flow reuses its entry in place.
//!
//! The key is the layout the eBPF program's LRU map uses ([`FlowKey`] of
//! `weft-ebpf-common`), so both enforcement paths key flows identically. The hash is a fixed
//! multiply-xorshift mix (no per-process seed: the core reads no randomness); only this
//! node's own outbound traffic inserts keys, and the index is at most a quarter full, so a
//! peer cannot lengthen probe sequences.

pub use weft_ebpf_common::FlowKey;

/// The official client's reverse-flow cache size (`lruMax` in `wgengine/filter`).
pub const FLOW_TABLE_CAPACITY: usize = 512;

/// No entry / no slot.
const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    key: FlowKey,
    /// Towards the most recently used end.
    prev: u32,
    /// Towards the least recently used end.
    next: u32,
}

/// A bounded LRU set of flows (see the module doc). [`Filter::check_outbound`] records
/// flows, [`Filter::check_inbound_with`] accepts their replies.
///
/// [`Filter::check_outbound`]: crate::Filter::check_outbound
/// [`Filter::check_inbound_with`]: crate::Filter::check_inbound_with
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowTable {
    entries: Vec<Entry>,
    /// Open-addressing index: an entry number, or [`NIL`].
    index: Vec<u32>,
    capacity: usize,
    /// Most recently used entry.
    head: u32,
    /// Least recently used entry (evicted next).
    tail: u32,
}

impl Default for FlowTable {
    fn default() -> Self {
        Self::new()
    }
}

fn hash(k: &FlowKey) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(k.proto);
    let mut mix = |v: u64| {
        h = (h ^ v).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 31;
    };
    for half in [k.remote, k.local] {
        let (a, b) = half.split_at(8);
        let word = |s: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(s);
            u64::from_le_bytes(w)
        };
        mix(word(a));
        mix(word(b));
    }
    mix(u64::from(k.remote_port) << 16 | u64::from(k.local_port));
    h
}

impl FlowTable {
    /// A table of [`FLOW_TABLE_CAPACITY`] flows.
    pub fn new() -> Self {
        Self::with_capacity(FLOW_TABLE_CAPACITY)
    }

    /// A table of `capacity` flows (at least 1, at most 2²⁰). All storage is allocated here.
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, 1 << 20);
        let slots = (capacity * 4).next_power_of_two();
        Self {
            entries: Vec::with_capacity(capacity),
            index: vec![NIL; slots],
            capacity,
            head: NIL,
            tail: NIL,
        }
    }

    /// Flows held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no flow is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most flows held at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every flow (the storage stays).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.index.iter_mut().for_each(|s| *s = NIL);
        self.head = NIL;
        self.tail = NIL;
    }

    /// Whether `key` is held, without refreshing it.
    pub fn contains(&self, key: &FlowKey) -> bool {
        self.find(key).is_some()
    }

    /// Whether `key` is held; a held flow becomes the most recently used (as a reply refreshes
    /// the official client's entry).
    pub fn touch(&mut self, key: &FlowKey) -> bool {
        match self.find(key) {
            Some((_, e)) => {
                self.make_newest(e);
                true
            }
            None => false,
        }
    }

    /// Records `key` as the most recently used flow, evicting the least recently used one
    /// when the table is full.
    pub fn insert(&mut self, key: FlowKey) {
        if self.touch(&key) {
            return;
        }
        let e = if self.entries.len() < self.capacity {
            let Ok(e) = u32::try_from(self.entries.len()) else {
                return;
            };
            self.entries.push(Entry {
                key,
                prev: NIL,
                next: NIL,
            });
            e
        } else {
            let e = self.tail;
            let Some(old) = self.entry(e).map(|x| x.key) else {
                return;
            };
            if let Some((slot, _)) = self.find(&old) {
                self.remove_slot(slot);
            }
            self.unlink(e);
            if let Some(x) = self.entries.get_mut(e as usize) {
                x.key = key;
            }
            e
        };
        let mask = self.index.len() - 1;
        let mut slot = (hash(&key) as usize) & mask;
        // Bounded: the index is at most a quarter full, so an empty slot exists.
        for _ in 0..self.index.len() {
            match self.index.get_mut(slot) {
                Some(s) if *s == NIL => {
                    *s = e;
                    break;
                }
                _ => slot = (slot + 1) & mask,
            }
        }
        self.link_front(e);
    }

    fn entry(&self, e: u32) -> Option<&Entry> {
        self.entries.get(e as usize)
    }

    /// The index slot and entry number of `key`.
    fn find(&self, key: &FlowKey) -> Option<(usize, u32)> {
        let mask = self.index.len() - 1;
        let mut slot = (hash(key) as usize) & mask;
        for _ in 0..self.index.len() {
            let e = *self.index.get(slot)?;
            if e == NIL {
                return None;
            }
            if self.entry(e).is_some_and(|x| x.key == *key) {
                return Some((slot, e));
            }
            slot = (slot + 1) & mask;
        }
        None
    }

    /// Empties index slot `hole` and shifts later members of its probe run back, so that
    /// every key stays reachable from its home slot without tombstones.
    fn remove_slot(&mut self, mut hole: usize) {
        let mask = self.index.len() - 1;
        if let Some(s) = self.index.get_mut(hole) {
            *s = NIL;
        }
        let mut j = hole;
        for _ in 0..self.index.len() {
            j = (j + 1) & mask;
            let e = self.index.get(j).copied().unwrap_or(NIL);
            if e == NIL {
                return;
            }
            let Some(home) = self.entry(e).map(|x| (hash(&x.key) as usize) & mask) else {
                return;
            };
            // The entry at j may move to the hole unless its home lies cyclically in
            // (hole, j].
            let home_between = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !home_between {
                if let Some(s) = self.index.get_mut(hole) {
                    *s = e;
                }
                if let Some(s) = self.index.get_mut(j) {
                    *s = NIL;
                }
                hole = j;
            }
        }
    }

    fn unlink(&mut self, e: u32) {
        let Some(&Entry { prev, next, .. }) = self.entry(e) else {
            return;
        };
        match self.entries.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.entries.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    fn link_front(&mut self, e: u32) {
        let old = self.head;
        if let Some(x) = self.entries.get_mut(e as usize) {
            x.prev = NIL;
            x.next = old;
        }
        match self.entries.get_mut(old as usize) {
            Some(h) => h.prev = e,
            None => self.tail = e,
        }
        self.head = e;
    }

    fn make_newest(&mut self, e: u32) {
        if self.head != e {
            self.unlink(e);
            self.link_front(e);
        }
    }
}

/// The 16-byte form of an address in a [`FlowKey`]: IPv6 as is, IPv4 IPv4-mapped.
pub(crate) fn addr16(a: std::net::IpAddr) -> [u8; 16] {
    match a {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> FlowKey {
        let mut k = FlowKey {
            proto: 17,
            remote_port: 53,
            local_port: (n % 60000) as u16,
            ..FlowKey::default()
        };
        k.remote[12..].copy_from_slice(&n.to_be_bytes());
        k
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let mut t = FlowTable::with_capacity(4);
        for n in 0..4 {
            t.insert(key(n));
        }
        assert!(t.touch(&key(0))); // 0 is now the newest; 1 the oldest
        t.insert(key(4));
        assert_eq!(t.len(), 4);
        assert!(!t.contains(&key(1)));
        for n in [0, 2, 3, 4] {
            assert!(t.contains(&key(n)), "{n}");
        }
        t.insert(key(2)); // refresh: 3 is now the oldest
        t.insert(key(5));
        assert!(!t.contains(&key(3)) && t.contains(&key(2)));
    }

    /// Against a plain Vec model under many inserts and lookups with a small key space (so
    /// that collisions, refreshes and evictions are frequent).
    #[test]
    fn agrees_with_a_vec_model() {
        let mut t = FlowTable::with_capacity(16);
        let mut model: Vec<FlowKey> = Vec::new(); // most recent last
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = key((x % 40) as u32);
            if x & (1 << 40) == 0 {
                t.insert(k);
                model.retain(|m| *m != k);
                model.push(k);
                if model.len() > 16 {
                    model.remove(0);
                }
            } else {
                let held = model.iter().position(|m| *m == k);
                assert_eq!(t.touch(&k), held.is_some());
                if let Some(i) = held {
                    model.remove(i);
                    model.push(k);
                }
            }
            assert_eq!(t.len(), model.len());
        }
        for k in &model {
            assert!(t.contains(k));
        }
        t.clear();
        assert!(t.is_empty() && !t.contains(&model[0]));
    }
}
