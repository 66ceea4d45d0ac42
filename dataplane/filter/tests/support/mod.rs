//! Packet builders shared by the integration tests: raw IPv4/IPv6 packets with any protocol,
//! fragment fields and extension headers. Checksums are left zero (the filter reads none);
//! TCP and UDP over plain headers come from `weft_packet::build::Spec`.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod ebpf;
pub mod flows;
pub mod strategies;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use weft_packet::build::Spec;

pub fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// An IPv4 packet: `flags_frag` is the flags + fragment-offset word.
pub fn ipv4(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, flags_frag: u16, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34]);
    p.extend_from_slice(&flags_frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// An IPv6 packet with next header `nh` and `payload` (extension headers included).
pub fn ipv6(nh: u8, src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[nh, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// An IPv6 Fragment header: next header, offset in 8-byte units, more-fragments.
pub fn frag6(nh: u8, offset: u16, more: bool) -> Vec<u8> {
    let word = (offset << 3) | u16::from(more);
    let mut h = vec![nh, 0];
    h.extend_from_slice(&word.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 7]);
    h
}

/// An 8-byte IPv6 options header (Hop-by-Hop or Destination Options) with PadN.
pub fn opts6(nh: u8) -> Vec<u8> {
    vec![nh, 0, 1, 4, 0, 0, 0, 0]
}

/// A 20-byte TCP header.
pub fn tcp(src_port: u16, dst_port: u16, flags: u8) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&src_port.to_be_bytes());
    h.extend_from_slice(&dst_port.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    h
}

/// An 8-byte UDP header plus 4 bytes of payload.
pub fn udp(src_port: u16, dst_port: u16) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&src_port.to_be_bytes());
    h.extend_from_slice(&dst_port.to_be_bytes());
    h.extend_from_slice(&[0, 12, 0, 0, 1, 2, 3, 4]);
    h
}

/// An SCTP common header (12 bytes).
pub fn sctp(src_port: u16, dst_port: u16) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&src_port.to_be_bytes());
    h.extend_from_slice(&dst_port.to_be_bytes());
    h.extend_from_slice(&[0; 8]);
    h
}

/// An 8-byte ICMP header.
pub fn icmp(ty: u8, code: u8) -> Vec<u8> {
    vec![ty, code, 0, 0, 0, 1, 0, 1]
}

/// A TCP or UDP packet through `weft_packet::build::Spec` (complete checksums).
pub fn spec_packet(udp: bool, src: IpAddr, dst: IpAddr, dst_port: u16, flags: u8) -> Vec<u8> {
    let mut s = match (udp, src.is_ipv6()) {
        (false, false) => Spec::tcp4(),
        (false, true) => Spec::tcp6(),
        (true, false) => Spec::udp4(),
        (true, true) => Spec::udp6(),
    };
    let octets = |a: IpAddr| {
        let mut b = [0u8; 16];
        match a {
            IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => b = a.octets(),
        }
        b
    };
    s.src = octets(src);
    s.dst = octets(dst);
    s.dst_port = dst_port;
    s.tcp_flags = flags;
    s.packet(&[0xab; 10])
}

use weft_filter::{compile, DropReason, FilterRule, IpNet, Rule, Verdict};

/// The rules of the table, as a control server would send them.
pub const TABLE_RULES: &str = r#"[
  {"SrcIPs": ["100.64.0.1", "fd7a:115c:a1e0::1"],
   "DstPorts": [{"IP": "100.64.0.2", "Ports": {"First": 22, "Last": 22}},
                {"IP": "fd7a:115c:a1e0::2", "Ports": {"First": 22, "Last": 22}}]},
  {"SrcIPs": ["100.64.0.10-100.64.0.20"],
   "DstPorts": [{"IP": "*", "Ports": {"First": 1000, "Last": 2000}}], "IPProto": [17]},
  {"SrcIPs": ["*"], "DstPorts": [{"IP": "10.1.0.0/16", "Ports": {"First": 0, "Last": 65535}}],
   "IPProto": [47]},
  {"SrcIPs": ["100.64.0.30"], "DstPorts": [{"IP": "100.64.0.2", "Ports": {"First": 80, "Last": 80}}],
   "IPProto": [47]},
  {"SrcIPs": ["fd7a:115c:a1e0::1"],
   "DstPorts": [{"IP": "fd7a:115c:a1e0::2", "Ports": {"First": 0, "Last": 65535}}], "IPProto": [60]},
  {"SrcIPs": ["100.64.0.40"], "DstPorts": [{"IP": "100.64.0.2", "Ports": {"First": 5000, "Last": 5000}}],
   "IPProto": [132]}
]"#;

