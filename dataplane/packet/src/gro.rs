//! GRO merge: coalesce the decrypted packets of one receive batch into TCP/UDP super-packets,
//! so the engine writes one 64 KiB frame to the TUN instead of 45 small ones.
//!
//! Why follow the kernel to the letter: the TUN hands a merged frame to the local stack as one
//! `CHECKSUM_PARTIAL` GSO skb, and if the packet is forwarded the kernel segments it again.
//! Merging is only invisible if "merge, then re-segment" gives back the packets that arrived,
//! field for field. So the rules below are the kernel's own (`tcp_gro_receive` in
//! `net/ipv4/tcp_offload.c`, `udp_gro_receive_segment` in `net/ipv4/udp_offload.c`,
//! `inet_gro_flush`/`ipv6_gro_flush` in `include/net/gro.h`, and `inet_gro_receive`/
//! `ipv6_gro_receive`), and the `packet_gro_merge` fuzz target checks the round trip.
//!
//! # Which packets may merge
//! A packet is a *candidate* when it is plain IPv4 (IHL 5, no options, not a fragment,
//! reserved flag clear, valid header checksum, total length equal to the packet) or IPv6
//! without extension headers (payload length equal to the packet), carries TCP or (if enabled)
//! UDP, has a non-empty payload, and its TCP/UDP checksum verifies — a merged frame goes out
//! with `NEEDS_CSUM`, so an unverified segment would otherwise have its corruption "repaired".
//! A caller whose packets are already authenticated may skip that last check
//! ([`GroTable::trust_l4_checksums`]): WireGuard's Poly1305 tag proves the packet is the one the
//! peer sealed, so its checksum can only be wrong if the peer computed it wrong, and the kernel's
//! WireGuard marks every decrypted packet `CHECKSUM_UNNECESSARY` for that reason. Verifying is
//! a full pass over every byte received (about 4 % of the receiving side's CPU at 5 Gb/s here).
//! TCP segments with URG, RST or SYN never merge; UDP needs a non-zero checksum and a length
//! field equal to the datagram (the kernel's rules).
//!
//! A candidate joins the open batch of its flow — same IP version, addresses, protocol, ports,
//! and for IPv6 the flow label — when all of these hold, else the open batch is closed and the
//! candidate starts a new one:
//! * IPv4: same TOS, TTL and DF; the ID is the head's plus the number of segments so far, or
//!   (DF set, decided at the second segment) equal to the head's (fixed-ID flows).
//!   IPv6: same traffic class and hop limit.
//! * TCP: the segment does not carry CWR (CWR may only open a batch); the flag word — data
//!   offset, flags except CWR/FIN/PSH, **and the window** — equals the head's; same ACK number;
//!   **all option bytes identical** (timestamps included: the kernel compares every option
//!   word, TSval too); the sequence number follows the batch exactly; the payload is no longer
//!   than the head's (the head's payload is the `gso_size`).
//! * UDP: the length is no greater than the head's; at most 64 segments (`UDP_GRO_CNT_MAX`).
//! * The merged IP packet stays within 65 535 bytes and the caller's scratch buffer.
//!
//! Packets this module cannot key — neither TCP nor UDP, IPv4 fragments, IPv6 with extension
//! headers — are emitted alone and leave every batch alone, as in the kernel, where they take
//! other GRO paths.
//!
//! A batch closes after a segment shorter than the head's, after a TCP segment with PSH or FIN
//! (those are merged as the last segment and their flags carried into the super-packet), and
//! at 64 UDP segments. A TCP segment with PSH or FIN, or any non-candidate of the flow,
//! cannot *open* a batch: it is emitted on its own. Any packet of a flow that does not join
//! the open batch closes it, so the flow's packets are never reordered.
//!
//! # Output
//! Batches are emitted in the order of their first packet, which keeps every flow's order. A
//! batch of one is emitted as the caller's own bytes ([`Coalesced::Single`], to be written
//! behind an all-zero virtio header). A batch of several becomes one frame in the caller's
//! scratch buffer: a virtio header (`NEEDS_CSUM`, `csum_start` at the L4 header, `gso_type`
//! TCPV4/TCPV6 — with the ECN bit if the first segment had CWR, as `tcp_gro_complete` sets
//! `SKB_GSO_TCP_ECN` — or UDP_L4, `gso_size` the first segment's payload, `hdr_len` IP + L4
//! headers), the first packet's headers with lengths (and IPv4 header checksum) rewritten, the
//! L4 checksum field holding the pseudo-header sum, then every payload in order.
//!
//! The IPv4 ID of the merged packet is the first segment's. When the kernel re-segments it
//! the IDs increment again — exactly the originals, except for fixed-ID (DF) flows, whose IDs
//! come back incrementing: the virtio header cannot carry `SKB_GSO_TCP_FIXEDID`. RFC 6864
//! makes the ID of a DF packet meaningless, and the kernel's own TSO without `FIXEDID` does the
//! same.
//!
//! # Calling contract
//! [`GroTable::new`] allocates once; [`GroTable::coalesce`] never allocates. Call it once per
//! receive batch with every decrypted packet (padding already stripped) and a scratch buffer
//! of [`SCRATCH_LEN`] bytes; it calls `emit` once per frame to write, then forgets the batch.
//!
//! # The no-panic guarantee
//! Every packet is classified through the checked views of [`crate::ip`], [`crate::tcp`] and
//! [`crate::udp`]; the merger reads and writes only through `get`/`get_mut`, and batch sizes
//! are bounded before any copy. No input bytes can make this module panic.

