//! The `struct virtio_net_hdr` that prefixes every TUN read and write once the device is opened
//! with `IFF_VNET_HDR`.
//!
//! Why it matters: with `TUNSETOFFLOAD` (CSUM, TSO4, TSO6, and USO4/USO6 where the kernel has
//! them) the kernel hands the TUN reader whole TCP and UDP *super-packets* of up to 64 KiB and
//! leaves the segmentation and the checksum to us; on the write side we may hand it a merged
//! super-packet and let it segment again if it must. This 10-byte header is the contract for
//! both directions: it says whether the packet is a super-packet ([`GsoType`], `gso_size`) and
//! whether its L4 checksum is still partial ([`F_NEEDS_CSUM`], `csum_start`, `csum_offset`).
//!
//! Layout (`include/uapi/linux/virtio_net.h`): `flags: u8, gso_type: u8, hdr_len: u16,
//! gso_size: u16, csum_start: u16, csum_offset: u16`. The 16-bit fields are in the device's
//! byte order, which for a TUN device is the host's ("legacy virtio") unless someone calls
//! `TUNSETVNETBE`. weft runs on little-endian hosts (x86-64, aarch64) and never calls it, so
//! this module reads and writes **little-endian**.
//!
//! `hdr_len` is advisory: on the read side the kernel may set it to the whole first packet when
//! it forwards, so [`crate::gso`] recomputes it from the TCP/UDP header (as wireguard-go does).
//!
//! # The no-panic guarantee
//! [`VirtioNetHdr::parse`] takes the first [`VNET_HDR_LEN`] bytes through `split_first_chunk`
//! and rejects unknown GSO types; [`VirtioNetHdr`] is a plain value afterwards, so nothing in
//! this module can panic, whatever the bytes. [`VirtioNetHdr::emit`] returns an error instead of
//! writing past a short buffer. Every accepted header round-trips: `emit(parse(b)) == b[..10]`.

