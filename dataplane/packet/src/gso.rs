//! GSO split: turn one TUN read (a virtio-net header and an IP packet that may be a 64 KiB
//! TCP or UDP super-packet) into wire-sized packets, each ready to be encrypted.
//!
//! Why here and not in the kernel: with TSO/USO enabled on the TUN, the kernel stops segmenting
//! for us — one `read` returns up to 64 KiB of one flow, which is what makes the read side
//! cheap. The price is that we must do exactly what the kernel's `tcp_gso_segment` /
//! `__udp_gso_segment` and `skb_checksum_help` would have done, because the segments go on to a
//! WireGuard peer whose stack checks every field.
//!
//! # What each segment gets
//! * The super-packet's IP header (options and IPv6 Hop-by-Hop/Destination options included),
//!   with IPv4 total length, identification (`id + i` for segment `i`, as the kernel
//!   increments it; the virtio header cannot express the kernel's fixed-ID mode) and header
//!   checksum, or the IPv6 payload length, rewritten.
//! * TCP: the header with the sequence number advanced by `i * gso_size`; FIN and PSH kept on
//!   the last segment only, CWR on the first only (`tcp_gso_segment`); a full checksum.
//! * UDP: the header with the length rewritten and a full checksum.
//! * A computed checksum of 0 is stored as `0xffff` (the same value in one's complement, and
//!   the only legal form for UDP, where 0 means "no checksum").
//!
//! A packet with `gso_type` NONE is one segment: copied as is, and if `NEEDS_CSUM` is set its
//! partial checksum is completed (the field holds the pseudo-header sum; we add
//! `csum_start..end` and store the complement). [`complete_partial_checksum`] does the same in
//! place.
//!
//! # What is not trusted
//! The read length is authoritative: the super-packet's own IPv4 total length / IPv6 payload
//! length is ignored (the kernel may leave it stale for 64 KiB packets). `hdr_len` is ignored
//! and recomputed from the TCP data offset (the kernel may set it to the whole first packet on
//! the forwarding path, as wireguard-go notes). `csum_start` and `csum_offset` must agree with
//! the parsed headers when `NEEDS_CSUM` is set. IPv6 Routing and Fragment headers are refused
//! (see [`crate::ip`]).
//!
//! # Buffers
//! Nothing allocates. The engine owns a fixed pool (64 buffers of MTU + headroom) and calls
//! [`split`] (or [`SuperPacket::write_segment`] per buffer). Each segment is written at
//! `headroom`, so the 16-byte WireGuard transport header can be written in front of it and the
//! packet encrypted in place without a copy. [`split`] checks the segment count and every
//! buffer's size before it writes anything, so a failed split leaves the pool untouched.
//!
//! # The no-panic guarantee
//! [`SuperPacket::parse`] validates everything the writers rely on (header lengths, offsets,
//! segment count and size); the writers then use only `get`/`get_mut` and checked splits, so
//! no input — however hostile the header or the bytes — can make this module panic. The
//! `packet_gso_split` fuzz target checks that, and that segment payloads add up to the
//! super-packet's payload.

use crate::checksum::Checksum;
use crate::ip::{self, protocol, IpHeader};
use crate::tcp::{flags, TcpHeader, TCP_CHECKSUM_OFFSET, TCP_FLAGS_OFFSET};
use crate::udp::{UDP_CHECKSUM_OFFSET, UDP_HEADER_LEN};
use crate::vnet::{GsoType, VirtioNetHdr, VnetError};
use crate::HeaderError;

/// Largest IPv4 packet, and largest IPv6 payload: the 16-bit length fields.
pub const MAX_IP_LEN: usize = u16::MAX as usize;