use crate::checksum::Checksum;
use crate::gso::{put_u16, MAX_IP_LEN};
use crate::ip::{self, protocol, IpHeader, IPV4_HEADER_LEN, IPV6_HEADER_LEN};
use crate::tcp::{flags, TcpHeader, TCP_CHECKSUM_OFFSET, TCP_FLAGS_OFFSET};
use crate::udp::{UdpHeader, UDP_CHECKSUM_OFFSET, UDP_HEADER_LEN};
use crate::vnet::{GsoType, VirtioNetHdr, F_NEEDS_CSUM, VNET_HDR_LEN};

/// A scratch buffer of this size lets [`GroTable::coalesce`] build the largest super-packet
/// (a virtio-net header and a 65 535-byte IP packet).
pub const SCRATCH_LEN: usize = VNET_HDR_LEN + MAX_IP_LEN;

/// Most UDP datagrams in one merged frame (the kernel's `UDP_GRO_CNT_MAX`).
pub const MAX_UDP_SEGMENTS: u32 = 64;

/// One frame for the TUN, emitted by [`GroTable::coalesce`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coalesced<'a> {
    /// A packet that was not merged, as the caller passed it: write [`VirtioNetHdr::NONE`]
    /// in front (the engine has headroom where the WireGuard header was), then these bytes.
    Single {
        /// Its position in the caller's batch.
        index: usize,
        /// The packet, unchanged.
        packet: &'a [u8],
    },
    /// A super-packet in the scratch buffer: virtio-net header and IP packet, ready for one
    /// write.
    Merged {
        /// Position of its first segment in the caller's batch.
        first_index: usize,
        /// How many packets it carries.
        segments: usize,
        /// The frame (virtio-net header first).
        frame: &'a [u8],
    },
}

/// Counts from one [`GroTable::coalesce`] call, for the engine's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroStats {
    /// Packets passed in.
    pub packets: usize,
    /// Frames emitted (singles plus merged).
    pub frames: usize,
    /// Packets that went into merged frames.
    pub merged_packets: usize,
}

/// Addresses, protocol, ports and flow label: packets of one flow may merge, others never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    v6: bool,
    protocol: u8,
    src: [u8; 16],
    dst: [u8; 16],
    src_port: u16,
    dst_port: u16,
    flow_label: u32,
}

impl FlowKey {
    /// A cheap digest checked before the full comparison.
    fn digest(&self) -> u32 {
        let mut h = (u32::from(self.src_port) << 16) | u32::from(self.dst_port);
        for chunk in self.src.chunks_exact(4).chain(self.dst.chunks_exact(4)) {
            let w = u32::from_ne_bytes(<[u8; 4]>::try_from(chunk).unwrap_or_default());
            h = h.rotate_left(5) ^ w;
        }
        h ^ self.flow_label ^ u32::from(self.protocol)
    }
}

/// The network-layer fields GRO compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Net {
    V4 {
        tos: u8,
        ttl: u8,
        df: bool,
        ident: u16,
    },
    V6 {
        traffic_class: u8,
        hop_limit: u8,
    },
}

