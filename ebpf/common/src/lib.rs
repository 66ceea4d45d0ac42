//! Map keys, values and constants shared by weft's eBPF programs (C, `ebpf/progs/weft_maps.h`)
//! and the code that fills their maps.
//!
//! Why a crate of its own: the loader (`weft-ebpf`) writes these values and `weft-filter`
//! computes them from rules, but `weft-filter` is a core crate that must not depend on aya or
//! on anything that touches the kernel. So the layouts live here, `no_std` and without
//! dependencies, and both sides use them.
//!
//! Every type is `#[repr(C)]` with explicit padding fields, so the bytes the loader hands to
//! the kernel are exactly the C structs. The C header states the same sizes and offsets with
//! `_Static_assert`, this crate states them with `const` assertions, and the loader's build
//! script compares every `#define` the programs use with the constants below: a change on one
//! side that is not made on the other fails the build.
#![no_std]

extern crate alloc;

use alloc::vec::Vec;

/// (rule, destination) slots per rule generation: one bit each in [`SlotBits`]. A rule set
/// with more destinations than this does not fit the tc program.
pub const SLOTS: usize = 256;
/// 64-bit words of a [`SlotBits`].
pub const SLOT_WORDS: usize = SLOTS / 64;
/// Rule generations: one live, one being built.
pub const GENERATIONS: u32 = 2;
/// Capacity of each LPM trie, both generations together.
pub const LPM_ENTRIES: u32 = 16384;
/// Family byte of an IPv4 key.
pub const FAMILY_V4: u8 = 4;
/// Family byte of an IPv6 key.
pub const FAMILY_V6: u8 = 6;
/// Bits of an LPM key before the address (generation and family), counted in its prefix
/// length.
pub const KEY_HEADER_BITS: u32 = 16;

/// The data part of the tc program's LPM keys (`struct weft_lpm_key` without its leading
/// `prefixlen`, which aya's `lpm_trie::Key` adds). IPv4 addresses take the first 4 bytes of
/// `addr`; the rest and `pad` are zero.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct LpmKeyData {
    /// Rule generation (0 or 1).
    pub gen: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// The address, network byte order.
    pub addr: [u8; 16],
    /// Zero.
    pub pad: [u8; 2],
}

impl LpmKeyData {
    /// The prefix length of a key for a `len`-bit prefix (the generation and family bytes
    /// always count).
    pub const fn prefix_len(len: u8) -> u32 {
        KEY_HEADER_BITS + len as u32
    }
}

/// Value of the source and destination tries: a bitmap of slots (slot `s` is bit `s % 64` of
/// word `s / 64`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SlotBits {
    /// The words.
    pub w: [u64; SLOT_WORDS],
}

impl SlotBits {
    /// Sets slot `s` (ignored past [`SLOTS`]).
    pub fn set(&mut self, s: usize) {
        if let Some(w) = self.w.get_mut(s / 64) {
            *w |= 1 << (s % 64);
        }
    }

    /// Whether slot `s` is set.
    pub fn get(&self, s: usize) -> bool {
        self.w.get(s / 64).is_some_and(|w| w & (1 << (s % 64)) != 0)
    }

    /// Adds every slot of `other`.
    pub fn union(&mut self, other: &Self) {
        for (a, b) in self.w.iter_mut().zip(other.w.iter()) {
            *a |= *b;
        }
    }
}

/// One (rule, destination) slot: the rule's protocols and the destination's port range, at
/// index `generation * SLOTS + slot` of the slot array.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Slot {
    /// Protocol `p` is bit `p % 64` of word `p / 64`.
    pub protos: [u64; 4],
    /// First port of the range.
    pub port_first: u16,
    /// Last port of the range (inclusive).
    pub port_last: u16,
    /// Zero.
    pub pad: u32,
}

/// Value of the local-nets trie.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Local {
    /// Non-zero.
    pub present: u32,
}