/// Why a TUN read could not be split into segments. The engine drops the read and counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GsoError {
    /// The virtio-net header itself is short or names an unknown GSO type.
    #[error(transparent)]
    Vnet(#[from] VnetError),
    /// An IP, IPv6 extension or TCP header is malformed or truncated.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// A GSO type other than NONE with `gso_size` 0.
    #[error("GSO packet with gso_size 0")]
    ZeroGsoSize,
    /// The IP version does not match the GSO type (TCPV4 over IPv6, TCPV6 over IPv4).
    #[error("GSO type {gso_type:?} over IP version {version}")]
    VersionMismatch {
        /// The GSO type from the header.
        gso_type: GsoType,
        /// The IP version of the packet.
        version: u8,
    },
    /// The transport protocol does not match the GSO type. For IPv6 this is also how a
    /// Routing or Fragment extension header shows up (its number is reported).
    #[error("GSO type {gso_type:?} but upper-layer protocol {protocol}")]
    UnexpectedProtocol {
        /// The GSO type from the header.
        gso_type: GsoType,
        /// The protocol (or unsupported extension header) found.
        protocol: u8,
    },
    /// An IPv4 super-packet that is a fragment (more-fragments or an offset set).
    #[error("GSO packet is an IPv4 fragment")]
    Fragment,
    /// `NEEDS_CSUM` is set but `csum_start`/`csum_offset` do not point at the checksum field
    /// of the parsed transport header (or, for a single packet, past its end).
    #[error("bad checksum offsets: csum_start {csum_start}, csum_offset {csum_offset}")]
    ChecksumOffsets {
        /// `csum_start` from the header.
        csum_start: u16,
        /// `csum_offset` from the header.
        csum_offset: u16,
    },
    /// A GSO packet with headers but no payload.
    #[error("GSO packet without payload")]
    EmptyPayload,
    /// A segment would not fit the 16-bit IP length field.
    #[error("segment of {0} bytes exceeds the IP length field")]
    SegmentTooLong(usize),
    /// More segments than output buffers (or length slots).
    #[error("{needed} segments but {available} output buffers")]
    TooManySegments {
        /// Segments the packet splits into.
        needed: usize,
        /// Output buffers available.
        available: usize,
    },
    /// An output buffer is smaller than headroom plus its segment.
    #[error("output buffer of {available} bytes, need {needed}")]
    BufferTooSmall {
        /// Bytes the segment needs, headroom included.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// [`SuperPacket::write_segment`] was asked for a segment past the last.
    #[error("segment {index} of {count}")]
    SegmentIndex {
        /// The index asked for.
        index: usize,
        /// Segments in the packet.
        count: usize,
    },
}

/// The transport protocol of a segmented packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4 {
    Tcp { seq: u32 },
    Udp,
}

/// Everything [`SuperPacket::write_segment`] needs, established by [`SuperPacket::parse`].
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Pseudo-header sum without the length (added per segment).
    pseudo: Checksum,
    v4_ident: Option<u16>,
    ip_hlen: usize,
    l4: L4,
    hdr_len: usize,
    gso_size: usize,
    payload_len: usize,
    count: usize,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `gso_type` NONE: one segment, the packet itself; `Some(start, field)` completes a
    /// partial checksum.
    Single(Option<(usize, usize)>),
    /// A super-packet to segment.
    Segmented(Plan),
}

/// A validated TUN read, ready to be written out as segments.
#[derive(Debug, Clone, Copy)]
pub struct SuperPacket<'a> {
    packet: &'a [u8],
    kind: Kind,
}

impl<'a> SuperPacket<'a> {
    /// Validates one TUN read given as the whole frame (virtio-net header, then packet).
    ///
    /// # Errors
    /// [`GsoError::Vnet`] for a bad header; otherwise as [`parse`](Self::parse).
    pub fn from_frame(frame: &'a [u8]) -> Result<Self, GsoError> {
        let (hdr, packet) = VirtioNetHdr::split_frame(frame)?;
        Self::parse(&hdr, packet)
    }

    /// Validates `packet` against its virtio-net header `hdr`.
    ///
    /// # Errors
    /// Any [`GsoError`] that describes the packet (not the buffers): see the variants.
    pub fn parse(hdr: &VirtioNetHdr, packet: &'a [u8]) -> Result<Self, GsoError> {
        let kind = match hdr.gso_type {
            GsoType::None => Kind::Single(single_checksum(hdr, packet.len())?),
            gso_type => Kind::Segmented(plan(hdr, gso_type, packet)?),
        };
        Ok(Self { packet, kind })
    }