/// The transport-layer facts GRO compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp {
        seq: u32,
        ack: u32,
        flag_word: u32,
        flags: u8,
        options_end: u16,
    },
    Udp,
}

/// A packet that may merge.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    key: FlowKey,
    net: Net,
    transport: Transport,
    ip_hlen: u16,
    hdr_len: u16,
    payload_len: u16,
}

impl Candidate {
    /// Whether the segment may open a batch (`tcp_gro_receive`'s final flush check).
    fn can_open(&self) -> bool {
        match self.transport {
            Transport::Tcp { flags: f, .. } => f & (flags::PSH | flags::FIN) == 0,
            Transport::Udp => true,
        }
    }
}

/// How one packet of the batch is treated.
#[derive(Debug, Clone, Copy)]
enum Class {
    /// Not TCP/UDP we can key: emitted alone without touching any batch.
    Opaque,
    /// Keyed but unmergeable: closes its flow's open batch and is emitted alone.
    Alone(FlowKey),
    /// May join or open a batch.
    Candidate(Candidate),
}

/// One output frame in the making: a run of packets of one flow.
#[derive(Debug, Clone, Copy)]
struct Batch {
    head: u32,
    last: u32,
    count: u32,
    /// `Some` while more segments may join.
    open: Option<FlowKey>,
    first: Candidate,
    /// Bytes of the merged IP packet so far.
    ip_len: u32,
    /// FIN/PSH of later segments, or-ed into the first segment's flags on output.
    extra_flags: u8,
    /// The flow reuses one IPv4 ID (decided at the second segment).
    fixed_id: bool,
}

const NO_NEXT: u32 = u32::MAX;

/// Per-batch coalescing state with a fixed capacity, reused across receive batches.
///
/// See the [module doc](self) for the rules and the calling contract.
#[derive(Debug, Clone)]
pub struct GroTable {
    capacity: usize,
    udp: bool,
    verify_l4: bool,
    batches: Vec<Batch>,
    /// Open batches: key digest and index into `batches`.
    open: Vec<(u32, u32)>,
    /// For each packet of the chunk, the next packet of its batch.
    next: Vec<u32>,
}