/// A prefix as the tries store it (before the generation is added).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Prefix {
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// The network address, network byte order (IPv4 in the first 4 bytes, the rest zero).
    pub addr: [u8; 16],
    /// The prefix length in bits.
    pub len: u8,
}

impl Prefix {
    /// The trie key of this prefix in generation `gen`, and its prefix length in bits.
    pub fn key(&self, gen: u8) -> (u32, LpmKeyData) {
        (
            LpmKeyData::prefix_len(self.len),
            LpmKeyData {
                gen,
                family: self.family,
                addr: self.addr,
                pad: [0; 2],
            },
        )
    }
}

/// The contents of one rule generation of the tc program's maps, as computed from a rule set
/// (by `weft-filter`) and written by the loader.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TcTables {
    /// Source trie: prefix to the slots whose rule has a source containing it.
    pub src: Vec<(Prefix, SlotBits)>,
    /// Destination trie: prefix to the slots whose destination contains it.
    pub dst: Vec<(Prefix, SlotBits)>,
    /// The local nets.
    pub local: Vec<Prefix>,
    /// The slots, at most [`SLOTS`].
    pub slots: Vec<Slot>,
}

/// Entries of one trie that one generation may use (half of [`LPM_ENTRIES`]).
pub const LPM_ENTRIES_PER_GEN: usize = (LPM_ENTRIES / GENERATIONS) as usize;

/// The tc program's configuration (array index 0).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcConfig {
    /// The generation packets are checked against (0 or 1).
    pub active_gen: u32,
    /// Zero.
    pub pad: u32,
}

/// Counter indices of the tc program (per-CPU array).
pub mod tc_counter {
    /// Accepted.
    pub const PASS: u32 = 0;
    /// Dropped: shorter than 20 bytes.
    pub const DROP_TOO_SHORT: u32 = 1;
    /// Dropped: not IPv4 or IPv6.
    pub const DROP_BAD_VERSION: u32 = 2;
    /// Dropped: truncated header.
    pub const DROP_TRUNCATED: u32 = 3;
    /// Dropped: malformed header.
    pub const DROP_MALFORMED: u32 = 4;
    /// Dropped: protocol 0 or 255, or fragmented TSMP.
    pub const DROP_UNKNOWN_PROTOCOL: u32 = 5;
    /// Dropped: a later fragment overlapping a transport header.
    pub const DROP_FRAGMENT_OVERLAP: u32 = 6;
    /// Dropped: multicast destination.
    pub const DROP_MULTICAST: u32 = 7;
    /// Dropped: link-local destination.
    pub const DROP_LINK_LOCAL: u32 = 8;
    /// Dropped: destination not in the local nets.
    pub const DROP_NOT_LOCAL: u32 = 9;
    /// Dropped: no rule matched.
    pub const DROP_NO_RULE: u32 = 10;
    /// Number of counters.
    pub const COUNT: u32 = 11;
}

/// Capacity of the tc programs' reverse-flow map (`weft_flows`, an LRU hash). Larger than the
/// userspace table's 512 (`weft_filter::FLOW_TABLE_CAPACITY`) because the kernel's LRU evicts
/// approximately (per-CPU free lists may evict before the map is full): four times the size
/// keeps at least the 512 most recent flows on any CPU count the data plane runs on.
pub const FLOW_ENTRIES: u32 = 2048;

/// Key of the reverse-flow map, as an inbound reply carries it: `remote` is the peer side
/// (the reply's source, the outbound packet's destination), `local` this node's side.
/// Addresses are 16 bytes, an IPv4 address written IPv4-mapped (`::ffff:a.b.c.d`) as the
/// official client's flow tuple does; ports in host byte order. The userspace table
/// (`weft_filter::FlowTable`) uses this very layout.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FlowKey {
    /// The remote address.
    pub remote: [u8; 16],
    /// This node's address.
    pub local: [u8; 16],
    /// The remote port.
    pub remote_port: u16,
    /// This node's port.
    pub local_port: u16,
    /// IP protocol: UDP (17) or SCTP (132).
    pub proto: u8,
    /// Zero.
    pub pad: [u8; 3],
}