    /// Number of segments this read splits into (1 for a single packet).
    pub fn segment_count(&self) -> usize {
        match self.kind {
            Kind::Single(_) => 1,
            Kind::Segmented(p) => p.count,
        }
    }

    /// Length of the longest segment (the first), headers included.
    pub fn max_segment_len(&self) -> usize {
        match self.kind {
            Kind::Single(_) => self.packet.len(),
            Kind::Segmented(p) => p.hdr_len + p.gso_size.min(p.payload_len),
        }
    }

    /// Length of segment `index`, headers included, or `None` past the last segment.
    pub fn segment_len(&self, index: usize) -> Option<usize> {
        match self.kind {
            Kind::Single(_) => (index == 0).then_some(self.packet.len()),
            Kind::Segmented(p) => {
                let start = index.checked_mul(p.gso_size)?;
                (index < p.count).then(|| p.hdr_len + p.gso_size.min(p.payload_len - start))
            }
        }
    }

    /// Bytes of transport payload the super-packet carries (for a single packet: everything).
    pub fn payload_len(&self) -> usize {
        match self.kind {
            Kind::Single(_) => self.packet.len(),
            Kind::Segmented(p) => p.payload_len,
        }
    }

    /// Length of the headers every segment repeats (0 for a single packet).
    pub fn header_len(&self) -> usize {
        match self.kind {
            Kind::Single(_) => 0,
            Kind::Segmented(p) => p.hdr_len,
        }
    }

    /// Writes segment `index` at the start of `out` and returns its length.
    ///
    /// # Errors
    /// [`GsoError::SegmentIndex`] past the last segment; [`GsoError::BufferTooSmall`] if `out`
    /// cannot hold it (nothing is written then).
    pub fn write_segment(&self, index: usize, out: &mut [u8]) -> Result<usize, GsoError> {
        let count = self.segment_count();
        let len = self
            .segment_len(index)
            .ok_or(GsoError::SegmentIndex { index, count })?;
        let available = out.len();
        let out = out.get_mut(..len).ok_or(GsoError::BufferTooSmall {
            needed: len,
            available,
        })?;
        match self.kind {
            Kind::Single(csum) => {
                out.copy_from_slice(self.packet);
                if let Some((start, field)) = csum {
                    complete_at(out, start, field);
                }
            }
            Kind::Segmented(p) => write_one(&p, self.packet, index, out),
        }
        Ok(len)
    }

    /// Writes every segment into `bufs[i][headroom..]` and its length into `lens[i]`;
    /// returns the number of segments.
    ///
    /// # Errors
    /// [`GsoError::TooManySegments`] if `bufs` or `lens` is too short,
    /// [`GsoError::BufferTooSmall`] if a buffer cannot hold headroom plus its segment. Both are
    /// checked before anything is written.
    pub fn split_into<B: AsMut<[u8]>>(
        &self,
        headroom: usize,
        bufs: &mut [B],
        lens: &mut [usize],
    ) -> Result<usize, GsoError> {
        let count = self.segment_count();
        let available = bufs.len().min(lens.len());
        if count > available {
            return Err(GsoError::TooManySegments {
                needed: count,
                available,
            });
        }
        for (i, buf) in bufs.iter_mut().take(count).enumerate() {
            let needed = headroom + self.segment_len(i).unwrap_or_default();
            let available = buf.as_mut().len();
            if available < needed {
                return Err(GsoError::BufferTooSmall { needed, available });
            }
        }
        for (i, (buf, len)) in bufs.iter_mut().zip(lens.iter_mut()).take(count).enumerate() {
            let out = buf.as_mut().get_mut(headroom..).unwrap_or_default();
            *len = self.write_segment(i, out)?;
        }
        Ok(count)
    }
}