impl GroTable {
    /// Creates a table for receive batches of up to `capacity` packets (larger batches are
    /// processed in chunks of `capacity`). `udp` enables UDP merging; pass whether the kernel
    /// accepted USO4/USO6 (`TUNSETOFFLOAD` with `TUN_F_USO4|TUN_F_USO6`), because a UDP_L4
    /// frame is only legal then.
    pub fn new(capacity: usize, udp: bool) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as usize - 1);
        Self {
            capacity,
            udp,
            verify_l4: true,
            batches: Vec::with_capacity(capacity),
            open: Vec::with_capacity(capacity),
            next: vec![NO_NEXT; capacity],
        }
    }

    /// Stops verifying TCP/UDP checksums before merging, for packets whose integrity the
    /// caller has already established (decrypted and authenticated WireGuard packets): see
    /// the module documentation. IPv4 header checksums are still verified.
    pub fn trust_l4_checksums(&mut self) {
        self.verify_l4 = false;
    }

    /// The most packets coalesced together in one pass.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Coalesces `packets` (one receive batch of decrypted IP packets) and calls `emit` once
    /// per frame to write to the TUN, in an order that keeps every flow's packets in order.
    /// Merged frames are built in `scratch` (see [`SCRATCH_LEN`]; a smaller buffer just caps
    /// the merged size).
    pub fn coalesce<P: AsRef<[u8]>>(
        &mut self,
        packets: &[P],
        scratch: &mut [u8],
        mut emit: impl FnMut(Coalesced<'_>),
    ) -> GroStats {
        let mut stats = GroStats {
            packets: packets.len(),
            ..GroStats::default()
        };
        let limit = scratch.len().saturating_sub(VNET_HDR_LEN).min(MAX_IP_LEN) as u32;
        for (chunk_no, chunk) in packets.chunks(self.capacity).enumerate() {
            let base = chunk_no * self.capacity;
            self.batches.clear();
            self.open.clear();
            for (i, p) in chunk.iter().enumerate() {
                self.push(i as u32, p.as_ref(), chunk, limit);
            }
            for b in &self.batches {
                stats.frames += 1;
                let head = b.head as usize;
                let Some(first) = chunk.get(head) else {
                    continue;
                };
                if b.count == 1 {
                    emit(Coalesced::Single {
                        index: base + head,
                        packet: first.as_ref(),
                    });
                    continue;
                }
                stats.merged_packets += b.count as usize;
                let len = build(b, chunk, &self.next, scratch);
                emit(Coalesced::Merged {
                    first_index: base + head,
                    segments: b.count as usize,
                    frame: scratch.get(..len).unwrap_or_default(),
                });
            }
        }
        stats
    }

    /// Adds packet `i` of the chunk to the batches.
    fn push<P: AsRef<[u8]>>(&mut self, i: u32, packet: &[u8], chunk: &[P], limit: u32) {
        if let Some(n) = self.next.get_mut(i as usize) {
            *n = NO_NEXT;
        }
        let class = classify(packet, self.udp, self.verify_l4);
        let key = match class {
            Class::Opaque => None,
            Class::Alone(key) => Some(key),
            Class::Candidate(c) => Some(c.key),
        };
        if let Some(key) = key {
            let digest = key.digest();
            let found = self.open.iter().position(|&(d, b)| {
                d == digest
                    && self
                        .batches
                        .get(b as usize)
                        .is_some_and(|b| b.open == Some(key))
            });
            if let Some(pos) = found {
                let (_, b) = self.open.swap_remove(pos);
                if let (Class::Candidate(c), Some(batch)) =
                    (class, self.batches.get_mut(b as usize))
                {
                    if let Some(still_open) = append(batch, &c, packet, chunk, limit) {
                        if let Some(n) = self.next.get_mut(batch.last as usize) {
                            *n = i;
                        }
                        batch.last = i;
                        if still_open {
                            self.open.push((digest, b));
                        } else {
                            batch.open = None;
                        }
                        return;
                    }
                }
                if let Some(batch) = self.batches.get_mut(b as usize) {
                    batch.open = None;
                }
            }
        }
        let (first, open) = match class {
            Class::Candidate(c) => (c, c.can_open().then_some(c.key)),
            // The first-segment facts of a batch that can never grow are never read.
            Class::Opaque | Class::Alone(_) => (PLACEHOLDER, None),
        };
        if let Some(key) = open {
            self.open.push((key.digest(), self.batches.len() as u32));
        }
        self.batches.push(Batch {
            head: i,
            last: i,
            count: 1,
            open,
            first,
            ip_len: u32::from(first.hdr_len) + u32::from(first.payload_len),
            extra_flags: 0,
            fixed_id: false,
        });
    }
}

const PLACEHOLDER: Candidate = Candidate {
    key: FlowKey {
        v6: false,
        protocol: 0,
        src: [0; 16],
        dst: [0; 16],
        src_port: 0,
        dst_port: 0,
        flow_label: 0,
    },
    net: Net::V6 {
        traffic_class: 0,
        hop_limit: 0,
    },
    transport: Transport::Udp,
    ip_hlen: 0,
    hdr_len: 0,
    payload_len: 0,
};