/// The XDP program's configuration (array index 0).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct XdpConfig {
    /// The WireGuard listen port (host byte order); 0 lets every datagram pass.
    pub listen_port: u16,
    /// Non-zero while the data plane is under load: handshake initiations are rate-limited.
    pub under_load: u8,
    /// Zero.
    pub pad: [u8; 5],
}

/// Rate-limiter key: an IPv4 /32 or an IPv6 /64.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RateLimitKey {
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// Zero.
    pub pad: [u8; 7],
    /// The address (IPv4: first 4 bytes; IPv6: first 8).
    pub addr: [u8; 16],
}

/// Rate-limiter state of one source: a token bucket counted in nanoseconds of credit.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RateLimitEntry {
    /// When the bucket was last refilled (`bpf_ktime_get_ns`).
    pub last_ns: u64,
    /// Credit in nanoseconds; one initiation costs `1e9 / RL_PER_SECOND`.
    pub tokens_ns: u64,
}

/// Handshake initiations per second and source while under load (kernel WireGuard's rate).
pub const RL_PER_SECOND: u64 = 20;
/// Burst of initiations a source may send at once.
pub const RL_BURST: u64 = 5;
/// Capacity of the rate limiter's LRU hash.
pub const RL_ENTRIES: u32 = 8192;

/// Counter indices of the XDP program (per-CPU array).
pub mod xdp_counter {
    /// Passed: not UDP to the listen port, or not parsed.
    pub const PASS_OTHER: u32 = 0;
    /// Passed: a well-formed WireGuard message.
    pub const PASS_WIREGUARD: u32 = 1;
    /// Passed: STUN.
    pub const PASS_STUN: u32 = 2;
    /// Passed: disco.
    pub const PASS_DISCO: u32 = 3;
    /// Passed untouched: a GSO super-datagram or a full-MTU datagram.
    pub const PASS_LARGE: u32 = 4;
    /// Dropped: to the listen port but none of the above.
    pub const DROP_JUNK: u32 = 5;
    /// Dropped: a handshake initiation over its source's rate.
    pub const DROP_RATE_LIMIT: u32 = 6;
    /// Number of counters.
    pub const COUNT: u32 = 7;
}

