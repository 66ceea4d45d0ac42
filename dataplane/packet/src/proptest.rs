//! proptest strategies for packets and super-packets, for this crate's property tests and for
//! other crates' (enable the `proptest` feature).
//!
//! Why exported: the engine's tests need the same realistic inputs — kernel-shaped TUN reads
//! and the segments a peer sends — and should not grow their own generators. The strategies
//! produce [`Spec`]s (see [`crate::build`]), so a failing case shrinks to readable header
//! fields rather than to raw bytes.

use proptest::prelude::*;

use crate::build::Spec;
use crate::tcp::flags;

/// A super-packet to split: header fields, segment size and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperPacketCase {
    /// The header fields.
    pub spec: Spec,
    /// `gso_size`.
    pub gso_size: u16,
    /// The payload.
    pub payload: Vec<u8>,
}

impl SuperPacketCase {
    /// The TUN read (virtio-net header and packet), as the kernel writes it.
    pub fn frame(&self) -> Vec<u8> {
        self.spec.super_frame(self.gso_size, &self.payload)
    }

    /// The reference segments (see [`Spec::segments`]).
    pub fn segments(&self) -> Vec<Vec<u8>> {
        self.spec.segments(self.gso_size, &self.payload)
    }

    /// How many segments the payload splits into.
    pub fn segment_count(&self) -> usize {
        self.payload
            .len()
            .div_ceil(usize::from(self.gso_size.max(1)))
    }
}

/// TCP options: none, a timestamp option (NOP, NOP, TS), or random bytes in 4-byte words.
pub fn tcp_options() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(Vec::new()),
        2 => (any::<u32>(), any::<u32>()).prop_map(|(tsval, tsecr)| {
            let mut o = vec![1, 1, 8, 10];
            o.extend_from_slice(&tsval.to_be_bytes());
            o.extend_from_slice(&tsecr.to_be_bytes());
            o
        }),
        1 => (1usize..=10).prop_flat_map(|words| proptest::collection::vec(any::<u8>(), words * 4)),
    ]
}

/// TCP flags a GRO-mergeable super-packet may carry: ACK, and any of PSH, FIN, CWR, ECE.
pub fn mergeable_tcp_flags() -> impl Strategy<Value = u8> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(psh, fin, cwr, ece)| {
        let mut f = flags::ACK;
        for (on, bit) in [
            (psh, flags::PSH),
            (fin, flags::FIN),
            (cwr, flags::CWR),
            (ece, flags::ECE),
        ] {
            if on {
                f |= bit;
            }
        }
        f
    })
}

/// Header fields of a TCP or UDP packet over IPv4 (no options) or IPv6 (no extension headers),
/// with flags from [`mergeable_tcp_flags`]: everything GRO can merge.
pub fn spec() -> impl Strategy<Value = Spec> {
    (
        (
            any::<bool>(),
            any::<bool>(),
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
        ),
        (
            any::<u16>(),
            any::<u16>(),
            any::<u8>(),
            1u8..=255,
            any::<u16>(),
            any::<bool>(),
        ),
        (0u32..0x10_0000, any::<u32>(), any::<u32>(), any::<u16>()),
        (mergeable_tcp_flags(), tcp_options()),
    )
        .prop_map(
            |(
                (v6, udp, src, dst),
                (src_port, dst_port, tos, ttl, ident, df),
                (flow_label, seq, ack, window),
                (tcp_flags, tcp_options),
            )| Spec {
                v6,
                udp,
                src,
                dst,
                src_port,
                dst_port,
                tos,
                ttl,
                ident,
                df,
                flow_label: if v6 { flow_label } else { 0 },
                ip_options: Vec::new(),
                seq,
                ack,
                window,
                tcp_flags,
                tcp_options,
            },
        )
}

/// A [`spec`] that may also carry IPv4 options (GSO repeats them; GRO refuses them).
pub fn spec_with_ip_options() -> impl Strategy<Value = Spec> {
    (spec(), 0usize..=10, any::<u8>()).prop_map(|(mut s, words, fill)| {
        if !s.v6 {
            // NOPs then an end-of-options-list byte pattern; content does not matter to GSO.
            s.ip_options = vec![fill | 1; words * 4];
        }
        s
    })
}

/// A super-packet of 1..=`max_segments` segments whose IP packet fits 65 535 bytes, with a
/// segment size up to 1500 and a last segment of any length.
pub fn super_packet(max_segments: usize) -> impl Strategy<Value = SuperPacketCase> {
    super_packet_from(spec(), max_segments)
}

/// As [`super_packet`], over the header fields `spec` generates.
pub fn super_packet_from(
    spec: impl Strategy<Value = Spec>,
    max_segments: usize,
) -> impl Strategy<Value = SuperPacketCase> {
    (
        spec,
        1u16..=1500,
        1usize..=max_segments.max(1),
        any::<prop::sample::Index>(),
        any::<u64>(),
    )
        .prop_map(|(spec, gso_size, count, last, seed)| {
            let gso = usize::from(gso_size);
            let room = usize::from(u16::MAX) - spec.header_len();
            let count = count.min(room / gso).max(1);
            let last_len = 1 + last.index(gso);
            let len = ((count - 1) * gso + last_len).min(room);
            SuperPacketCase {
                spec,
                gso_size,
                payload: filler(seed, len),
            }
        })
}

/// `len` pseudo-random bytes from `seed` (xorshift), cheaper to shrink than a random vector.
pub fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
