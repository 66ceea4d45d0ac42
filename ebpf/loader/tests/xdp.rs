//! The XDP program through `BPF_PROG_TEST_RUN`: what passes and what is dropped on the listen
//! port, and the handshake rate limiter. Needs root (CAP_BPF); nothing is pinned.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    // A test is a shell: it times its burst against the bucket's refill.
    clippy::disallowed_methods
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use weft_ebpf::common::xdp_counter as c;
use weft_ebpf::XdpFilter;

const PORT: u16 = 41641;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
}

/// An Ethernet frame carrying `l4` (protocol `proto`) from `src` to a fixed address.
fn ip_frame(src: IpAddr, proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    match src {
        IpAddr::V4(a) => {
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            f.extend_from_slice(&[0, 1]);
            f.extend_from_slice(&frag.to_be_bytes());
            f.extend_from_slice(&[64, proto, 0, 0]);
            f.extend_from_slice(&a.octets());
            f.extend_from_slice(&[192, 0, 2, 200]);
        }
        IpAddr::V6(a) => {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            f.extend_from_slice(&[proto, 64]);
            f.extend_from_slice(&a.octets());
            f.extend_from_slice(&"2001:db8::200".parse::<Ipv6Addr>().unwrap().octets());
        }
    }
    f.extend_from_slice(l4);
    f
}

/// A UDP datagram to `port` with `payload`; `len_field` overrides the UDP length.
fn udp(src: IpAddr, port: u16, payload: &[u8], len_field: Option<u16>) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&51820u16.to_be_bytes());
    l4.extend_from_slice(&port.to_be_bytes());
    let len = len_field.unwrap_or((8 + payload.len()) as u16);
    l4.extend_from_slice(&len.to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    ip_frame(src, 17, 0, &l4)
}

/// A WireGuard-shaped message: type byte, three zero bytes, then filler up to `len`.
fn wg(ty: u8, len: usize) -> Vec<u8> {
    let mut m = vec![0xa5; len];
    m[..4].copy_from_slice(&[ty, 0, 0, 0]);
    m
}

fn stun() -> Vec<u8> {
    let mut m = vec![0, 1, 0, 20, 0x21, 0x12, 0xa4, 0x42];
    m.extend_from_slice(&[7; 12]);
    m.extend_from_slice(&[0x80, 0x22, 0, 8]);
    m.extend_from_slice(b"tailnode");
    m.extend_from_slice(&[0x80, 0x28, 0, 4, 1, 2, 3, 4]);
    m
}

fn disco(len: usize) -> Vec<u8> {
    let mut m = vec![0x11; len];
    m[..6].copy_from_slice(&[0x54, 0x53, 0xf0, 0x9f, 0x92, 0xac]);
    m
}

fn load() -> XdpFilter {
    XdpFilter::load(PORT)
        .unwrap_or_else(|e| panic!("loading the XDP program (needs root, CAP_BPF and BTF): {e}"))
}

/// Runs `frame` and returns (return value, the one counter that moved).
fn run(x: &XdpFilter, frame: &[u8]) -> (u32, u32) {
    let before = x.counters().unwrap();
    let ret = x.test_run(frame).unwrap();
    let after = x.counters().unwrap();
    let moved: Vec<u32> = (0..c::COUNT)
        .filter(|&i| after.get(i) != before.get(i))
        .collect();
    assert_eq!(moved.len(), 1, "{before:?} -> {after:?}");
    (ret, moved[0])
}