/// Length of `struct virtio_net_hdr` (the variant without `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum is partial. The field at
/// `csum_start + csum_offset` holds the pseudo-header sum and the rest must be summed over
/// `csum_start..end` (the kernel's `CHECKSUM_PARTIAL`).
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the kernel already validated the checksum
/// (`CHECKSUM_UNNECESSARY`). Kept as given; this crate never relies on it.
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_F_RSC_INFO`: receive-segment-coalescing info in the checksum fields.
pub const F_RSC_INFO: u8 = 4;

/// `VIRTIO_NET_HDR_GSO_ECN`: the TCP super-packet carries CWR (the kernel's
/// `SKB_GSO_TCP_ECN`); or-ed into the GSO type byte.
pub const GSO_ECN: u8 = 0x80;

/// The kind of segmentation a packet needs (`gso_type` without [`GSO_ECN`]).
///
/// UFO (`VIRTIO_NET_HDR_GSO_UDP`, 3) is deliberately absent: it produces IP fragments, the
/// kernel no longer offers it to TUN readers, and weft never enables it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum GsoType {
    /// `VIRTIO_NET_HDR_GSO_NONE`: a single packet.
    None = 0,
    /// `VIRTIO_NET_HDR_GSO_TCPV4`: a TCP-over-IPv4 super-packet (TSO4).
    TcpV4 = 1,
    /// `VIRTIO_NET_HDR_GSO_TCPV6`: a TCP-over-IPv6 super-packet (TSO6).
    TcpV6 = 4,
    /// `VIRTIO_NET_HDR_GSO_UDP_L4`: a UDP super-packet split into datagrams of `gso_size`
    /// (USO4/USO6; Linux ≥ 6.2).
    UdpL4 = 5,
}

impl GsoType {
    /// Decodes a `gso_type` byte with the [`GSO_ECN`] bit already removed.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::None),
            1 => Some(Self::TcpV4),
            4 => Some(Self::TcpV6),
            5 => Some(Self::UdpL4),
            _ => None,
        }
    }

    /// Whether this is a TCP segmentation type.
    pub const fn is_tcp(self) -> bool {
        matches!(self, Self::TcpV4 | Self::TcpV6)
    }
}

/// Why a virtio-net header could not be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VnetError {
    /// The input (or output buffer) holds fewer than [`VNET_HDR_LEN`] bytes.
    #[error("virtio-net header needs {VNET_HDR_LEN} bytes, have {0}")]
    Truncated(usize),
    /// `gso_type` (without the ECN bit) is not one of [`GsoType`]'s values.
    #[error("unknown virtio-net GSO type {0:#04x}")]
    UnknownGsoType(u8),
}

/// A decoded `struct virtio_net_hdr`.
///
/// A value type rather than a view: the header is 10 bytes, copying it is cheaper than
/// re-reading little-endian fields through a borrow, and GSO/GRO pass it around by value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VirtioNetHdr {
    /// `VIRTIO_NET_HDR_F_*` bits, kept exactly as read (unknown bits included).
    pub flags: u8,
    /// The segmentation type.
    pub gso_type: GsoType,
    /// Whether [`GSO_ECN`] was set in the type byte.
    pub ecn: bool,
    /// Length of the headers (IP + TCP/UDP) that every segment repeats. Advisory on reads.
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS for TCP, the datagram payload size for UDP).
    pub gso_size: u16,
    /// Offset of the L4 header from the start of the IP packet.
    pub csum_start: u16,
    /// Offset of the checksum field inside the L4 header (16 for TCP, 6 for UDP).
    pub csum_offset: u16,
}

impl Default for VirtioNetHdr {
    fn default() -> Self {
        Self::NONE
    }
}

impl VirtioNetHdr {
    /// The all-zero header: a single packet whose checksum is complete. Written in front of
    /// every packet that GRO does not merge.
    pub const NONE: Self = Self {
        flags: 0,
        gso_type: GsoType::None,
        ecn: false,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Decodes the header from the first [`VNET_HDR_LEN`] bytes of `bytes`.
    ///
    /// # Errors
    /// [`VnetError::Truncated`] if `bytes` is shorter than the header;
    /// [`VnetError::UnknownGsoType`] if the GSO type is not one of [`GsoType`].
    pub fn parse(bytes: &[u8]) -> Result<Self, VnetError> {
        let (b, _) = bytes
            .split_first_chunk::<VNET_HDR_LEN>()
            .ok_or(VnetError::Truncated(bytes.len()))?;
        let raw_type = b[1];
        let gso_type =
            GsoType::from_u8(raw_type & !GSO_ECN).ok_or(VnetError::UnknownGsoType(raw_type))?;
        Ok(Self {
            flags: b[0],
            gso_type,
            ecn: raw_type & GSO_ECN != 0,
            hdr_len: u16::from_le_bytes([b[2], b[3]]),
            gso_size: u16::from_le_bytes([b[4], b[5]]),
            csum_start: u16::from_le_bytes([b[6], b[7]]),
            csum_offset: u16::from_le_bytes([b[8], b[9]]),
        })
    }

    /// Splits one TUN read into its header and the IP packet behind it.
    ///
    /// # Errors
    /// As [`parse`](Self::parse).
    pub fn split_frame(frame: &[u8]) -> Result<(Self, &[u8]), VnetError> {
        let hdr = Self::parse(frame)?;
        let packet = frame.get(VNET_HDR_LEN..).unwrap_or_default();
        Ok((hdr, packet))
    }

    /// Encodes the header.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type as u8 | if self.ecn { GSO_ECN } else { 0 };
        [b[2], b[3]] = self.hdr_len.to_le_bytes();
        [b[4], b[5]] = self.gso_size.to_le_bytes();
        [b[6], b[7]] = self.csum_start.to_le_bytes();
        [b[8], b[9]] = self.csum_offset.to_le_bytes();
        b
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `out`.
    ///
    /// # Errors
    /// [`VnetError::Truncated`] if `out` is shorter than the header; nothing is written then.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), VnetError> {
        let len = out.len();
        let (b, _) = out
            .split_first_chunk_mut::<VNET_HDR_LEN>()
            .ok_or(VnetError::Truncated(len))?;
        *b = self.to_bytes();
        Ok(())
    }

    /// Whether [`F_NEEDS_CSUM`] is set.
    pub const fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_kernel_tso4_header() {
        // flags NEEDS_CSUM, TCPV4, hdr_len 52, gso_size 1448, csum_start 20, csum_offset 16.
        let b = [0x01, 0x01, 52, 0, 0xa8, 0x05, 20, 0, 16, 0];
        let h = VirtioNetHdr::parse(&b).unwrap();
        assert_eq!(
            h,
            VirtioNetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GsoType::TcpV4,
                ecn: false,
                hdr_len: 52,
                gso_size: 1448,
                csum_start: 20,
                csum_offset: 16,
            }
        );
        assert!(h.needs_csum());
        assert_eq!(h.to_bytes(), b);
    }

    #[test]
    fn ecn_bit_and_unknown_types() {
        let mut b = [0u8; 12];
        b[1] = GSO_ECN | 4;
        let h = VirtioNetHdr::parse(&b).unwrap();
        assert_eq!(h.gso_type, GsoType::TcpV6);
        assert!(h.ecn);
        assert_eq!(h.to_bytes(), b[..10]);
        for t in [2u8, 3, 6, 0x7f, 0x83] {
            b[1] = t;
            assert_eq!(
                VirtioNetHdr::parse(&b),
                Err(VnetError::UnknownGsoType(t)),
                "{t}"
            );
        }
    }

    #[test]
    fn short_input_and_output() {
        assert_eq!(VirtioNetHdr::parse(&[0; 9]), Err(VnetError::Truncated(9)));
        let mut out = [0xaau8; 9];
        assert_eq!(
            VirtioNetHdr::NONE.emit(&mut out),
            Err(VnetError::Truncated(9))
        );
        assert_eq!(out, [0xaa; 9]);
        let (h, rest) = VirtioNetHdr::split_frame(&[0; 10]).unwrap();
        assert_eq!(h, VirtioNetHdr::NONE);
        assert!(rest.is_empty());
    }
}
