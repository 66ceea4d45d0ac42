//! What the filter reads from a packet: addresses, protocol, ports, TCP flags, ICMP type.
//!
//! The IP headers are read through `weft-packet`'s views; the transport fields are a few
//! bytes at fixed offsets, so they are read here after a length check (TCP through
//! `weft_packet::tcp::TcpHeader` so that its data offset is checked too). Every slice access
//! is checked: no input can make [`Decoded::parse`] panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use weft_packet::ip::{Ipv4Header, Ipv6Header, IPV6_HEADER_LEN};
use weft_packet::tcp::TcpHeader;
use weft_packet::udp::UdpHeader;
use weft_packet::HeaderError;

use crate::rules::proto;
use crate::DropReason;

/// The smallest offset (in 8-byte units) a non-first fragment may have: a maximal IPv4 header
/// plus a TCP header (RFC 1858), used for IPv6 too as the official client does.
const MIN_FRAGMENT_BLOCKS: u16 = (60 + 20) / 8;
/// The smallest TSMP message the official client parses.
const MIN_TSMP_LEN: usize = 7;
/// Length of the SCTP common header (ports, tag, checksum).
const SCTP_HEADER_LEN: usize = 12;
/// Length of the ICMP header the official client requires (type, code, checksum).
const ICMP_MIN_LEN: usize = 4;
/// Length of an IGMP message.
const IGMP_LEN: usize = 8;
/// Length of the IPv6 Fragment header.
const FRAGMENT_HEADER_LEN: usize = 8;

/// The transport part of a decoded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum L4 {
    /// A fragment other than the first: no transport header.
    NonFirstFragment,
    /// TCP.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// The flags byte.
        flags: u8,
    },
    /// UDP or SCTP.
    Ports {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMPv4 in IPv4 or ICMPv6 in IPv6.
    Icmp {
        /// Type and code, when the full 8-byte ICMP header is present.
        type_code: Option<(u8, u8)>,
    },
    /// TSMP.
    Tsmp,
    /// Any other protocol (no ports).
    Other,
}

/// The fields of one packet the filter looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// The protocol (for IPv6, the header after a leading Fragment header, if any).
    pub protocol: u8,
    /// The transport part.
    pub l4: L4,
}

fn header_error(e: HeaderError) -> DropReason {
    match e {
        HeaderError::Truncated { .. } => DropReason::Truncated,
        HeaderError::Version(_) => DropReason::BadVersion,
        _ => DropReason::Malformed,
    }
}

impl Decoded {
    /// Decodes `packet` (an IP packet, no link-layer header). `Ok(None)` for an empty packet.
    ///
    /// # Errors
    /// The [`DropReason`] of a packet the filter refuses before looking at any rule
    /// ([`DropReason::TooShort`], [`DropReason::BadVersion`], [`DropReason::Truncated`],
    /// [`DropReason::Malformed`], [`DropReason::UnknownProtocol`],
    /// [`DropReason::FragmentOverlap`]).
    pub fn parse(packet: &[u8]) -> Result<Option<Self>, DropReason> {
        let Some(first) = packet.first() else {
            return Ok(None);
        };
        if packet.len() < 20 {
            return Err(DropReason::TooShort);
        }
        match first >> 4 {
            4 => decode4(packet).map(Some),
            6 => decode6(packet).map(Some),
            _ => Err(DropReason::BadVersion),
        }
    }
}