/// Splits one TUN read (`hdr` and `packet`) into `bufs`, each segment at offset `headroom`,
/// lengths in `lens`; returns the number of segments. See [`SuperPacket::split_into`].
///
/// # Errors
/// As [`SuperPacket::parse`] and [`SuperPacket::split_into`].
pub fn split<B: AsMut<[u8]>>(
    hdr: &VirtioNetHdr,
    packet: &[u8],
    headroom: usize,
    bufs: &mut [B],
    lens: &mut [usize],
) -> Result<usize, GsoError> {
    SuperPacket::parse(hdr, packet)?.split_into(headroom, bufs, lens)
}

/// Completes the partial checksum of a single (`gso_type` NONE) packet in place, if its
/// header has `NEEDS_CSUM`; otherwise does nothing.
///
/// # Errors
/// [`GsoError::ChecksumOffsets`] if the checksum field lies outside the packet (nothing is
/// written then).
pub fn complete_partial_checksum(hdr: &VirtioNetHdr, packet: &mut [u8]) -> Result<(), GsoError> {
    if let Some((start, field)) = single_checksum(hdr, packet.len())? {
        complete_at(packet, start, field);
    }
    Ok(())
}

/// Where a single packet's partial checksum is, if it has one.
fn single_checksum(hdr: &VirtioNetHdr, len: usize) -> Result<Option<(usize, usize)>, GsoError> {
    if !hdr.needs_csum() {
        return Ok(None);
    }
    let start = usize::from(hdr.csum_start);
    let field = start + usize::from(hdr.csum_offset);
    if field + 2 > len {
        return Err(GsoError::ChecksumOffsets {
            csum_start: hdr.csum_start,
            csum_offset: hdr.csum_offset,
        });
    }
    Ok(Some((start, field)))
}

/// Sums `packet[start..]` (the field holding the pseudo-header sum) and stores the complement
/// in the field. The caller checked `field + 2 <= packet.len()` and `start <= field`.
fn complete_at(packet: &mut [u8], start: usize, field: usize) {
    let mut c = Checksum::new();
    c.add_bytes(packet.get(start..).unwrap_or_default());
    put_u16(packet, field, nonzero(c.finish()));
}

/// Validates a super-packet and works out its segmentation.
fn plan(hdr: &VirtioNetHdr, gso_type: GsoType, packet: &[u8]) -> Result<Plan, GsoError> {
    if hdr.gso_size == 0 {
        return Err(GsoError::ZeroGsoSize);
    }
    let ip = IpHeader::parse(packet)?;
    let (protocol_found, ip_hlen, v4_ident) = match (&ip, gso_type) {
        (IpHeader::V4(h), GsoType::TcpV4 | GsoType::UdpL4) => {
            if h.is_fragment() {
                return Err(GsoError::Fragment);
            }
            (h.protocol(), h.header_len(), Some(h.ident()))
        }
        (IpHeader::V6(h), GsoType::TcpV6 | GsoType::UdpL4) => {
            let (next, offset) = h.upper_layer(packet)?;
            (next, offset, None)
        }
        _ => {
            return Err(GsoError::VersionMismatch {
                gso_type,
                version: ip.version(),
            })
        }
    };
    let (expected, csum_offset) = if gso_type.is_tcp() {
        (protocol::TCP, TCP_CHECKSUM_OFFSET)
    } else {
        (protocol::UDP, UDP_CHECKSUM_OFFSET)
    };
    if protocol_found != expected {
        return Err(GsoError::UnexpectedProtocol {
            gso_type,
            protocol: protocol_found,
        });
    }
    if hdr.needs_csum()
        && (usize::from(hdr.csum_start) != ip_hlen || usize::from(hdr.csum_offset) != csum_offset)
    {
        return Err(GsoError::ChecksumOffsets {
            csum_start: hdr.csum_start,
            csum_offset: hdr.csum_offset,
        });
    }
    let l4_bytes = packet.get(ip_hlen..).unwrap_or_default();
    let (l4, l4_hlen) = if gso_type.is_tcp() {
        let tcp = TcpHeader::parse(l4_bytes)?;
        (L4::Tcp { seq: tcp.seq() }, tcp.header_len())
    } else {
        if l4_bytes.len() < UDP_HEADER_LEN {
            return Err(HeaderError::Truncated {
                needed: ip_hlen + UDP_HEADER_LEN,
                have: packet.len(),
            }
            .into());
        }
        (L4::Udp, UDP_HEADER_LEN)
    };
    let hdr_len = ip_hlen + l4_hlen;
    let payload_len = packet.len() - hdr_len;
    if payload_len == 0 {
        return Err(GsoError::EmptyPayload);
    }
    let gso_size = usize::from(hdr.gso_size);
    let longest = hdr_len + gso_size.min(payload_len);
    // IPv4 total length covers the whole packet; the IPv6 payload length excludes the fixed
    // header.
    let limit = MAX_IP_LEN
        + if v4_ident.is_some() {
            0
        } else {
            ip::IPV6_HEADER_LEN
        };
    if longest > limit {
        return Err(GsoError::SegmentTooLong(longest));
    }
    Ok(Plan {
        pseudo: ip.pseudo_header(expected, 0),
        v4_ident,
        ip_hlen,
        l4,
        hdr_len,
        gso_size,
        payload_len,
        count: payload_len.div_ceil(gso_size),
    })
}

