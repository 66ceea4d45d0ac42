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

/// Frames at every kind's edges, with the counter each must move.
fn table() -> Vec<(&'static str, Vec<u8>, u32)> {
    let big = vec![0x77; 1300];
    let mut bad_reserved = wg(1, 148);
    bad_reserved[2] = 1;
    let mut bad_cookie = stun();
    bad_cookie[5] = 0x13;
    let mut stun_top_bits = stun();
    stun_top_bits[0] = 0x40;
    vec![
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
    ]
}

#[test]
fn classifies_datagrams_to_the_listen_port() {
    let x = load();
    let cases = table();
    let mut failures = Vec::new();
    for (name, frame, want) in &cases {
        assert_eq!(
            model(frame),
            *want,
            "{name}: the model disagrees with the table"
        );
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
    burst_of(x, src, n, &initiation_without_mac2())
}

/// An initiation whose mac2 is zero (no cookie): what the rate limit applies to.
fn initiation_without_mac2() -> Vec<u8> {
    let mut m = wg(1, 148);
    m[132..].fill(0);
    m
}

fn burst_of(x: &XdpFilter, src: IpAddr, n: usize, payload: &[u8]) -> (usize, Duration) {
    let frame = udp(src, PORT, payload, None);
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
    // Initiations with a mac2 (a cookie userspace will check, then rate-limit per proven
    // source) are never limited here: a flood spoofing a peer's address cannot drain the
    // bucket its genuine cookie-bearing initiations need.
    let (passed, _) = burst_of(&x, v4(11), 20, &wg(1, 148));
    assert_eq!(passed, 20, "initiations with a mac2 pass");
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

/// The XDP program's classification written out plainly (`acl_xdp.c`'s comment and
/// ebpf/README.md), not under load: the counter a frame should move.
fn model(frame: &[u8]) -> u32 {
    let be16 = |i: usize| u16::from_be_bytes([frame[i], frame[i + 1]]);
    let len = frame.len();
    if len < 14 {
        return c::PASS_OTHER;
    }
    let udp = match be16(12) {
        0x0800 => {
            if len < 34 || frame[23] != 17 || be16(20) & 0x3fff != 0 {
                return c::PASS_OTHER;
            }
            let hl = usize::from(frame[14] & 0x0f) * 4;
            if hl < 20 {
                return c::PASS_OTHER;
            }
            14 + hl
        }
        0x86dd => {
            if len < 54 || frame[20] != 17 {
                return c::PASS_OTHER;
            }
            54
        }
        _ => return c::PASS_OTHER,
    };
    if len < udp + 8 || be16(udp + 2) != PORT {
        return c::PASS_OTHER;
    }
    let ulen = usize::from(be16(udp + 4));
    if ulen < 8 {
        return c::DROP_JUNK;
    }
    if udp + ulen > len || ulen > 0xffff - 8 {
        return c::PASS_LARGE;
    }
    let p = &frame[udp + 8..udp + ulen];
    let n = p.len();
    if n >= 1200 {
        return c::PASS_LARGE;
    }
    if n < 20 {
        return c::DROP_JUNK;
    }
    if p[0] & 0xc0 == 0 && p[1] == 1 && p[4..8] == [0x21, 0x12, 0xa4, 0x42] {
        return c::PASS_STUN;
    }
    if n >= 38 && p[..6] == [0x54, 0x53, 0xf0, 0x9f, 0x92, 0xac] {
        return c::PASS_DISCO;
    }
    let ok = p[1..4] == [0, 0, 0]
        && match p[0] {
            1 => n == 148,
            2 => n == 92,
            3 => n == 64,
            4 => n >= 32,
            _ => false,
        };
    if ok {
        c::PASS_WIREGUARD
    } else {
        c::DROP_JUNK
    }
}

/// A payload near some message kind's edges: a WireGuard type and size ±1, STUN, disco, or
/// random bytes; then up to two bytes changed.
fn payload() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let sizes = prop::sample::select(vec![
        0usize, 8, 19, 20, 31, 32, 33, 37, 38, 63, 64, 65, 91, 92, 93, 124, 147, 148, 149, 1199,
        1200, 1400,
    ]);
    (
        0u8..8,
        sizes,
        0usize..300,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    )
        .prop_map(|(kind, size, random_len, edits)| {
            let mut p = match kind {
                0..=4 => wg(kind, size.max(4)),
                5 => {
                    let mut s = stun();
                    s.resize(size.max(20), 0);
                    s
                }
                6 => disco(size.max(6)),
                _ => vec![0x5a; random_len],
            };
            if !p.is_empty() {
                for (i, v) in edits {
                    let i = i.index(p.len().min(8));
                    p[i] = v;
                }
            }
            p
        })
}

fn frame() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    (
        any::<bool>(),
        prop::sample::select(vec![PORT, PORT, PORT, PORT + 1, 53]),
        payload(),
        prop::option::weighted(0.1, any::<u16>()),
        prop::option::weighted(0.05, (any::<prop::sample::Index>(), any::<u8>())),
    )
        .prop_map(|(six, port, payload, len_field, header_edit)| {
            let src = if six { v6("2001:db8::7") } else { v4(7) };
            let mut f = udp(src, port, &payload, len_field);
            if let Some((i, v)) = header_edit {
                let i = 12 + i.index(f.len() - 12);
                f[i] = v;
            }
            f
        })
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 2000, ..Default::default() })]

    /// Generated frames: the program moves the counter the plain model names.
    #[test]
    fn generated_frames_match_the_model(f in frame()) {
        static X: std::sync::OnceLock<XdpFilter> = std::sync::OnceLock::new();
        let x = X.get_or_init(load);
        let (ret, got) = run(x, &f);
        let want = model(&f);
        proptest::prop_assert_eq!(got, want, "frame {:02x?}", f);
        proptest::prop_assert_eq!(ret, if want >= c::DROP_JUNK { XDP_DROP } else { XDP_PASS });
    }
}

