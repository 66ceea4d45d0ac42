//! IPv4 and IPv6 header views: the fields GSO and GRO read, and the few they rewrite.
//!
//! Why minimal: segmentation and coalescing touch a handful of fields (lengths, the IPv4 ID and
//! header checksum, the fields GRO must compare) and need the addresses for the pseudo-header.
//! Full packet representations (emit from a `Repr`, ICMP, routing) belong to whoever needs them
//! first; these views are read-only and the writers are crate-private.
//!
//! # IPv6 extension headers
//! [`Ipv6Header::upper_layer`] walks Hop-by-Hop and Destination Options headers only. Those do
//! not change the pseudo-header, and their bytes are simply repeated in front of every GSO
//! segment. A Routing header would change the pseudo-header destination and a Fragment header
//! makes segmentation meaningless, so the walk stops at them and reports them as the upper
//! layer; [`crate::gso`] then refuses the super-packet (wireguard-go refuses offload for any
//! extension header at all). [`crate::gro`] never merges IPv6 packets with extension headers,
//! like wireguard-go.
//!
//! # The no-panic guarantee
//! `parse` checks the length, the version and the header-length field before it builds a
//! view; a view holds a fixed-size array reference (`&[u8; 20]`, `&[u8; 40]`) plus the
//! already-bounded options slice, and every accessor reads at constant offsets inside the
//! array. Once `parse` returned `Ok`, no accessor can panic.

use crate::checksum::{pseudo_header_v4, pseudo_header_v6, Checksum};
use crate::HeaderError;

/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// Most extension headers [`Ipv6Header::upper_layer`] walks before giving up.
pub const MAX_IPV6_EXTENSION_HEADERS: usize = 8;

/// IP protocol numbers this crate uses.
pub mod protocol {
    /// IPv6 Hop-by-Hop Options.
    pub const HOP_BY_HOP: u8 = 0;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 Routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 Fragment header.
    pub const FRAGMENT: u8 = 44;
    /// IPv6 Destination Options.
    pub const DESTINATION_OPTIONS: u8 = 60;
}

/// A checked view of an IPv4 header (options included).
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Header<'a> {
    fixed: &'a [u8; IPV4_HEADER_LEN],
    options: &'a [u8],
}

impl<'a> Ipv4Header<'a> {
    /// Checks and views the IPv4 header at the start of `packet`.
    ///
    /// The total-length field is *not* checked against `packet.len()`; callers that need the
    /// two to agree compare [`total_len`](Self::total_len) themselves.
    ///
    /// # Errors
    /// [`HeaderError::Truncated`], [`HeaderError::Version`] or [`HeaderError::Ipv4HeaderLen`].
    pub fn parse(packet: &'a [u8]) -> Result<Self, HeaderError> {
        let (fixed, rest) =
            packet
                .split_first_chunk::<IPV4_HEADER_LEN>()
                .ok_or(HeaderError::Truncated {
                    needed: IPV4_HEADER_LEN,
                    have: packet.len(),
                })?;
        let version = fixed[0] >> 4;
        if version != 4 {
            return Err(HeaderError::Version(version));
        }
        let ihl = fixed[0] & 0x0f;
        if ihl < 5 {
            return Err(HeaderError::Ipv4HeaderLen(ihl));
        }
        let options_len = usize::from(ihl - 5) * 4;
        let options = rest.get(..options_len).ok_or(HeaderError::Truncated {
            needed: IPV4_HEADER_LEN + options_len,
            have: packet.len(),
        })?;
        Ok(Self { fixed, options })
    }

    /// Header length in bytes (20–60).
    pub fn header_len(&self) -> usize {
        IPV4_HEADER_LEN + self.options.len()
    }

    /// The type-of-service byte (DSCP and ECN).
    pub fn tos(&self) -> u8 {
        self.fixed[1]
    }

    /// The total-length field.
    pub fn total_len(&self) -> u16 {
        u16::from_be_bytes([self.fixed[2], self.fixed[3]])
    }