/// Tries to append segment `c` (whose bytes are `packet`) to `b`. Returns `None` if it may not join, else
/// whether the batch stays open. On success the batch's counters are updated (not `last`).
fn append<P: AsRef<[u8]>>(
    b: &mut Batch,
    c: &Candidate,
    packet: &[u8],
    chunk: &[P],
    limit: u32,
) -> Option<bool> {
    let first = &b.first;
    let mut fixed_id = b.fixed_id;
    match (first.net, c.net) {
        (
            Net::V4 {
                tos,
                ttl,
                df,
                ident,
            },
            Net::V4 {
                tos: tos2,
                ttl: ttl2,
                df: df2,
                ident: ident2,
            },
        ) => {
            if tos != tos2 || ttl != ttl2 || df != df2 {
                return None;
            }
            let offset = ident2.wrapping_sub(ident);
            if b.count == 1 && df && offset == 0 {
                fixed_id = true;
            }
            let expected = if fixed_id && df { 0 } else { b.count as u16 };
            if offset != expected {
                return None;
            }
        }
        (
            Net::V6 {
                traffic_class,
                hop_limit,
            },
            Net::V6 {
                traffic_class: tc2,
                hop_limit: hl2,
            },
        ) => {
            if traffic_class != tc2 || hop_limit != hl2 {
                return None;
            }
        }
        _ => return None,
    }
    if c.payload_len > first.payload_len || c.hdr_len != first.hdr_len {
        return None;
    }
    let ip_len = b.ip_len + u32::from(c.payload_len);
    if ip_len > limit {
        return None;
    }
    let still_open = match (first.transport, c.transport) {
        (
            Transport::Tcp {
                seq,
                ack,
                flag_word,
                options_end,
                ..
            },
            Transport::Tcp {
                seq: seq2,
                ack: ack2,
                flag_word: word2,
                flags: flags2,
                ..
            },
        ) => {
            let loose = u32::from(flags::CWR | flags::FIN | flags::PSH) << 16;
            if flags2 & flags::CWR != 0
                || (flag_word ^ word2) & !loose != 0
                || ack != ack2
                || seq2 != seq.wrapping_add(b.ip_len - u32::from(first.hdr_len))
            {
                return None;
            }
            let options =
                usize::from(first.ip_hlen) + crate::tcp::TCP_HEADER_LEN..usize::from(options_end);
            let head_packet = chunk.get(b.head as usize)?.as_ref();
            if head_packet.get(options.clone())? != packet.get(options)? {
                return None;
            }
            b.extra_flags |= flags2 & (flags::FIN | flags::PSH);
            flags2 & (flags::FIN | flags::PSH) == 0 && c.payload_len == first.payload_len
        }
        (Transport::Udp, Transport::Udp) => {
            b.count + 1 < MAX_UDP_SEGMENTS && c.payload_len == first.payload_len
        }
        _ => return None,
    };
    b.count += 1;
    b.ip_len = ip_len;
    b.fixed_id = fixed_id;
    Some(still_open)
}

/// Classifies one packet (see the module doc for the candidate rules).
fn classify(packet: &[u8], udp: bool, verify_l4: bool) -> Class {
    let Ok(ip) = IpHeader::parse(packet) else {
        return Class::Opaque;
    };
    let (net, v6, protocol_no, ip_hlen, src, dst, flow_label, plain) = match &ip {
        IpHeader::V4(h) => {
            if h.is_fragment() {
                return Class::Opaque;
            }
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src[..4].copy_from_slice(&h.src());
            dst[..4].copy_from_slice(&h.dst());
            let plain = h.header_len() == IPV4_HEADER_LEN
                && !h.reserved_flag()
                && usize::from(h.total_len()) == packet.len()
                && h.checksum_valid();
            let net = Net::V4 {
                tos: h.tos(),
                ttl: h.ttl(),
                df: h.dont_fragment(),
                ident: h.ident(),
            };
            (net, false, h.protocol(), h.header_len(), src, dst, 0, plain)
        }
        IpHeader::V6(h) => {
            let plain = usize::from(h.payload_len()) + IPV6_HEADER_LEN == packet.len();
            let net = Net::V6 {
                traffic_class: h.traffic_class(),
                hop_limit: h.hop_limit(),
            };
            let flow = h.flow_label();
            (
                net,
                true,
                h.next_header(),
                IPV6_HEADER_LEN,
                h.src(),
                h.dst(),
                flow,
                plain,
            )
        }
    };
    let l4 = packet.get(ip_hlen..).unwrap_or_default();
    let (src_port, dst_port, transport, l4_hlen, l4_ok) = match protocol_no {
        protocol::TCP => {
            let Ok(tcp) = TcpHeader::parse(l4) else {
                return Class::Opaque;
            };
            let f = tcp.flags();
            let transport = Transport::Tcp {
                seq: tcp.seq(),
                ack: tcp.ack(),
                flag_word: tcp.flag_word(),
                flags: f,
                options_end: (ip_hlen + tcp.header_len()) as u16,
            };
            let ok = f & (flags::URG | flags::RST | flags::SYN) == 0;
            (
                tcp.src_port(),
                tcp.dst_port(),
                transport,
                tcp.header_len(),
                ok,
            )
        }
        protocol::UDP => {
            let Ok(u) = UdpHeader::parse(l4) else {
                return Class::Opaque;
            };
            let ok = udp && u.checksum() != 0 && usize::from(u.length()) == l4.len();
            (
                u.src_port(),
                u.dst_port(),
                Transport::Udp,
                UDP_HEADER_LEN,
                ok,
            )
        }
        _ => return Class::Opaque,
    };
    let key = FlowKey {
        v6,
        protocol: protocol_no,
        src,
        dst,
        src_port,
        dst_port,
        flow_label,
    };
    let hdr_len = ip_hlen + l4_hlen;
    let payload_len = packet.len().saturating_sub(hdr_len);
    if !plain || !l4_ok || payload_len == 0 || packet.len() > MAX_IP_LEN {
        return Class::Alone(key);
    }
    if verify_l4 {
        let mut sum = ip.pseudo_header(protocol_no, l4.len() as u32);
        sum.add_bytes(l4);
        if !sum.is_valid() {
            return Class::Alone(key);
        }
    }
    Class::Candidate(Candidate {
        key,
        net,
        transport,
        ip_hlen: ip_hlen as u16,
        hdr_len: hdr_len as u16,
        payload_len: payload_len as u16,
    })
}