pub fn table_rules() -> Vec<Rule> {
    let wire: Vec<FilterRule> = serde_json::from_str(TABLE_RULES).unwrap();
    let c = compile(&wire).unwrap();
    assert!(c.skipped.is_empty());
    c.rules
}

pub fn table_local() -> Vec<IpNet> {
    vec![
        IpNet::new("100.64.0.2".parse().unwrap(), 32).unwrap(),
        IpNet::new("fd7a:115c:a1e0::2".parse().unwrap(), 128).unwrap(),
        IpNet::new("10.1.0.0".parse().unwrap(), 16).unwrap(),
    ]
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const MF: u16 = 0x2000;

/// The table of crafted packets: name, packet, verdict under [`table_rules`] and
/// [`table_local`].
pub fn table() -> Vec<(&'static str, Vec<u8>, Verdict)> {
    use DropReason::*;
    use Verdict::Accept;
    let d = Verdict::Drop;
    let me = v4("100.64.0.2");
    let a = v4("100.64.0.1");
    let me6 = v6("fd7a:115c:a1e0::2");
    let a6 = v6("fd7a:115c:a1e0::1");
    let b6 = v6("fd7a:115c:a1e0::9");
    let t4 = |src: &str, dst: Ipv4Addr, port: u16, flags: u8| {
        spec_packet(false, IpAddr::V4(v4(src)), IpAddr::V4(dst), port, flags)
    };
    let u4 = |src: &str, port: u16| spec_packet(true, IpAddr::V4(v4(src)), IpAddr::V4(me), port, 0);
    let i4 = |src: &str, ty: u8, code: u8| ipv4(1, v4(src), me, 0, &icmp(ty, code));
    let i6 = |src: Ipv6Addr, ty: u8, code: u8| ipv6(58, src, me6, &icmp(ty, code));
    let cat = |a: &[u8], b: &[u8]| [a, b].concat();
    let mut padded = t4("100.64.0.1", me, 22, SYN);
    padded.extend_from_slice(&[0; 12]);
    let mut v4_long_total = ipv4(6, a, me, 0, &tcp(1, 22, SYN));
    v4_long_total[3] += 1;
    let mut v4_short_total = ipv4(6, a, me, 0, &tcp(1, 22, SYN));
    v4_short_total[2..4].copy_from_slice(&20u16.to_be_bytes());
    let mut v4_total_below_ihl = ipv4(6, a, me, 0, &tcp(1, 22, SYN));
    v4_total_below_ihl[2..4].copy_from_slice(&19u16.to_be_bytes());
    let mut v4_ihl4 = ipv4(6, a, me, 0, &tcp(1, 22, SYN));
    v4_ihl4[0] = 0x44;
    let mut v4_ihl15 = ipv4(6, a, me, 0, &tcp(1, 22, SYN));
    v4_ihl15[0] = 0x4f;
    let mut tcp_doff4 = tcp(1, 22, SYN);
    tcp_doff4[12] = 0x40;
    let mut tcp_doff15 = tcp(1, 22, SYN);
    tcp_doff15[12] = 0xf0;
    let mut v6_long_payload = ipv6(6, a6, me6, &tcp(1, 22, SYN));
    v6_long_payload[5] += 1;
    let mut version5 = t4("100.64.0.1", me, 22, SYN);
    version5[0] = 0x55;

    vec![
        // TCP/IPv4: SYN needs a rule, anything else is return traffic.
        ("tcp4_syn_allowed", t4("100.64.0.1", me, 22, SYN), Accept),
        (
            "tcp4_syn_port_below",
            t4("100.64.0.1", me, 21, SYN),
            d(NoRule),
        ),
        (
            "tcp4_syn_port_above",
            t4("100.64.0.1", me, 23, SYN),
            d(NoRule),
        ),
        (
            "tcp4_syn_other_source",
            t4("100.64.0.3", me, 22, SYN),
            d(NoRule),
        ),
        ("tcp4_ack_no_rule", t4("100.64.0.3", me, 23, ACK), Accept),
        (
            "tcp4_synack_no_rule",
            t4("100.64.0.3", me, 23, SYN | ACK),
            Accept,
        ),
        ("tcp4_no_flags_no_rule", t4("100.64.0.3", me, 23, 0), Accept),
        (
            "tcp4_syn_not_local",
            t4("100.64.0.1", v4("100.64.0.9"), 22, SYN),
            d(NotLocal),
        ),
        (
            "tcp4_ack_not_local",
            t4("100.64.0.1", v4("100.64.0.9"), 22, ACK),
            d(NotLocal),
        ),
        (
            "tcp4_syn_udp_only_rule",
            t4("100.64.0.10", me, 1000, SYN),
            d(NoRule),
        ),
        ("tcp4_syn_wireguard_padding", padded, Accept),
        // UDP/IPv4: port range edges and ±1, source range edges and ±1.
        ("udp4_range_first", u4("100.64.0.10", 1000), Accept),
        ("udp4_range_last", u4("100.64.0.10", 2000), Accept),
        (
            "udp4_range_first_minus_1",
            u4("100.64.0.10", 999),
            d(NoRule),
        ),
        ("udp4_range_last_plus_1", u4("100.64.0.10", 2001), d(NoRule)),
        ("udp4_src_range_last", u4("100.64.0.20", 1500), Accept),
        (
            "udp4_src_range_first_minus_1",
            u4("100.64.0.9", 1500),
            d(NoRule),
        ),
        (
            "udp4_src_range_last_plus_1",
            u4("100.64.0.21", 1500),
            d(NoRule),
        ),
        ("udp4_default_protocols", u4("100.64.0.1", 22), Accept),
        (
            "udp4_to_route",
            spec_packet(
                true,
                IpAddr::V4(v4("100.64.0.15")),
                IpAddr::V4(v4("10.1.200.3")),
                1999,
                0,
            ),
            Accept,
        ),
        // ICMPv4.
        ("icmp4_echo_rule", i4("100.64.0.1", 8, 0), Accept),
        (
            "icmp4_echo_any_protocol_rule",
            i4("100.64.0.10", 8, 0),
            Accept,
        ),
        ("icmp4_echo_no_rule", i4("100.64.0.5", 8, 0), d(NoRule)),
        ("icmp4_echo_reply", i4("100.64.0.5", 0, 0), Accept),
        ("icmp4_echo_reply_code_1", i4("100.64.0.5", 0, 1), d(NoRule)),
        ("icmp4_unreachable", i4("100.64.0.5", 3, 1), Accept),
        ("icmp4_time_exceeded", i4("100.64.0.5", 11, 0), Accept),
        ("icmp4_parameter_problem", i4("100.64.0.5", 12, 0), Accept),
        ("icmp4_type_18", i4("100.64.0.5", 18, 0), Accept),
        (
            "icmp4_timestamp_no_rule",
            i4("100.64.0.5", 13, 0),
            d(NoRule),
        ),
        (
            "icmp4_reply_header_4_bytes",
            ipv4(1, v4("100.64.0.5"), me, 0, &[0, 0, 0, 0]),
            d(NoRule),
        ),
        (
            "icmp4_3_bytes",
            ipv4(1, v4("100.64.0.5"), me, 0, &[0, 0, 0]),
            d(Truncated),
        ),
        (
            "icmp4_not_local",
            ipv4(1, a, v4("100.64.0.9"), 0, &icmp(0, 0)),
            d(NotLocal),
        ),
        (
            "icmpv6_number_in_ipv4",
            ipv4(58, a, me, 0, &icmp(128, 0)),
            d(NoRule),
        ),
        // IPv6.
        (
            "tcp6_syn_allowed",
            ipv6(6, a6, me6, &tcp(1, 22, SYN)),
            Accept,
        ),
        (
            "tcp6_syn_port_above",
            ipv6(6, a6, me6, &tcp(1, 23, SYN)),
            d(NoRule),
        ),
        ("tcp6_ack", ipv6(6, b6, me6, &tcp(1, 23, ACK)), Accept),
        (
            "tcp6_spec_syn",
            spec_packet(false, IpAddr::V6(a6), IpAddr::V6(me6), 22, SYN),
            Accept,
        ),
        (
            "udp6_default_protocols",
            ipv6(17, a6, me6, &udp(5, 22)),
            Accept,
        ),
        (
            "udp6_other_source",
            ipv6(17, b6, me6, &udp(5, 22)),
            d(NoRule),
        ),
        (
            "tcp6_not_local",
            ipv6(6, a6, v6("fd7a:115c:a1e0::3"), &tcp(1, 22, SYN)),
            d(NotLocal),
        ),
        ("icmp6_echo_rule", i6(a6, 128, 0), Accept),
        ("icmp6_echo_no_rule", i6(b6, 128, 0), d(NoRule)),
        ("icmp6_echo_reply", i6(b6, 129, 0), Accept),
        ("icmp6_packet_too_big", i6(b6, 2, 0), Accept),
        ("icmp6_neighbor_solicitation", i6(b6, 135, 0), d(NoRule)),
        (
            "icmpv4_number_in_ipv6",
            ipv6(1, a6, me6, &icmp(8, 0)),
            d(NoRule),
        ),
        // Other protocols: only a rule with all ports.
        (
            "gre4_all_ports_rule",
            ipv4(47, v4("192.0.2.1"), v4("10.1.2.3"), 0, &[0; 4]),
            Accept,
        ),
        (
            "gre4_rule_with_one_port",
            ipv4(47, v4("100.64.0.30"), me, 0, &[0; 4]),
            d(NoRule),
        ),
        (
            "esp4_no_rule",
            ipv4(50, v4("192.0.2.1"), v4("10.1.2.3"), 0, &[0; 8]),
            d(NoRule),
        ),
        (
            "sctp4_allowed",
            ipv4(132, v4("100.64.0.40"), me, 0, &sctp(1, 5000)),
            Accept,
        ),
        (
            "sctp4_port_above",
            ipv4(132, v4("100.64.0.40"), me, 0, &sctp(1, 5001)),
            d(NoRule),
        ),
        (
            "sctp4_11_bytes",
            ipv4(132, v4("100.64.0.40"), me, 0, &sctp(1, 5000)[..11]),
            d(Truncated),
        ),
        ("igmp4_7_bytes", ipv4(2, a, me, 0, &[0x11; 7]), d(Truncated)),
        ("igmp4_no_rule", ipv4(2, a, me, 0, &[0x11; 8]), d(NoRule)),
        // TSMP.
        ("tsmp4", ipv4(99, v4("192.0.2.1"), me, 0, &[0; 7]), Accept),
        (
            "tsmp4_6_bytes",
            ipv4(99, v4("192.0.2.1"), me, 0, &[0; 6]),
            d(Truncated),
        ),
        (
            "tsmp4_more_fragments",
            ipv4(99, v4("192.0.2.1"), me, MF, &[0; 7]),
            d(UnknownProtocol),
        ),
        (
            "tsmp4_not_local",
            ipv4(99, v4("192.0.2.1"), v4("100.64.0.9"), 0, &[0; 7]),
            d(NotLocal),
        ),
        ("tsmp6", ipv6(99, b6, me6, &[0; 7]), Accept),
        // IPv4 fragments.
        (
            "frag4_later",
            ipv4(17, v4("192.0.2.1"), me, 10, &[0; 40]),
            Accept,
        ),
        (
            "frag4_later_not_local",
            ipv4(17, v4("192.0.2.1"), v4("100.64.0.9"), 10 | MF, &[0; 40]),
            Accept,
        ),
        (
            "frag4_later_unknown_protocol",
            ipv4(255, v4("192.0.2.1"), me, 10, &[0; 40]),
            Accept,
        ),
        (
            "frag4_offset_overlap",
            ipv4(17, v4("192.0.2.1"), me, 9, &[0; 40]),
            d(FragmentOverlap),
        ),
        (
            "frag4_later_multicast",
            ipv4(17, a, v4("224.0.0.5"), 10, &[0; 40]),
            d(Multicast),
        ),
        (
            "frag4_first_syn_allowed",
            ipv4(6, a, me, MF, &tcp(1, 22, SYN)),
            Accept,
        ),
        (
            "frag4_first_syn_denied",
            ipv4(6, a, me, MF, &tcp(1, 23, SYN)),
            d(NoRule),
        ),
        (
            "frag4_first_tcp_cut",
            ipv4(6, a, me, MF, &tcp(1, 22, SYN)[..8]),
            d(Truncated),
        ),
        // IPv6 Fragment header and other extension headers.
        (
            "frag6_first_syn_allowed",
            ipv6(44, a6, me6, &cat(&frag6(6, 0, true), &tcp(1, 22, SYN))),
            Accept,
        ),
        (
            "frag6_first_syn_denied",
            ipv6(44, a6, me6, &cat(&frag6(6, 0, true), &tcp(1, 23, SYN))),
            d(NoRule),
        ),
        (
            "frag6_first_tcp_cut",
            ipv6(44, a6, me6, &cat(&frag6(6, 0, true), &[0; 12])),
            d(Truncated),
        ),
        (
            "frag6_later",
            ipv6(44, b6, me6, &cat(&frag6(6, 10, false), &[0; 40])),
            Accept,
        ),
        (
            "frag6_offset_overlap",
            ipv6(44, b6, me6, &cat(&frag6(6, 1, true), &[0; 40])),
            d(FragmentOverlap),
        ),
        (
            "frag6_header_cut",
            ipv6(44, b6, me6, &[6, 0, 0, 0]),
            d(Truncated),
        ),
        (
            "frag6_first_hop_by_hop",
            ipv6(44, a6, me6, &cat(&frag6(0, 0, true), &opts6(6))),
            d(UnknownProtocol),
        ),
        (
            "frag6_first_icmp6_echo_reply",
            ipv6(44, b6, me6, &cat(&frag6(58, 0, true), &icmp(129, 0))),
            Accept,
        ),
        (
            "hop_by_hop",
            ipv6(0, a6, me6, &cat(&opts6(6), &tcp(1, 22, SYN))),
            d(UnknownProtocol),
        ),
        (
            "destination_options_no_rule",
            ipv6(60, b6, me6, &cat(&opts6(6), &tcp(1, 22, ACK))),
            d(NoRule),
        ),
        (
            "destination_options_rule",
            ipv6(60, a6, me6, &cat(&opts6(6), &tcp(1, 22, SYN))),
            Accept,
        ),
        (
            "routing_header",
            ipv6(
                43,
                a6,
                me6,
                &cat(&[6, 0, 0, 0, 0, 0, 0, 0], &tcp(1, 22, SYN)),
            ),
            d(NoRule),
        ),
        (
            "protocol_255_v6",
            ipv6(255, a6, me6, &[0; 8]),
            d(UnknownProtocol),
        ),
        // Destination kinds.
        (
            "multicast4",
            ipv4(17, a, v4("224.0.0.251"), 0, &udp(5353, 5353)),
            d(Multicast),
        ),
        (
            "multicast6",
            ipv6(17, a6, v6("ff02::fb"), &udp(5353, 5353)),
            d(Multicast),
        ),
        (
            "link_local4",
            ipv4(17, a, v4("169.254.1.1"), 0, &udp(1, 22)),
            d(LinkLocal),
        ),
        (
            "metadata_address_not_local",
            ipv4(17, a, v4("169.254.169.254"), 0, &udp(1, 22)),
            d(NotLocal),
        ),
        (
            "link_local6",
            ipv6(17, a6, v6("fe80::1"), &udp(1, 22)),
            d(LinkLocal),
        ),
        (
            "mapped_multicast6",
            ipv6(17, a6, v6("::ffff:224.0.0.1"), &udp(1, 22)),
            d(Multicast),
        ),
        // Truncated and malformed.
        ("empty", vec![], Accept),
        ("19_bytes", vec![0x45; 19], d(TooShort)),
        ("version_5", version5, d(BadVersion)),
        ("version_0", vec![0; 20], d(BadVersion)),
        (
            "ipv6_39_bytes",
            ipv6(6, a6, me6, &[])[..39].to_vec(),
            d(Truncated),
        ),
        ("ipv4_ihl_4", v4_ihl4, d(Malformed)),
        ("ipv4_ihl_15_past_end", v4_ihl15, d(Truncated)),
        ("ipv4_total_past_end", v4_long_total, d(Truncated)),
        ("ipv4_total_header_only", v4_short_total, d(Truncated)),
        ("ipv4_total_below_ihl", v4_total_below_ihl, d(Malformed)),
        (
            "ipv4_protocol_0",
            ipv4(0, a, me, 0, &[0; 8]),
            d(UnknownProtocol),
        ),
        (
            "ipv4_protocol_255",
            ipv4(255, a, me, 0, &[0; 8]),
            d(UnknownProtocol),
        ),
        (
            "tcp4_data_offset_4",
            ipv4(6, a, me, 0, &tcp_doff4),
            d(Malformed),
        ),
        (
            "tcp4_data_offset_past_end",
            ipv4(6, a, me, 0, &tcp_doff15),
            d(Truncated),
        ),
        (
            "tcp4_19_bytes",
            ipv4(6, a, me, 0, &tcp(1, 22, SYN)[..19]),
            d(Truncated),
        ),
        (
            "udp4_7_bytes",
            ipv4(17, a, me, 0, &udp(1, 22)[..7]),
            d(Truncated),
        ),
        ("ipv6_payload_past_end", v6_long_payload, d(Truncated)),
        (
            "udp6_7_bytes",
            ipv6(17, a6, me6, &udp(1, 22)[..7]),
            d(Truncated),
        ),
    ]
}
