//! Packet builders for tests, fuzz targets and benches — not part of the stable API.
//!
//! Why they exist: GSO and GRO are checked against a *model* of the kernel's output, and the
//! model must not share code with what it checks. These builders write every header field by
//! hand and compute checksums with a byte-at-a-time RFC 1071 loop, independent of
//! [`crate::checksum`]. [`Spec::segments`] is the reference for what `tcp_gso_segment` /
//! `__udp_gso_segment` produce; [`Spec::super_frame`] is what a TUN read looks like.
//!
//! They allocate and are meant for tests only.

use crate::vnet::{GsoType, VirtioNetHdr, F_NEEDS_CSUM};

/// The fields of one TCP or UDP packet (or super-packet) to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// IPv6 instead of IPv4.
    pub v6: bool,
    /// UDP instead of TCP.
    pub udp: bool,
    /// Source address (IPv4 uses the first 4 bytes).
    pub src: [u8; 16],
    /// Destination address (IPv4 uses the first 4 bytes).
    pub dst: [u8; 16],
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// IPv4 TOS or IPv6 traffic class.
    pub tos: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 identification.
    pub ident: u16,
    /// IPv4 don't-fragment.
    pub df: bool,
    /// IPv6 flow label (20 bits).
    pub flow_label: u32,
    /// IPv4 options (a multiple of 4 bytes, at most 40).
    pub ip_options: Vec<u8>,
    /// TCP sequence number.
    pub seq: u32,
    /// TCP acknowledgment number.
    pub ack: u32,
    /// TCP window.
    pub window: u16,
    /// TCP flags.
    pub tcp_flags: u8,
    /// TCP options (a multiple of 4 bytes, at most 40).
    pub tcp_options: Vec<u8>,
}

impl Spec {
    /// A TCP/IPv4 ACK from 10.0.0.1:40000 to 10.0.0.2:443 with DF.
    pub fn tcp4() -> Self {
        let src = [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let dst = [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        Self {
            v6: false,
            udp: false,
            src,
            dst,
            src_port: 40000,
            dst_port: 443,
            tos: 0,
            ttl: 64,
            ident: 0x1234,
            df: true,
            flow_label: 0,
            ip_options: Vec::new(),
            seq: 1_000_000,
            ack: 77,
            window: 512,
            tcp_flags: crate::tcp::flags::ACK,
            tcp_options: Vec::new(),
        }
    }

    /// A TCP/IPv6 ACK from fd00::1 to fd00::2.
    pub fn tcp6() -> Self {
        let src = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let dst = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        Self {
            v6: true,
            flow_label: 0x12345,
            ..Self::tcp4()
        }
        .with_addrs(src, dst)
    }

    /// A UDP/IPv4 datagram.
    pub fn udp4() -> Self {
        Self {
            udp: true,
            dst_port: 4433,
            ..Self::tcp4()
        }
    }

    /// A UDP/IPv6 datagram.
    pub fn udp6() -> Self {
        Self {
            udp: true,
            dst_port: 4433,
            ..Self::tcp6()
        }
    }

    fn with_addrs(mut self, src: [u8; 16], dst: [u8; 16]) -> Self {
        self.src = src;
        self.dst = dst;
        self
    }

    fn ip_hlen(&self) -> usize {
        if self.v6 {
            40
        } else {
            20 + self.ip_options.len()
        }
    }

    fn l4_hlen(&self) -> usize {
        if self.udp {
            8
        } else {
            20 + self.tcp_options.len()
        }
    }

    /// Length of the IP and L4 headers.
    pub fn header_len(&self) -> usize {
        self.ip_hlen() + self.l4_hlen()
    }

    /// Builds one complete packet carrying `payload`, every checksum complete (a UDP checksum
    /// of 0 is written as `0xffff`).
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let mut p = self.headers(payload.len());
        p.extend_from_slice(payload);
        let ip_hlen = self.ip_hlen();
        let csum_at = ip_hlen + if self.udp { 6 } else { 16 };
        let sum = add_naive(
            self.pseudo(p.len() - ip_hlen),
            p.get(ip_hlen..).unwrap_or_default(),
        );
        let mut check = !fold(sum);
        if check == 0 {
            check = 0xffff;
        }
        put(&mut p, csum_at, &check.to_be_bytes());
        p
    }

    /// Builds a TUN read as the kernel writes it for a super-packet: the virtio-net header
    /// (`NEEDS_CSUM`, `gso_size`, `hdr_len`) and the IP packet whose L4 checksum field holds
    /// the pseudo-header sum. With `payload.len() <= gso_size` the kernel would not use GSO,
    /// but the frame is still well-formed.
    pub fn super_frame(&self, gso_size: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = self.headers(payload.len());
        p.extend_from_slice(payload);
        let ip_hlen = self.ip_hlen();
        let csum_offset: u16 = if self.udp { 6 } else { 16 };
        let partial = fold(self.pseudo(p.len() - ip_hlen));
        put(
            &mut p,
            ip_hlen + usize::from(csum_offset),
            &partial.to_be_bytes(),
        );
        let gso_type = match (self.udp, self.v6) {
            (true, _) => GsoType::UdpL4,
            (false, false) => GsoType::TcpV4,
            (false, true) => GsoType::TcpV6,
        };
        let hdr = VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            gso_type,
            ecn: !self.udp && self.tcp_flags & crate::tcp::flags::CWR != 0,
            hdr_len: self.header_len() as u16,
            gso_size,
            csum_start: ip_hlen as u16,
            csum_offset,
        };
        let mut frame = hdr.to_bytes().to_vec();
        frame.extend_from_slice(&p);
        frame
    }