/// Writes segment `index` of a validated super-packet into `out`, which has exactly the
/// segment's length.
fn write_one(p: &Plan, packet: &[u8], index: usize, out: &mut [u8]) {
    let start = index * p.gso_size;
    let end = (start + p.gso_size).min(p.payload_len);
    let seg_len = out.len();
    let (headers, payload) = out.split_at_mut(p.hdr_len.min(seg_len));
    headers.copy_from_slice(packet.get(..p.hdr_len).unwrap_or_default());
    payload.copy_from_slice(
        packet
            .get(p.hdr_len + start..p.hdr_len + end)
            .unwrap_or_default(),
    );

    let (ip_header, l4_header) = headers.split_at_mut(p.ip_hlen);
    // Lengths were bounded by `plan` (SegmentTooLong), so these conversions are exact.
    let l4_len = seg_len - p.ip_hlen;
    match p.v4_ident {
        Some(ident) => {
            ip::rewrite_ipv4(ip_header, seg_len as u16, ident.wrapping_add(index as u16))
        }
        None => ip::rewrite_ipv6(ip_header, (seg_len - ip::IPV6_HEADER_LEN) as u16),
    }

    let csum_field = match p.l4 {
        L4::Tcp { seq } => {
            put_u32(l4_header, 4, seq.wrapping_add(start as u32));
            let mut clear = 0;
            if end != p.payload_len {
                clear |= flags::FIN | flags::PSH;
            }
            if index != 0 {
                clear |= flags::CWR;
            }
            if let Some(f) = l4_header.get_mut(TCP_FLAGS_OFFSET) {
                *f &= !clear;
            }
            TCP_CHECKSUM_OFFSET
        }
        L4::Udp => {
            put_u16(l4_header, 4, l4_len as u16);
            UDP_CHECKSUM_OFFSET
        }
    };
    put_u16(l4_header, csum_field, 0);

    let mut c = p.pseudo;
    c.add_u32(l4_len as u32);
    c.add_bytes(l4_header);
    c.add_bytes(payload);
    put_u16(l4_header, csum_field, nonzero(c.finish()));
}

/// A computed checksum of 0 is stored as `0xffff` (see the module doc).
fn nonzero(check: u16) -> u16 {
    if check == 0 {
        0xffff
    } else {
        check
    }
}

/// Writes a big-endian `u16` at `at`; does nothing out of bounds (callers validated first).
pub(crate) fn put_u16(buf: &mut [u8], at: usize, value: u16) {
    if let Some(b) = buf.get_mut(at..at + 2) {
        b.copy_from_slice(&value.to_be_bytes());
    }
}

/// Writes a big-endian `u32` at `at`; does nothing out of bounds (callers validated first).
pub(crate) fn put_u32(buf: &mut [u8], at: usize, value: u32) {
    if let Some(b) = buf.get_mut(at..at + 4) {
        b.copy_from_slice(&value.to_be_bytes());
    }
}

#[cfg(test)]
mod tests;