#[test]
fn classifies_datagrams_to_the_listen_port() {
    let x = load();
    let big = vec![0x77; 1300];
    let mut bad_reserved = wg(1, 148);
    bad_reserved[2] = 1;
    let mut bad_cookie = stun();
    bad_cookie[5] = 0x13;
    let mut stun_top_bits = stun();
    stun_top_bits[0] = 0x40;
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "initiation 148",
            udp(v4(1), PORT, &wg(1, 148), None),
            c::PASS_WIREGUARD,
        ),
        (
            "initiation 147",
            udp(v4(1), PORT, &wg(1, 147), None),
            c::DROP_JUNK,
        ),
        (
            "initiation 149",
            udp(v4(1), PORT, &wg(1, 149), None),
            c::DROP_JUNK,
        ),
        (
            "response 92",
            udp(v4(1), PORT, &wg(2, 92), None),
            c::PASS_WIREGUARD,
        ),
        (
            "response 91",
            udp(v4(1), PORT, &wg(2, 91), None),
            c::DROP_JUNK,
        ),
        (
            "response 93",
            udp(v4(1), PORT, &wg(2, 93), None),
            c::DROP_JUNK,
        ),
        (
            "cookie 64",
            udp(v4(1), PORT, &wg(3, 64), None),
            c::PASS_WIREGUARD,
        ),
        (
            "cookie 63",
            udp(v4(1), PORT, &wg(3, 63), None),
            c::DROP_JUNK,
        ),
        (
            "cookie 65",
            udp(v4(1), PORT, &wg(3, 65), None),
            c::DROP_JUNK,
        ),
        (
            "data 32",
            udp(v4(1), PORT, &wg(4, 32), None),
            c::PASS_WIREGUARD,
        ),
        ("data 31", udp(v4(1), PORT, &wg(4, 31), None), c::DROP_JUNK),
        (
            "data 33 (no alignment rule)",
            udp(v4(1), PORT, &wg(4, 33), None),
            c::PASS_WIREGUARD,
        ),
        (
            "data 1199",
            udp(v4(1), PORT, &wg(4, 1199), None),
            c::PASS_WIREGUARD,
        ),
        ("type 5", udp(v4(1), PORT, &wg(5, 148), None), c::DROP_JUNK),
        ("type 0", udp(v4(1), PORT, &wg(0, 148), None), c::DROP_JUNK),
        (
            "reserved byte set",
            udp(v4(1), PORT, &bad_reserved, None),
            c::DROP_JUNK,
        ),
        (
            "STUN binding request",
            udp(v4(1), PORT, &stun(), None),
            c::PASS_STUN,
        ),
        (
            "STUN bad cookie",
            udp(v4(1), PORT, &bad_cookie, None),
            c::DROP_JUNK,
        ),
        (
            "STUN top bits set",
            udp(v4(1), PORT, &stun_top_bits, None),
            c::DROP_JUNK,
        ),
        (
            "STUN 19 bytes",
            udp(v4(1), PORT, &stun()[..19], None),
            c::DROP_JUNK,
        ),
        (
            "disco 38",
            udp(v4(1), PORT, &disco(38), None),
            c::PASS_DISCO,
        ),
        (
            "disco 124",
            udp(v4(1), PORT, &disco(124), None),
            c::PASS_DISCO,
        ),
        ("disco 37", udp(v4(1), PORT, &disco(37), None), c::DROP_JUNK),
        ("empty datagram", udp(v4(1), PORT, &[], None), c::DROP_JUNK),
        (
            "UDP length below 8",
            udp(v4(1), PORT, &wg(4, 40), Some(7)),
            c::DROP_JUNK,
        ),
        (
            "UDP length past the frame (GSO)",
            udp(v4(1), PORT, &wg(4, 40), Some(3000)),
            c::PASS_LARGE,
        ),
        ("large junk", udp(v4(1), PORT, &big, None), c::PASS_LARGE),
        (
            "other port junk",
            udp(v4(1), PORT + 1, &[1, 2, 3], None),
            c::PASS_OTHER,
        ),
        (
            "TCP to the port",
            ip_frame(v4(1), 6, 0, &[0; 40]),
            c::PASS_OTHER,
        ),
        (
            "IPv4 later fragment",
            ip_frame(v4(1), 17, 100, &[1; 40]),
            c::PASS_OTHER,
        ),
        (
            "IPv4 first fragment",
            ip_frame(v4(1), 17, 0x2000, &[1; 40]),
            c::PASS_OTHER,
        ),
        (
            "IPv6 initiation",
            udp(v6("2001:db8::1"), PORT, &wg(1, 148), None),
            c::PASS_WIREGUARD,
        ),
        (
            "IPv6 junk",
            udp(v6("2001:db8::1"), PORT, &wg(1, 100), None),
            c::DROP_JUNK,
        ),
        (
            "IPv6 STUN",
            udp(v6("2001:db8::1"), PORT, &stun(), None),
            c::PASS_STUN,
        ),
        (
            "IPv6 extension header",
            ip_frame(v6("2001:db8::1"), 60, 0, &[17; 64]),
            c::PASS_OTHER,
        ),
    ];
    let mut failures = Vec::new();
    for (name, frame, want) in &cases {
        let (ret, got) = run(&x, frame);
        let want_ret = if *want >= c::DROP_JUNK {
            XDP_DROP
        } else {
            XDP_PASS
        };
        if got != *want || ret != want_ret {
            failures.push(format!("{name}: counter {got} (want {want}), return {ret}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn listen_port_zero_passes_everything() {
    let mut x = load();
    x.set_listen_port(0).unwrap();
    let (ret, counter) = run(&x, &udp(v4(1), PORT, &[9; 10], None));
    assert_eq!((ret, counter), (XDP_PASS, c::PASS_OTHER));
    x.set_listen_port(PORT).unwrap();
    assert_eq!(run(&x, &udp(v4(1), PORT, &[9; 10], None)).1, c::DROP_JUNK);
}

/// Sends `n` initiations from `src` and counts the ones that pass; also returns how long the
/// burst took (the bucket refills one initiation per 50 ms).
fn burst(x: &XdpFilter, src: IpAddr, n: usize) -> (usize, Duration) {
    let frame = udp(src, PORT, &wg(1, 148), None);
    let start = Instant::now();
    let passed = (0..n)
        .filter(|_| {
            let (ret, counter) = run(x, &frame);
            assert!(counter == c::PASS_WIREGUARD || counter == c::DROP_RATE_LIMIT);
            ret == XDP_PASS
        })
        .count();
    (passed, start.elapsed())
}

/// The burst of 5 passes, the rest of a fast burst is dropped (plus one per 50 ms the burst
/// took, should the machine stall).
fn assert_burst(passed: usize, took: Duration, what: &str) {
    let refills = (took.as_millis() / 50) as usize;
    assert!(
        (5..=5 + refills).contains(&passed),
        "{what}: {passed} of the burst passed in {took:?}"
    );
}

#[test]
fn rate_limits_initiations_per_source_only_under_load() {
    let mut x = load();
    let (passed, _) = burst(&x, v4(10), 20);
    assert_eq!(passed, 20, "not under load: no limit");

    x.set_under_load(true).unwrap();
    let (passed, took) = burst(&x, v4(11), 20);
    assert_burst(passed, took, "source .11");
    // Another source has its own bucket.
    let (passed, took) = burst(&x, v4(12), 20);
    assert_burst(passed, took, "source .12");
    // IPv6 sources share a bucket per /64.
    let (passed, took) = burst(&x, v6("2001:db8:0:1::1"), 3);
    assert_eq!(passed, 3, "{took:?}");
    let (passed, took) = burst(&x, v6("2001:db8:0:1::2"), 10);
    assert!(
        (2..=2 + (took.as_millis() / 50) as usize).contains(&passed),
        "{passed}"
    );
    let (passed, took) = burst(&x, v6("2001:db8:0:2::1"), 20);
    assert_burst(passed, took, "another /64");
    // Responses and data are not limited.
    for _ in 0..20 {
        assert_eq!(
            run(&x, &udp(v4(11), PORT, &wg(2, 92), None)).1,
            c::PASS_WIREGUARD
        );
    }
    // Off again: the limited source passes.
    x.set_under_load(false).unwrap();
    assert_eq!(burst(&x, v4(11), 10).0, 10);
}