    /// The reference segmentation of [`super_frame`](Self::super_frame): the packets the
    /// kernel's GSO produces — IPv4 ID `+i`, sequence advanced, FIN/PSH on the last segment
    /// only, CWR on the first only, complete checksums.
    pub fn segments(&self, gso_size: u16, payload: &[u8]) -> Vec<Vec<u8>> {
        let gso = usize::from(gso_size.max(1));
        let chunks: Vec<&[u8]> = payload.chunks(gso).collect();
        let n = chunks.len();
        chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let mut s = self.clone();
                s.ident = self.ident.wrapping_add(i as u16);
                s.seq = self.seq.wrapping_add((i * gso) as u32);
                if i + 1 != n {
                    s.tcp_flags &= !(crate::tcp::flags::FIN | crate::tcp::flags::PSH);
                }
                if i != 0 {
                    s.tcp_flags &= !crate::tcp::flags::CWR;
                }
                s.packet(chunk)
            })
            .collect()
    }

    /// The IP and L4 headers for `payload_len` bytes of payload, L4 checksum zero.
    fn headers(&self, payload_len: usize) -> Vec<u8> {
        let ip_hlen = self.ip_hlen();
        let l4_len = self.l4_hlen() + payload_len;
        let mut p = Vec::with_capacity(ip_hlen + l4_len);
        if self.v6 {
            let tc = u32::from(self.tos);
            let word = (6u32 << 28) | (tc << 20) | (self.flow_label & 0xf_ffff);
            p.extend_from_slice(&word.to_be_bytes());
            p.extend_from_slice(&(l4_len as u16).to_be_bytes());
            p.push(if self.udp { 17 } else { 6 });
            p.push(self.ttl);
            p.extend_from_slice(&self.src);
            p.extend_from_slice(&self.dst);
        } else {
            p.push(0x40 | (ip_hlen / 4) as u8);
            p.push(self.tos);
            p.extend_from_slice(&((ip_hlen + l4_len) as u16).to_be_bytes());
            p.extend_from_slice(&self.ident.to_be_bytes());
            p.extend_from_slice(&[if self.df { 0x40 } else { 0 }, 0]);
            p.push(self.ttl);
            p.push(if self.udp { 17 } else { 6 });
            p.extend_from_slice(&[0, 0]);
            p.extend_from_slice(v4(&self.src));
            p.extend_from_slice(v4(&self.dst));
            p.extend_from_slice(&self.ip_options);
            let check = !fold(add_naive(0, &p));
            put(&mut p, 10, &check.to_be_bytes());
        }
        p.extend_from_slice(&self.src_port.to_be_bytes());
        p.extend_from_slice(&self.dst_port.to_be_bytes());
        if self.udp {
            p.extend_from_slice(&(l4_len as u16).to_be_bytes());
            p.extend_from_slice(&[0, 0]);
        } else {
            p.extend_from_slice(&self.seq.to_be_bytes());
            p.extend_from_slice(&self.ack.to_be_bytes());
            p.push(((self.l4_hlen() / 4) as u8) << 4);
            p.push(self.tcp_flags);
            p.extend_from_slice(&self.window.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 0]);
            p.extend_from_slice(&self.tcp_options);
        }
        p
    }

    fn pseudo(&self, l4_len: usize) -> u64 {
        let proto: u64 = if self.udp { 17 } else { 6 };
        if self.v6 {
            let s = add_naive(0, &self.src);
            let s = add_naive(s, &self.dst);
            s + (l4_len as u64 >> 16) + (l4_len as u64 & 0xffff) + proto
        } else {
            let s = add_naive(0, v4(&self.src));
            let s = add_naive(s, v4(&self.dst));
            s + proto + l4_len as u64
        }
    }
}