    /// The identification field.
    pub fn ident(&self) -> u16 {
        u16::from_be_bytes([self.fixed[4], self.fixed[5]])
    }

    /// The reserved ("evil") flag bit.
    pub fn reserved_flag(&self) -> bool {
        self.fixed[6] & 0x80 != 0
    }

    /// The don't-fragment flag.
    pub fn dont_fragment(&self) -> bool {
        self.fixed[6] & 0x40 != 0
    }

    /// The more-fragments flag.
    pub fn more_fragments(&self) -> bool {
        self.fixed[6] & 0x20 != 0
    }

    /// The fragment offset, in 8-byte units.
    pub fn fragment_offset(&self) -> u16 {
        u16::from_be_bytes([self.fixed[6] & 0x1f, self.fixed[7]])
    }

    /// Whether this is a fragment (more-fragments set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.more_fragments() || self.fragment_offset() != 0
    }

    /// The time-to-live.
    pub fn ttl(&self) -> u8 {
        self.fixed[8]
    }

    /// The protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.fixed[9]
    }

    /// The header-checksum field.
    pub fn header_checksum(&self) -> u16 {
        u16::from_be_bytes([self.fixed[10], self.fixed[11]])
    }

    /// The source address.
    pub fn src(&self) -> [u8; 4] {
        [
            self.fixed[12],
            self.fixed[13],
            self.fixed[14],
            self.fixed[15],
        ]
    }

    /// The destination address.
    pub fn dst(&self) -> [u8; 4] {
        [
            self.fixed[16],
            self.fixed[17],
            self.fixed[18],
            self.fixed[19],
        ]
    }

    /// The options bytes (empty for a 20-byte header).
    pub fn options(&self) -> &'a [u8] {
        self.options
    }

    /// Whether the header checksum verifies.
    pub fn checksum_valid(&self) -> bool {
        let mut c = Checksum::new();
        c.add_bytes(self.fixed);
        c.add_bytes(self.options);
        c.is_valid()
    }
}

/// A checked view of the fixed IPv6 header.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Header<'a> {
    fixed: &'a [u8; IPV6_HEADER_LEN],
}

impl<'a> Ipv6Header<'a> {
    /// Checks and views the IPv6 header at the start of `packet`.
    ///
    /// # Errors
    /// [`HeaderError::Truncated`] or [`HeaderError::Version`].
    pub fn parse(packet: &'a [u8]) -> Result<Self, HeaderError> {
        let (fixed, _) =
            packet
                .split_first_chunk::<IPV6_HEADER_LEN>()
                .ok_or(HeaderError::Truncated {
                    needed: IPV6_HEADER_LEN,
                    have: packet.len(),
                })?;
        let version = fixed[0] >> 4;
        if version != 6 {
            return Err(HeaderError::Version(version));
        }
        Ok(Self { fixed })
    }

    /// The traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        (self.fixed[0] << 4) | (self.fixed[1] >> 4)
    }

    /// The 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        u32::from_be_bytes([0, self.fixed[1] & 0x0f, self.fixed[2], self.fixed[3]])
    }

    /// The payload-length field (extension headers included).
    pub fn payload_len(&self) -> u16 {
        u16::from_be_bytes([self.fixed[4], self.fixed[5]])
    }

    /// The next-header field of the fixed header.
    pub fn next_header(&self) -> u8 {
        self.fixed[6]
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.fixed[7]
    }

    /// The source address.
    pub fn src(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.fixed.get(8..24).unwrap_or(&[0; 16]));
        a
    }

    /// The destination address.
    pub fn dst(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.fixed.get(24..40).unwrap_or(&[0; 16]));
        a
    }

    /// Walks the Hop-by-Hop and Destination Options headers that follow the fixed header of
    /// `packet` and returns the first other next-header value and its offset from the start
    /// of the packet. See the module doc for why only those two are walked.
    ///
    /// # Errors
    /// [`HeaderError::Truncated`] if an options header runs past `packet`;
    /// [`HeaderError::Ipv6ExtensionHeader`] after [`MAX_IPV6_EXTENSION_HEADERS`] of them.
    pub fn upper_layer(&self, packet: &[u8]) -> Result<(u8, usize), HeaderError> {
        let mut next = self.next_header();
        let mut offset = IPV6_HEADER_LEN;
        for _ in 0..MAX_IPV6_EXTENSION_HEADERS {
            if next != protocol::HOP_BY_HOP && next != protocol::DESTINATION_OPTIONS {
                return Ok((next, offset));
            }
            let ext = packet.get(offset..).unwrap_or_default();
            let &[nh, len, ..] = ext else {
                return Err(HeaderError::Truncated {
                    needed: offset + 2,
                    have: packet.len(),
                });
            };
            let ext_len = (usize::from(len) + 1) * 8;
            if ext.len() < ext_len {
                return Err(HeaderError::Truncated {
                    needed: offset + ext_len,
                    have: packet.len(),
                });
            }
            next = nh;
            offset += ext_len;
        }
        Err(HeaderError::Ipv6ExtensionHeader(next))
    }
}