fn decode4(packet: &[u8]) -> Result<Decoded, DropReason> {
    let ip = Ipv4Header::parse(packet).map_err(header_error)?;
    let total = usize::from(ip.total_len());
    if total > packet.len() {
        return Err(DropReason::Truncated);
    }
    let body = packet
        .get(ip.header_len()..total)
        .ok_or(DropReason::Malformed)?;
    let src = IpAddr::V4(Ipv4Addr::from(ip.src()));
    let dst = IpAddr::V4(Ipv4Addr::from(ip.dst()));
    let protocol = ip.protocol();
    let offset = ip.fragment_offset();
    if offset != 0 {
        return later_fragment(src, dst, protocol, offset);
    }
    let l4 = match protocol {
        proto::ICMPV4 => icmp(body)?,
        proto::IGMP if body.len() < IGMP_LEN => return Err(DropReason::Truncated),
        proto::TSMP if ip.more_fragments() => return Err(DropReason::UnknownProtocol),
        _ => transport(protocol, body)?,
    };
    Ok(Decoded {
        src,
        dst,
        protocol,
        l4,
    })
}

/// A fragment other than the first (`offset` in 8-byte blocks, not zero): it carries no
/// transport header, so it is decided without one — unless it starts so early that it could
/// overwrite the first fragment's transport header.
fn later_fragment(
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    offset: u16,
) -> Result<Decoded, DropReason> {
    if offset < MIN_FRAGMENT_BLOCKS {
        return Err(DropReason::FragmentOverlap);
    }
    Ok(Decoded {
        src,
        dst,
        protocol,
        l4: L4::NonFirstFragment,
    })
}

fn decode6(packet: &[u8]) -> Result<Decoded, DropReason> {
    let ip = Ipv6Header::parse(packet).map_err(header_error)?;
    let end = IPV6_HEADER_LEN + usize::from(ip.payload_len());
    let mut body = packet
        .get(IPV6_HEADER_LEN..end)
        .ok_or(DropReason::Truncated)?;
    let src = IpAddr::V6(Ipv6Addr::from(ip.src()));
    let dst = IpAddr::V6(Ipv6Addr::from(ip.dst()));
    let mut protocol = ip.next_header();
    if protocol == proto::IPV6_FRAGMENT {
        let (frag, rest) = body
            .split_first_chunk::<FRAGMENT_HEADER_LEN>()
            .ok_or(DropReason::Truncated)?;
        let offset = u16::from_be_bytes([frag[2], frag[3]]) >> 3;
        protocol = frag[0];
        body = rest;
        if offset != 0 {
            return later_fragment(src, dst, protocol, offset);
        }
    }
    let l4 = match protocol {
        proto::ICMPV6 => icmp(body)?,
        _ => transport(protocol, body)?,
    };
    Ok(Decoded {
        src,
        dst,
        protocol,
        l4,
    })
}

fn icmp(body: &[u8]) -> Result<L4, DropReason> {
    if body.len() < ICMP_MIN_LEN {
        return Err(DropReason::Truncated);
    }
    let type_code = match body {
        [t, c, _, _, _, _, _, _, ..] => Some((*t, *c)),
        _ => None,
    };
    Ok(L4::Icmp { type_code })
}

/// The transport part for the protocols both families share.
fn transport(protocol: u8, body: &[u8]) -> Result<L4, DropReason> {
    Ok(match protocol {
        0 | 255 => return Err(DropReason::UnknownProtocol),
        proto::TCP => {
            let tcp = TcpHeader::parse(body).map_err(header_error)?;
            L4::Tcp {
                src_port: tcp.src_port(),
                dst_port: tcp.dst_port(),
                flags: tcp.flags(),
            }
        }
        proto::UDP => {
            let udp = UdpHeader::parse(body).map_err(header_error)?;
            L4::Ports {
                src_port: udp.src_port(),
                dst_port: udp.dst_port(),
            }
        }
        proto::SCTP => match body {
            [a, b, c, d, ..] if body.len() >= SCTP_HEADER_LEN => L4::Ports {
                src_port: u16::from_be_bytes([*a, *b]),
                dst_port: u16::from_be_bytes([*c, *d]),
            },
            _ => return Err(DropReason::Truncated),
        },
        proto::TSMP if body.len() < MIN_TSMP_LEN => return Err(DropReason::Truncated),
        proto::TSMP => L4::Tsmp,
        _ => L4::Other,
    })
}