/// The IPv4 address in the first 4 bytes of a 16-byte address field.
fn v4(addr: &[u8; 16]) -> &[u8] {
    addr.first_chunk::<4>().map_or(&[], |a| a.as_slice())
}

/// Overwrites `bytes.len()` bytes at `at`; does nothing out of bounds.
fn put(p: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = p.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// Adds `bytes` as big-endian words to `sum`, one byte pair at a time (RFC 1071 by the book).
pub fn add_naive(mut sum: u64, bytes: &[u8]) -> u64 {
    let mut pairs = bytes.chunks(2);
    for pair in &mut pairs {
        let hi = u64::from(pair.first().copied().unwrap_or(0));
        let lo = u64::from(pair.get(1).copied().unwrap_or(0));
        sum += (hi << 8) | lo;
    }
    sum
}

/// Folds a sum from [`add_naive`] to 16 bits.
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Whether the transport checksum of a complete IPv4/IPv6 TCP/UDP packet verifies, by the
/// naive model (IPv6 extension headers are not walked). `None` if the packet is not one.
pub fn l4_checksum_ok(packet: &[u8]) -> Option<bool> {
    let version = packet.first()? >> 4;
    let (proto, ip_hlen, pseudo) = if version == 4 {
        let ihl = usize::from(packet.first()? & 0x0f) * 4;
        let proto = *packet.get(9)?;
        let l4_len = packet.len().checked_sub(ihl)?;
        let s = add_naive(0, packet.get(12..20)?);
        (proto, ihl, s + u64::from(proto) + l4_len as u64)
    } else if version == 6 {
        let proto = *packet.get(6)?;
        let l4_len = packet.len().checked_sub(40)?;
        let s = add_naive(0, packet.get(8..40)?);
        (
            proto,
            40,
            s + u64::from(proto) + (l4_len as u64 >> 16) + (l4_len as u64 & 0xffff),
        )
    } else {
        return None;
    };
    if proto != 6 && proto != 17 {
        return None;
    }
    Some(fold(add_naive(pseudo, packet.get(ip_hlen..)?)) == 0xffff)
}

/// Whether the IPv4 header checksum verifies by the naive model (`true` for IPv6).
pub fn ipv4_checksum_ok(packet: &[u8]) -> bool {
    match packet.first() {
        Some(b) if b >> 4 == 4 => {
            let ihl = usize::from(b & 0x0f) * 4;
            packet
                .get(..ihl)
                .is_some_and(|h| fold(add_naive(0, h)) == 0xffff)
        }
        _ => true,
    }
}