/// An IPv4 or IPv6 header view.
#[derive(Debug, Clone, Copy)]
pub enum IpHeader<'a> {
    /// IPv4.
    V4(Ipv4Header<'a>),
    /// IPv6 (fixed header).
    V6(Ipv6Header<'a>),
}

impl<'a> IpHeader<'a> {
    /// Views the IP header at the start of `packet`, picking the version from its first nibble.
    ///
    /// # Errors
    /// As [`Ipv4Header::parse`] / [`Ipv6Header::parse`]; [`HeaderError::Version`] for any
    /// other version, [`HeaderError::Truncated`] for an empty packet.
    pub fn parse(packet: &'a [u8]) -> Result<Self, HeaderError> {
        match packet.first().map(|b| b >> 4) {
            Some(4) => Ipv4Header::parse(packet).map(Self::V4),
            Some(6) => Ipv6Header::parse(packet).map(Self::V6),
            Some(v) => Err(HeaderError::Version(v)),
            None => Err(HeaderError::Truncated { needed: 1, have: 0 }),
        }
    }

    /// The IP version, 4 or 6.
    pub fn version(&self) -> u8 {
        match self {
            Self::V4(_) => 4,
            Self::V6(_) => 6,
        }
    }

    /// The pseudo-header sum for an L4 segment of `l4_len` bytes with protocol `protocol`.
    pub fn pseudo_header(&self, protocol: u8, l4_len: u32) -> Checksum {
        match self {
            // An IPv4 L4 length never exceeds 16 bits in a valid packet; truncating like the
            // wire field does keeps this total.
            Self::V4(h) => pseudo_header_v4(&h.src(), &h.dst(), protocol, l4_len as u16),
            Self::V6(h) => pseudo_header_v6(&h.src(), &h.dst(), protocol, l4_len),
        }
    }
}

/// Rewrites an IPv4 header in place: total length, identification, and a fresh header
/// checksum over all of `header` (options included). Does nothing if `header` is shorter
/// than 20 bytes.
pub(crate) fn rewrite_ipv4(header: &mut [u8], total_len: u16, ident: u16) {
    let Some(fixed) = header.first_chunk_mut::<IPV4_HEADER_LEN>() else {
        return;
    };
    [fixed[2], fixed[3]] = total_len.to_be_bytes();
    [fixed[4], fixed[5]] = ident.to_be_bytes();
    [fixed[10], fixed[11]] = [0, 0];
    let check = crate::checksum::checksum(header);
    if let Some(fixed) = header.first_chunk_mut::<IPV4_HEADER_LEN>() {
        [fixed[10], fixed[11]] = check.to_be_bytes();
    }
}

/// Rewrites the payload length of an IPv6 header in place. Does nothing if `header` is
/// shorter than 40 bytes.
pub(crate) fn rewrite_ipv6(header: &mut [u8], payload_len: u16) {
    if let Some(fixed) = header.first_chunk_mut::<IPV6_HEADER_LEN>() {
        [fixed[4], fixed[5]] = payload_len.to_be_bytes();
    }
}