/// Writes batch `b` (at least two packets) as a frame at the start of `scratch` and returns
/// the frame's length. The batch's size was bounded by the scratch length when it grew.
fn build<P: AsRef<[u8]>>(b: &Batch, chunk: &[P], next: &[u32], scratch: &mut [u8]) -> usize {
    let first = &b.first;
    let ip_hlen = usize::from(first.ip_hlen);
    let hdr_len = usize::from(first.hdr_len);
    let ip_len = b.ip_len as usize;
    let frame_len = VNET_HDR_LEN + ip_len;
    let Some(frame) = scratch.get_mut(..frame_len) else {
        return 0;
    };
    let (vnet, ip_packet) = frame.split_at_mut(VNET_HDR_LEN);
    let head = chunk
        .get(b.head as usize)
        .map(AsRef::as_ref)
        .unwrap_or_default();
    if let (Some(dst), Some(src)) = (ip_packet.get_mut(..hdr_len), head.get(..hdr_len)) {
        dst.copy_from_slice(src);
    }
    let mut at = hdr_len;
    let mut i = b.head;
    while i != NO_NEXT {
        let payload = chunk
            .get(i as usize)
            .and_then(|p| p.as_ref().get(hdr_len..))
            .unwrap_or_default();
        if let Some(dst) = ip_packet.get_mut(at..at + payload.len()) {
            dst.copy_from_slice(payload);
        }
        at += payload.len();
        i = next.get(i as usize).copied().unwrap_or(NO_NEXT);
    }

    let (ip_header, l4) = ip_packet.split_at_mut(ip_hlen);
    let l4_len = ip_len - ip_hlen;
    // `ip_len` was bounded by MAX_IP_LEN when the batch grew.
    let gso_type = match first.net {
        Net::V4 { ident, .. } => {
            ip::rewrite_ipv4(ip_header, ip_len as u16, ident);
            GsoType::TcpV4
        }
        Net::V6 { .. } => {
            ip::rewrite_ipv6(ip_header, l4_len as u16);
            GsoType::TcpV6
        }
    };
    let (gso_type, csum_offset, ecn) = match first.transport {
        Transport::Tcp { flags: f, .. } => {
            if let Some(byte) = l4.get_mut(TCP_FLAGS_OFFSET) {
                *byte |= b.extra_flags;
            }
            (gso_type, TCP_CHECKSUM_OFFSET, f & flags::CWR != 0)
        }
        Transport::Udp => {
            put_u16(l4, 4, l4_len as u16);
            (GsoType::UdpL4, UDP_CHECKSUM_OFFSET, false)
        }
    };
    let pseudo = match IpHeader::parse(ip_header) {
        Ok(ip) => ip.pseudo_header(first.key.protocol, l4_len as u32),
        Err(_) => Checksum::new(),
    };
    put_u16(l4, csum_offset, pseudo.fold());
    let hdr = VirtioNetHdr {
        flags: F_NEEDS_CSUM,
        gso_type,
        ecn,
        hdr_len: first.hdr_len,
        gso_size: first.payload_len,
        csum_start: first.ip_hlen,
        csum_offset: csum_offset as u16,
    };
    let _ = hdr.emit(vnet);
    frame_len
}

#[cfg(test)]
mod tests;