/// Every `#define` of `weft_maps.h` that this crate mirrors, with its value here: the
/// loader's build script checks the header against this list.
pub const C_DEFINES: &[(&str, u64)] = &[
    ("WEFT_SLOTS", SLOTS as u64),
    ("WEFT_SLOT_WORDS", SLOT_WORDS as u64),
    ("WEFT_GENERATIONS", GENERATIONS as u64),
    ("WEFT_LPM_ENTRIES", LPM_ENTRIES as u64),
    ("WEFT_FAMILY_V4", FAMILY_V4 as u64),
    ("WEFT_FAMILY_V6", FAMILY_V6 as u64),
    ("WEFT_KEY_HEADER_BITS", KEY_HEADER_BITS as u64),
    ("WEFT_FLOW_ENTRIES", FLOW_ENTRIES as u64),
    ("WEFT_TC_PASS", tc_counter::PASS as u64),
    ("WEFT_TC_DROP_TOO_SHORT", tc_counter::DROP_TOO_SHORT as u64),
    (
        "WEFT_TC_DROP_BAD_VERSION",
        tc_counter::DROP_BAD_VERSION as u64,
    ),
    ("WEFT_TC_DROP_TRUNCATED", tc_counter::DROP_TRUNCATED as u64),
    ("WEFT_TC_DROP_MALFORMED", tc_counter::DROP_MALFORMED as u64),
    (
        "WEFT_TC_DROP_UNKNOWN_PROTOCOL",
        tc_counter::DROP_UNKNOWN_PROTOCOL as u64,
    ),
    (
        "WEFT_TC_DROP_FRAGMENT_OVERLAP",
        tc_counter::DROP_FRAGMENT_OVERLAP as u64,
    ),
    ("WEFT_TC_DROP_MULTICAST", tc_counter::DROP_MULTICAST as u64),
    (
        "WEFT_TC_DROP_LINK_LOCAL",
        tc_counter::DROP_LINK_LOCAL as u64,
    ),
    ("WEFT_TC_DROP_NOT_LOCAL", tc_counter::DROP_NOT_LOCAL as u64),
    ("WEFT_TC_DROP_NO_RULE", tc_counter::DROP_NO_RULE as u64),
    ("WEFT_TC_COUNTERS", tc_counter::COUNT as u64),
    ("WEFT_RL_PER_SECOND", RL_PER_SECOND),
    ("WEFT_RL_BURST", RL_BURST),
    ("WEFT_RL_ENTRIES", RL_ENTRIES as u64),
    ("WEFT_XDP_PASS_OTHER", xdp_counter::PASS_OTHER as u64),
    (
        "WEFT_XDP_PASS_WIREGUARD",
        xdp_counter::PASS_WIREGUARD as u64,
    ),
    ("WEFT_XDP_PASS_STUN", xdp_counter::PASS_STUN as u64),
    ("WEFT_XDP_PASS_DISCO", xdp_counter::PASS_DISCO as u64),
    ("WEFT_XDP_PASS_LARGE", xdp_counter::PASS_LARGE as u64),
    ("WEFT_XDP_DROP_JUNK", xdp_counter::DROP_JUNK as u64),
    (
        "WEFT_XDP_DROP_RATE_LIMIT",
        xdp_counter::DROP_RATE_LIMIT as u64,
    ),
    ("WEFT_XDP_COUNTERS", xdp_counter::COUNT as u64),
];

// The sizes and offsets the C header asserts (`_Static_assert` in weft_maps.h). The LPM key is
// 24 bytes in C: 4 of `prefixlen` (aya's `Key`) plus these 20.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<LpmKeyData>() == 20);
    assert!(offset_of!(LpmKeyData, gen) == 0);
    assert!(offset_of!(LpmKeyData, addr) == 2);
    assert!(size_of::<SlotBits>() == 32);
    assert!(size_of::<Slot>() == 40);
    assert!(offset_of!(Slot, port_first) == 32);
    assert!(size_of::<Local>() == 4);
    assert!(size_of::<TcConfig>() == 8);
    assert!(size_of::<XdpConfig>() == 8);
    assert!(size_of::<RateLimitKey>() == 24);
    assert!(offset_of!(RateLimitKey, addr) == 8);
    assert!(size_of::<RateLimitEntry>() == 16);
    assert!(size_of::<FlowKey>() == 40);
    assert!(offset_of!(FlowKey, local) == 16);
    assert!(offset_of!(FlowKey, remote_port) == 32);
    assert!(offset_of!(FlowKey, proto) == 36);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_bits_set_get_union() {
        let mut a = SlotBits::default();
        a.set(0);
        a.set(255);
        a.set(256); // out of range: ignored
        assert!(a.get(0) && a.get(255) && !a.get(1) && !a.get(256));
        let mut b = SlotBits::default();
        b.set(64);
        b.union(&a);
        assert_eq!(b.w, [1, 1, 0, 1 << 63]);
    }

    #[test]
    fn prefix_len_counts_the_header() {
        assert_eq!(LpmKeyData::prefix_len(0), 16);
        assert_eq!(LpmKeyData::prefix_len(128), 144);
    }

    #[test]
    fn define_names_are_unique() {
        for (i, (a, _)) in C_DEFINES.iter().enumerate() {
            for (b, _) in C_DEFINES.iter().skip(i + 1) {
                assert_ne!(a, b);
            }
        }
    }
}