/// The generator is useful only if it reaches every counter often.
#[test]
fn generated_frames_reach_every_kind() {
    use proptest::strategy::{Strategy, ValueTree};
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = frame();
    let mut seen = [0usize; c::COUNT as usize];
    for _ in 0..2000 {
        let f = strategy.new_tree(&mut runner).unwrap().current();
        seen[model(&f) as usize] += 1;
    }
    for kind in [
        c::PASS_OTHER,
        c::PASS_WIREGUARD,
        c::PASS_STUN,
        c::PASS_DISCO,
        c::PASS_LARGE,
        c::DROP_JUNK,
    ] {
        assert!(seen[kind as usize] >= 20, "counter {kind}: {seen:?}");
    }
}

fn corpus_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/xdp")
}

fn seed_name(name: &str) -> String {
    name.chars()
        .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
        .collect()
}

/// The committed corpus (`tests/corpus/xdp/`: the table's frames, one file each, plus any
/// frame added by hand) replayed through the program and the model. After changing the
/// table, rewrite the seeds with `WEFT_REGENERATE_CORPORA=1 cargo test -p weft-ebpf --test xdp`.
#[test]
fn corpus_replays_through_program_and_model() {
    let dir = corpus_dir();
    if std::env::var_os("WEFT_REGENERATE_CORPORA").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, frame, _) in table() {
            std::fs::write(dir.join(seed_name(name)), frame).unwrap();
        }
    }
    for (name, frame, _) in table() {
        let committed = std::fs::read(dir.join(seed_name(name)))
            .unwrap_or_else(|e| panic!("seed {name}: {e} (regenerate the corpus)"));
        assert_eq!(committed, frame, "seed {name} differs from the table");
    }
    let x = load();
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let frame = std::fs::read(&path).unwrap();
        if !(15..=3500).contains(&frame.len()) {
            continue;
        }
        let (_, got) = run(&x, &frame);
        assert_eq!(got, model(&frame), "{}", path.display());
        replayed += 1;
    }
    assert!(replayed >= table().len(), "replayed {replayed}");
}
