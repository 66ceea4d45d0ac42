use proptest::prelude::*;

use super::*;
use crate::build::{self, Spec};
use crate::proptest::{spec_with_ip_options, super_packet_from};
use crate::tcp::flags::{ACK, CWR, ECE, FIN, PSH};
use crate::vnet::{F_NEEDS_CSUM, VNET_HDR_LEN};

const HEADROOM: usize = 16;

/// Splits a TUN frame into 64 buffers of 1600 bytes; returns the segments.
fn split_frame(frame: &[u8]) -> Result<Vec<Vec<u8>>, GsoError> {
    let (hdr, packet) = VirtioNetHdr::split_frame(frame)?;
    let mut bufs = vec![[0xeeu8; 1700]; 64];
    let mut lens = [0usize; 64];
    let n = split(&hdr, packet, HEADROOM, &mut bufs, &mut lens)?;
    for b in &bufs[..n] {
        assert_eq!(b[..HEADROOM], [0xee; HEADROOM], "headroom written");
    }
    Ok((0..n)
        .map(|i| bufs[i][HEADROOM..HEADROOM + lens[i]].to_vec())
        .collect())
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

fn tcp_flags_of(seg: &[u8], ip_hlen: usize) -> u8 {
    seg[ip_hlen + 13]
}

fn assert_valid(seg: &[u8]) {
    assert!(build::ipv4_checksum_ok(seg), "IPv4 header checksum");
    assert_eq!(build::l4_checksum_ok(seg), Some(true), "L4 checksum");
}

#[test]
fn tcp4_super_packet_splits_like_the_kernel() {
    let mut spec = Spec::tcp4();
    spec.tcp_flags = ACK | PSH | FIN | CWR | ECE;
    spec.tcp_options = vec![1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 2, 0];
    let data = payload(3500);
    let segs = split_frame(&spec.super_frame(1000, &data)).unwrap();
    assert_eq!(segs, spec.segments(1000, &data));
    assert_eq!(segs.len(), 4);
    let hlen = 20 + 32;
    for (i, seg) in segs.iter().enumerate() {
        assert_valid(seg);
        let len = hlen + if i == 3 { 500 } else { 1000 };
        assert_eq!(seg.len(), len);
        assert_eq!(
            u16::from_be_bytes([seg[2], seg[3]]) as usize,
            len,
            "total length"
        );
        assert_eq!(
            u16::from_be_bytes([seg[4], seg[5]]),
            0x1234 + i as u16,
            "IP ID"
        );
        let seq = u32::from_be_bytes(seg[24..28].try_into().unwrap());
        assert_eq!(seq, 1_000_000 + 1000 * i as u32);
        assert_eq!(&seg[hlen..], &data[1000 * i..(1000 * i + 1000).min(3500)]);
    }
    assert_eq!(tcp_flags_of(&segs[0], 20), ACK | CWR | ECE);
    assert_eq!(tcp_flags_of(&segs[1], 20), ACK | ECE);
    assert_eq!(tcp_flags_of(&segs[3], 20), ACK | PSH | FIN | ECE);
}

#[test]
fn tcp6_and_udp_split_like_the_kernel() {
    for spec in [Spec::tcp6(), Spec::udp4(), Spec::udp6()] {
        let data = payload(2900);
        let segs = split_frame(&spec.super_frame(1200, &data)).unwrap();
        assert_eq!(segs, spec.segments(1200, &data), "{spec:?}");
        for seg in &segs {
            assert_valid(seg);
        }
        if spec.udp {
            let ip_hlen = if spec.v6 { 40 } else { 20 };
            let udp_len = u16::from_be_bytes([segs[2][ip_hlen + 4], segs[2][ip_hlen + 5]]);
            assert_eq!(udp_len, 8 + 500);
        }
        if spec.v6 {
            assert_eq!(
                u16::from_be_bytes([segs[0][4], segs[0][5]]),
                1200 + spec.header_len() as u16 - 40
            );
        }
    }
}

#[test]
fn ipv4_options_are_repeated_in_every_segment() {
    let mut spec = Spec::tcp4();
    spec.ip_options = vec![1, 1, 1, 0];
    let data = payload(2000);
    let segs = split_frame(&spec.super_frame(700, &data)).unwrap();
    assert_eq!(segs, spec.segments(700, &data));
    for seg in &segs {
        assert_eq!(seg[0], 0x46);
        assert_eq!(&seg[20..24], &[1, 1, 1, 0]);
    }
}

#[test]
fn ipv6_destination_options_are_walked_and_repeated() {
    let spec = Spec::udp6();
    let data = payload(300);
    let mut frame = spec.super_frame(100, &data);
    // Insert an 8-byte Destination Options header (PadN) between IPv6 and UDP.
    let ip = VNET_HDR_LEN;
    frame[ip + 6] = 60;
    frame.splice(ip + 40..ip + 40, [17, 0, 1, 4, 0, 0, 0, 0]);
    let plen = u16::from_be_bytes([frame[ip + 4], frame[ip + 5]]) + 8;
    frame[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
    frame[6..8].copy_from_slice(&48u16.to_le_bytes()); // csum_start
    let segs = split_frame(&frame).unwrap();
    assert_eq!(segs.len(), 3);
    for (i, seg) in segs.iter().enumerate() {
        assert_eq!(seg.len(), 40 + 8 + 8 + 100);
        assert_eq!(&seg[40..48], &[17, 0, 1, 4, 0, 0, 0, 0]);
        assert_eq!(u16::from_be_bytes([seg[4], seg[5]]), 8 + 8 + 100);
        assert_eq!(&seg[56..], &data[100 * i..100 * i + 100]);
        // The checksum covers the UDP datagram with the usual pseudo-header.
        let mut c = crate::checksum::pseudo_header_v6(
            seg[8..24].try_into().unwrap(),
            seg[24..40].try_into().unwrap(),
            17,
            108,
        );
        c.add_bytes(&seg[48..]);
        assert!(c.is_valid());
    }
}

#[test]
fn ipv6_routing_header_is_refused() {
    let spec = Spec::tcp6();
    let mut frame = spec.super_frame(100, &payload(300));
    frame[VNET_HDR_LEN + 6] = protocol::ROUTING;
    assert_eq!(
        split_frame(&frame),
        Err(GsoError::UnexpectedProtocol {
            gso_type: GsoType::TcpV6,
            protocol: protocol::ROUTING
        })
    );
}

#[test]
fn kernel_hdr_len_is_ignored() {
    let spec = Spec::tcp4();
    let data = payload(3000);
    let mut frame = spec.super_frame(1448, &data);
    frame[2..4].copy_from_slice(&1500u16.to_le_bytes());
    assert_eq!(split_frame(&frame).unwrap(), spec.segments(1448, &data));
}

#[test]
fn single_packet_with_partial_checksum_is_completed() {
    for spec in [Spec::tcp4(), Spec::udp6()] {
        let data = payload(333);
        let mut frame = spec.super_frame(1400, &data);
        frame[1] = 0; // gso_type NONE, NEEDS_CSUM kept
        let want = spec.packet(&data);
        assert_eq!(split_frame(&frame).unwrap(), vec![want.clone()]);
        let (hdr, packet) = VirtioNetHdr::split_frame(&frame).unwrap();
        let mut packet = packet.to_vec();
        complete_partial_checksum(&hdr, &mut packet).unwrap();
        assert_eq!(packet, want);
    }
}

#[test]
fn plain_packets_pass_through_unchanged() {
    for packet in [Spec::tcp4().packet(&payload(100)), vec![0x99; 7], vec![]] {
        let mut frame = VirtioNetHdr::NONE.to_bytes().to_vec();
        frame.extend_from_slice(&packet);
        assert_eq!(split_frame(&frame).unwrap(), vec![packet]);
    }
}

#[test]
fn a_computed_zero_checksum_is_stored_as_ffff() {
    // Pick the last payload word so the datagram's sum is 0xffff, i.e. the checksum is 0.
    let spec = Spec::udp4();
    let mut data = payload(64);
    data[62] = 0;
    data[63] = 0;
    let c = u16::from_be_bytes(spec.packet(&data)[26..28].try_into().unwrap());
    data[62..64].copy_from_slice(&c.to_be_bytes());
    let segs = split_frame(&spec.super_frame(1000, &data)).unwrap();
    assert_eq!(&segs[0][26..28], &[0xff, 0xff]);
    assert_valid(&segs[0]);
}

#[test]
fn malformed_super_packets_are_refused() {
    let tcp4 = Spec::tcp4();
    let data = payload(2000);
    let good = tcp4.super_frame(1000, &data);

    let mut f = good.clone();
    f[4..6].copy_from_slice(&0u16.to_le_bytes());
    assert_eq!(split_frame(&f), Err(GsoError::ZeroGsoSize));

    let mut f = good.clone();
    f[1] = GsoType::TcpV6 as u8;
    assert!(matches!(
        split_frame(&f),
        Err(GsoError::VersionMismatch { version: 4, .. })
    ));

    let mut f = good.clone();
    f[1] = GsoType::UdpL4 as u8;
    assert!(matches!(
        split_frame(&f),
        Err(GsoError::UnexpectedProtocol { protocol: 6, .. })
    ));

    let mut f = good.clone();
    f[VNET_HDR_LEN + 6] |= 0x20; // more fragments
    assert_eq!(split_frame(&f), Err(GsoError::Fragment));

    let mut f = good.clone();
    f[8..10].copy_from_slice(&6u16.to_le_bytes()); // csum_offset of UDP on TCP
    assert!(matches!(
        split_frame(&f),
        Err(GsoError::ChecksumOffsets { .. })
    ));

    let mut f = good.clone();
    f[9] = 0xff;
    assert!(matches!(
        split_frame(&f),
        Err(GsoError::ChecksumOffsets { .. })
    ));

    let f = tcp4.super_frame(1000, &[]);
    assert_eq!(split_frame(&f), Err(GsoError::EmptyPayload));

    let f = &good[..VNET_HDR_LEN + 30];
    assert!(matches!(
        split_frame(f),
        Err(GsoError::Header(HeaderError::Truncated { .. }))
    ));

    let mut f = good.clone();
    f[1] = 9;
    assert_eq!(
        split_frame(&f),
        Err(GsoError::Vnet(VnetError::UnknownGsoType(9)))
    );

    let mut f = VirtioNetHdr::NONE.to_bytes().to_vec();
    f[0] = F_NEEDS_CSUM;
    f[6..8].copy_from_slice(&10u16.to_le_bytes());
    f.extend_from_slice(&[0; 11]);
    assert!(matches!(
        split_frame(&f),
        Err(GsoError::ChecksumOffsets { .. })
    ));
}

#[test]
fn buffer_problems_are_found_before_anything_is_written() {
    let spec = Spec::tcp4();
    let frame = spec.super_frame(1000, &payload(5000));
    let (hdr, packet) = VirtioNetHdr::split_frame(&frame).unwrap();

    let mut bufs = vec![[0xeeu8; 1600]; 4];
    let mut lens = [0usize; 64];
    assert_eq!(
        split(&hdr, packet, HEADROOM, &mut bufs, &mut lens),
        Err(GsoError::TooManySegments {
            needed: 5,
            available: 4
        })
    );
    assert!(bufs.iter().all(|b| b.iter().all(|&x| x == 0xee)));

    let mut bufs = vec![vec![0xeeu8; 1600]; 5];
    bufs[4] = vec![0xee; 1000];
    assert_eq!(
        split(&hdr, packet, HEADROOM, &mut bufs, &mut lens),
        Err(GsoError::BufferTooSmall {
            needed: HEADROOM + 1040,
            available: 1000
        })
    );
    assert!(bufs.iter().all(|b| b.iter().all(|&x| x == 0xee)));

    let sp = SuperPacket::parse(&hdr, packet).unwrap();
    assert_eq!(
        sp.write_segment(5, &mut [0; 2000]),
        Err(GsoError::SegmentIndex { index: 5, count: 5 })
    );
    assert_eq!(sp.max_segment_len(), 1040);
    assert_eq!(sp.segment_len(4), Some(1040));
    assert_eq!(sp.segment_len(5), None);
}

#[test]
fn a_64k_super_packet_fills_47_segments() {
    let spec = Spec::tcp4();
    let data = payload(47 * 1380);
    let frame = spec.super_frame(1380, &data);
    assert!(frame.len() - VNET_HDR_LEN <= 65535);
    let segs = split_frame(&frame).unwrap();
    assert_eq!(segs.len(), 47);
    assert_eq!(segs, spec.segments(1380, &data));
}

proptest! {
    /// Every super-packet splits exactly into the reference segmentation, every segment
    /// verifies by the naive checksum, and the payload is conserved.
    #[test]
    fn split_matches_the_reference(case in super_packet_from(spec_with_ip_options(), 64)) {
        let frame = case.frame();
        let segs = split_frame(&frame).unwrap();
        prop_assert_eq!(segs.len(), case.segment_count());
        let hlen = case.spec.header_len();
        let total: usize = segs.iter().map(|s| s.len() - hlen).sum();
        prop_assert_eq!(total, case.payload.len());
        for seg in &segs {
            prop_assert!(build::ipv4_checksum_ok(seg));
            prop_assert_eq!(build::l4_checksum_ok(seg), Some(true));
        }
        prop_assert_eq!(segs, case.segments());
    }
}
