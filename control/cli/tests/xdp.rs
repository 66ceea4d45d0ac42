//! The XDP junk and flood filter on weft's underlay interface (`weft-wg --xdp-interface`), in
//! network namespaces: real peers still handshake and move data through it (wireguard-go at
//! tunnel MTU 1420 and 1280, and weft sending GSO super-datagrams), junk datagrams to the
//! listen port are dropped and counted, and under a handshake flood the per-source rate limit
//! engages.
//!
//! Needs root, `ip`, `wg`, `socat`, `ping`, `python3` and wireguard-go. Tests are named
//! `netns_*` and run one at a time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_testkit::{
    serial, wait_until, Dir, Family, FloodSpec, HandshakeFlood, Pair, PairBuilder, WgImpl, VETH,
};

fn weft_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weft-wg"))
}

/// weft with the XDP program on its veth.
fn weft_xdp() -> WgImpl {
    WgImpl::WeftWithArgs(weft_path(), vec!["--xdp-interface".into(), VETH.into()])
}

/// Junk to the listen port: wrong sizes for each WireGuard type, reserved bytes set, unknown
/// types. None is WireGuard, STUN or disco.
const JUNK: &str = r#"
import socket, sys
dst, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
shapes = [b"\x01\0\0\0" + bytes(143), b"\x01\0\0\0" + bytes(145), b"\x02\0\0\0" + bytes(87),
          b"\x03\0\0\0" + bytes(61), b"\x04\0\0\0" + bytes(10), b"\x01\x01\0\0" + bytes(144),
          b"\x09\0\0\0" + bytes(60), b"hello"]
for i in range(n):
    s.sendto(shapes[i % len(shapes)], (dst, port))
"#;

/// One counter from the "XDP filter counters" line of a stopped daemon's log.
fn xdp_counter(log: &str, name: &str) -> Result<u64> {
    let line = log
        .lines()
        .find(|l| l.contains("XDP filter counters"))
        .with_context(|| format!("no XDP counters in the log:\n{log}"))?;
    let rest = line
        .split(&format!("{name}="))
        .nth(1)
        .with_context(|| format!("no {name} in {line}"))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Ok(digits.parse()?)
}

fn up(a: WgImpl, b: WgImpl, tunnel_mtu: u32) -> Result<Pair> {
    let mut pair = PairBuilder::new(a, b).tunnel_mtu(tunnel_mtu).build()?;
    pair.run(|p| p.handshake())?;
    let log = pair.a.daemon.log();
    ensure!(
        log.contains("XDP junk and handshake-flood filter attached"),
        "XDP not attached:\n{log}"
    );
    Ok(pair)
}

/// weft (XDP on) and `peer` at `tunnel_mtu`: pings, 4 MiB each way, then junk that XDP drops.
fn peer_case(peer: WgImpl, tunnel_mtu: u32) {
    const JUNK_COUNT: u64 = 400;
    let _serial = serial();
    let mut pair = up(weft_xdp(), peer, tunnel_mtu).unwrap();
    pair.run(|pair| {
        pair.ping_all(3)?;
        for dir in [Dir::AtoB, Dir::BtoA] {
            let report = pair.transfer(dir, Family::V4, 4 << 20)?;
            ensure!(report.bytes == 4 << 20, "{dir:?}: {} bytes", report.bytes);
        }
        let dst = pair.a.outer.to_string();
        let port = pair.a.listen_port.to_string();
        let n = JUNK_COUNT.to_string();
        pair.b.ns.run(&["python3", "-c", JUNK, &dst, &port, &n])?;
        // The tunnel still works after the junk.
        pair.ping_all(2)?;
        Ok(())
    })
    .unwrap();
    pair.a.daemon.stop().unwrap();
    let log = pair.a.daemon.log();
    assert_eq!(
        xdp_counter(&log, "dropped_junk").unwrap(),
        JUNK_COUNT,
        "{log}"
    );
    assert!(xdp_counter(&log, "passed_wireguard").unwrap() > 0);
    assert_eq!(xdp_counter(&log, "dropped_rate_limited").unwrap(), 0);
}

#[test]
fn netns_xdp_weft_go_mtu_1420() {
    peer_case(WgImpl::WireguardGo, 1420);
}

#[test]
fn netns_xdp_weft_go_mtu_1280() {
    peer_case(WgImpl::WireguardGo, 1280);
}

/// The peer is weft too, so what arrives includes GSO super-datagrams, which pass untouched.
#[test]
fn netns_xdp_weft_weft_gso() {
    peer_case(WgImpl::Weft(weft_path()), 1420);
}

/// A handshake flood from four source addresses: the device goes under load, the XDP rate
/// limit engages and drops initiations before the socket, and data still moves.
#[test]
fn netns_xdp_rate_limits_a_handshake_flood() {
    let _serial = serial();
    let mut pair = up(weft_xdp(), WgImpl::WireguardGo, 1420).unwrap();
    pair.run(|pair| {
        let extra: Vec<IpAddr> = (101..=103)
            .map(|i| Ipv4Addr::new(10, 77, 0, i).into())
            .collect();
        let prefix = pair.b.outer_prefix;
        for addr in &extra {
            pair.b.ns.addr_add(VETH, &format!("{addr}/{prefix}"))?;
        }
        let mut sources = vec![pair.b.outer];
        sources.extend(extra);
        let mut flood = HandshakeFlood::start(
            &pair.b.ns,
            &FloodSpec {
                target: pair.a.outer,
                port: pair.a.listen_port,
                responder_public: pair.a.keys.public.clone(),
                sources,
                max_packets: 50_000_000,
                duration: Duration::from_secs(120),
            },
        )?;
        wait_until(
            "the XDP rate limit to engage",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || Ok(pair.a.daemon.log().contains("initiation rate limit on")),
        )
        .with_context(|| flood.log())?;
        let report = pair.transfer(Dir::BtoA, Family::V4, 4 << 20)?;
        ensure!(report.bytes == 4 << 20, "transfer under flood");
        println!(
            "4 MiB under flood in {:.2?}; flood sent {}",
            report.elapsed,
            flood.sent()
        );
        flood.stop()?;
        Ok(())
    })
    .unwrap();
    pair.a.daemon.stop().unwrap();
    let log = pair.a.daemon.log();
    let limited = xdp_counter(&log, "dropped_rate_limited").unwrap();
    assert!(limited > 0, "no initiation was rate-limited:\n{log}");
    println!("XDP dropped {limited} initiations over their source's rate");
}
