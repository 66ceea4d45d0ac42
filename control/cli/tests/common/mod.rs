//! Scenarios shared by the interop test files. Each takes the implementations
//! to run on sides A and B, builds its own namespaces (removed on drop, also on
//! failure), holds the global serial lock for its whole run, and checks what it
//! measures as it goes (`ensure!`), returning the first failure with the tail of
//! both daemons' logs attached. The tests unwrap the result.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use weft_testkit::{
    now, ping, ping_until_reply, ping_with, serial, socket_path, tcp_transfer, unique_ifname, veth,
    wait_until, wg_quick, wg_set_private_key, wg_show_dump, ChildGuard, Dir, Family, FloodSpec,
    HandshakeFlood, Initiator, Keypair, Netns, Pair, PairBuilder, PathGuard, PingOpts, WgImpl,
    WgQuickConf, WgQuickFile, PORT_A, PORT_B, VETH,
};

/// 1 MiB.
pub(crate) const MIB: u64 = 1 << 20;

fn label(pair: &Pair) -> String {
    format!(
        "{} <-> {} (outer {:?}, veth mtu {}, tunnel mtu {})",
        pair.a.imp, pair.b.imp, pair.outer, pair.veth_mtu, pair.tunnel_mtu
    )
}

/// Builds a pair and completes its first handshake.
fn up(builder: PairBuilder) -> Result<Pair> {
    let start = now();
    let mut pair = builder.build()?;
    pair.run(|pair| {
        pair.handshake()
            .with_context(|| format!("handshake of {}", label(pair)))
    })?;
    println!(
        "{}: up and handshaken in {:.2?}",
        label(&pair),
        start.elapsed()
    );
    Ok(pair)
}

/// Hashed TCP transfers of `bytes` in both directions over the given inner families.
fn transfers(pair: &Pair, bytes: u64, families: &[Family]) -> Result<()> {
    for dir in [Dir::AtoB, Dir::BtoA] {
        for &family in families {
            let report = pair.transfer(dir, family, bytes)?;
            ensure!(
                report.bytes == bytes,
                "transferred {} of {bytes} bytes",
                report.bytes
            );
            println!(
                "{}: {dir:?} inner {family:?} {} bytes in {:.2?} ({:.0} Mbit/s), sha256 {}",
                label(pair),
                report.bytes,
                report.elapsed,
                report.mbit_per_s(),
                report.sha256
            );
        }
    }
    Ok(())
}

fn alive(pair: &mut Pair) -> Result<()> {
    pair.a.check_alive()?;
    pair.b.check_alive()
}

/// Handshake started by `initiator`, pings both ways over inner IPv4 and IPv6,
/// and a hashed 4 MiB transfer each way over each inner family; the side that
/// had no endpoint must have learned the initiator's.
pub(crate) fn basic(a: WgImpl, b: WgImpl, outer: Family, initiator: Initiator) -> Result<()> {
    let _serial = serial();
    let mut pair = up(PairBuilder::new(a, b).outer(outer).initiator(initiator))?;
    pair.run(|pair| {
        let (learner, initiator_side) = match initiator {
            Initiator::A | Initiator::Both => (&pair.b, &pair.a),
            Initiator::B => (&pair.a, &pair.b),
        };
        let learned = learner.peer()?.endpoint;
        ensure!(
            learned == Some(initiator_side.endpoint()),
            "{} learned endpoint {learned:?}, want {}",
            learner.imp,
            initiator_side.endpoint()
        );
        pair.ping_all(5)?;
        transfers(pair, 4 * MIB, &[Family::V4, Family::V6])?;
        alive(pair)
    })
}

/// A large hashed transfer each way over inner IPv4.
pub(crate) fn big_transfer(a: WgImpl, b: WgImpl, outer: Family, bytes: u64) -> Result<()> {
    let _serial = serial();
    let mut pair = up(PairBuilder::new(a, b).outer(outer))?;
    pair.run(|pair| {
        transfers(pair, bytes, &[Family::V4])?;
        alive(pair)
    })
}

/// Largest ICMP echo payload that fits an inner packet of `mtu` bytes.
fn max_ping_payload(mtu: u32, family: Family) -> u32 {
    match family {
        Family::V4 => mtu - 20 - 8,
        Family::V6 => mtu - 40 - 8,
    }
}

/// Full-size inner packets (don't-fragment pings of exactly the tunnel MTU,
/// both ways, both inner families) and hashed 4 MiB transfers, for a given
/// tunnel and underlay MTU. With `veth_mtu < tunnel_mtu + 80` the encrypted
/// packets do not fit the underlay and must be fragmented by the sending host.
pub(crate) fn mtu_case(
    a: WgImpl,
    b: WgImpl,
    outer: Family,
    veth_mtu: u32,
    tunnel_mtu: u32,
) -> Result<()> {
    let _serial = serial();
    let mut pair = up(PairBuilder::new(a, b)
        .outer(outer)
        .veth_mtu(veth_mtu)
        .tunnel_mtu(tunnel_mtu))?;
    pair.run(|pair| {
        for side in [&pair.a, &pair.b] {
            let mtu = side.ns.mtu(&side.ifname)?;
            ensure!(mtu == tunnel_mtu, "tunnel mtu of {} is {mtu}", side.imp);
            let mtu = side.ns.mtu(VETH)?;
            ensure!(mtu == veth_mtu, "veth mtu in {} is {mtu}", side.ns.name());
        }
        for dir in [Dir::AtoB, Dir::BtoA] {
            let (from, to) = pair.sides(dir);
            for family in [Family::V4, Family::V6] {
                let opts = PingOpts {
                    count: 5,
                    size: Some(max_ping_payload(tunnel_mtu, family)),
                    dont_fragment: true,
                    interval: None,
                };
                ping_with(&from.ns, to.tunnel(family), opts)
                    .with_context(|| format!("full-size ping {dir:?} inner {family:?}"))?;
            }
        }
        transfers(pair, 4 * MIB, &[Family::V4, Family::V6])?;
        alive(pair)
    })
}

/// A new outer address for side A in the same subnet.
fn roamed_addr(outer: Family) -> IpAddr {
    match outer {
        Family::V4 => Ipv4Addr::new(10, 77, 0, 11).into(),
        Family::V6 => Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x11).into(),
    }
}

/// How side A roams.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Roam {
    /// A's outer address changes (new one added, old one removed).
    Address,
    /// A's listen port changes (`wg set listen-port`).
    ListenPort,
}

/// After traffic flows, side A roams; A's next packets must reach B, B's view
/// of A's endpoint must follow, and traffic must flow both ways again. Only A
/// knows an endpoint, so B's view is learned, never configured.
///
/// The roamer must pick its new source address by itself: wireguard-go
/// (0.0.20220316) does not after its IPv4 source address is removed (it caches
/// the source and only drops the cache on EINVAL, but gets ENETUNREACH), and
/// boringtun's default connected per-peer sockets stay bound to the old
/// address; both roam fine over IPv6 and on a listen-port change.
pub(crate) fn roaming(a: WgImpl, b: WgImpl, outer: Family, roam: Roam) -> Result<()> {
    let _serial = serial();
    let mut pair = up(PairBuilder::new(a, b).outer(outer).initiator(Initiator::A))?;
    pair.run(|pair| {
        pair.ping_all(3)?;
        let before = pair.b.peer()?.endpoint;
        ensure!(
            before == Some(pair.a.endpoint()),
            "B's endpoint {before:?} before roaming"
        );
        match roam {
            Roam::Address => pair.a.change_outer_addr(roamed_addr(outer))?,
            Roam::ListenPort => pair.a.set_listen_port(PORT_A + 10)?,
        }
        let want = pair.a.endpoint();
        ping_until_reply(&pair.a.ns, pair.b.tunnel_v4.into(), Duration::from_secs(15))
            .context("A -> B after roaming")?;
        wait_until(
            &format!("B ({}) to see A at {want}", pair.b.imp),
            Duration::from_secs(10),
            Duration::from_millis(200),
            || Ok(pair.b.peer()?.endpoint == Some(want)),
        )?;
        println!(
            "{}: {roam:?}: B's endpoint for A {before:?} -> {want}",
            label(pair)
        );
        pair.ping_all(3)?;
        transfers(pair, MIB, &[Family::V4])?;
        let after = pair.b.peer()?.endpoint;
        ensure!(after == Some(want), "B's endpoint moved again: {after:?}");
        alive(pair)
    })
}

/// After traffic stops, each side's tx byte counter equals the other's rx
/// counter (bounded wait for in-flight packets), and both exceed the inner bytes
/// that side sent. Only meaningful between implementations that count wire
/// bytes ([`WgImpl::wire_byte_counters`]), and only without loss: the traffic is
/// pings (a bulk transfer can overflow a userspace daemon's UDP receive buffer,
/// and a dropped datagram is counted by its sender only), and the namespaces'
/// UDP receive-drop counters must stay 0.
pub(crate) fn counters(a: WgImpl, b: WgImpl, outer: Family) -> Result<()> {
    ensure!(
        a.wire_byte_counters() && b.wire_byte_counters(),
        "byte counters of {a} and {b} are not comparable"
    );
    let _serial = serial();
    let mut pair = up(PairBuilder::new(a, b).outer(outer))?;
    pair.run(|pair| {
        let (count, size) = (20u32, 1000u32);
        let mut inner_sent_by_each = 0u64;
        for dir in [Dir::AtoB, Dir::BtoA] {
            let (from, to) = pair.sides(dir);
            for family in [Family::V4, Family::V6] {
                let opts = PingOpts {
                    count,
                    size: Some(size),
                    dont_fragment: true,
                    interval: Some(Duration::from_millis(20)),
                };
                ping_with(&from.ns, to.tunnel(family), opts)?;
                let header = match family {
                    Family::V4 => 20 + 8,
                    Family::V6 => 40 + 8,
                };
                // Each side sends its own requests and the replies to the other's.
                inner_sent_by_each += u64::from(count) * u64::from(size + header);
            }
        }
        let (pa, pb) = pair.wait_counters_agree(Duration::from_secs(15))?;
        println!(
            "{}: A tx {} rx {}, B tx {} rx {}; inner bytes sent by each {inner_sent_by_each}",
            label(pair),
            pa.tx_bytes,
            pa.rx_bytes,
            pb.tx_bytes,
            pb.rx_bytes
        );
        for side in [&pair.a, &pair.b] {
            let drops = side.ns.udp_receive_drops()?;
            ensure!(
                drops == 0,
                "{drops} UDP datagrams dropped in {}",
                side.ns.name()
            );
        }
        ensure!(
            pa.tx_bytes == pb.rx_bytes && pb.tx_bytes == pa.rx_bytes,
            "counters disagree"
        );
        ensure!(
            pa.tx_bytes > inner_sent_by_each && pb.tx_bytes > inner_sent_by_each,
            "counters below the payload"
        );
        alive(pair)
    })
}

/// Side A is brought up by `wg-quick up` with
/// `WG_QUICK_USERSPACE_IMPLEMENTATION=<userspace>` (so it daemonizes: no `-f`),
/// side B runs `peer` normally. Traffic must flow both ways; after
/// `wg-quick down` the interface, the UAPI socket and the daemon must be gone.
pub(crate) fn wg_quick_case(userspace: &Path, peer: WgImpl) -> Result<()> {
    let _serial = serial();
    let ns_a = Netns::new("wqa")?;
    let ns_b = Netns::new("wqb")?;
    veth(&ns_a, VETH, &ns_b, VETH)?;
    for (ns, addr) in [(&ns_a, "10.77.0.1/24"), (&ns_b, "10.77.0.2/24")] {
        ns.addr_add(VETH, addr)?;
        ns.link_up(VETH)?;
    }
    let keys_a = Keypair::generate()?;
    let keys_b = Keypair::generate()?;
    let if_a = unique_ifname("quick")?;
    let if_b = unique_ifname("b")?;
    // The daemon wg-quick starts is not ours to guard; its socket is.
    let _socket_a = PathGuard::new(socket_path(&if_a));
    let mut daemon_b = peer.start(&ns_b, &if_b)?;
    let body = |daemon_b: &mut ChildGuard| -> Result<()> {
        let port_b = PORT_B.to_string();
        wg_set_private_key(
            &ns_b,
            &if_b,
            &keys_b,
            &[
                "listen-port",
                &port_b,
                "peer",
                &keys_a.public,
                "allowed-ips",
                "10.200.0.1/32,fd10::1/128",
            ],
        )?;
        ns_b.addr_add(&if_b, "10.200.0.2/24")?;
        ns_b.addr_add(&if_b, "fd10::2/64")?;
        ns_b.link_up(&if_b)?;

        let endpoint_b = format!("10.77.0.2:{PORT_B}").parse()?;
        let conf = WgQuickFile::write(
            &if_a,
            &WgQuickConf {
                addresses: vec!["10.200.0.1/24".into(), "fd10::1/64".into()],
                keys: keys_a.clone(),
                listen_port: PORT_A,
                peer_public: keys_b.public.clone(),
                peer_allowed_ips: vec!["10.200.0.2/32".into(), "fd10::2/128".into()],
                peer_endpoint: Some(endpoint_b),
            },
        )?;
        let out = wg_quick(&ns_a, "up", &conf, userspace)?;
        println!("wg-quick up:\n{out}");
        ensure!(
            ns_a.link_exists(&if_a),
            "wg-quick up left no interface {if_a}"
        );
        ensure!(
            socket_path(&if_a).exists(),
            "wg-quick up left no UAPI socket"
        );
        let mtu = ns_a.mtu(&if_a)?;
        ensure!(mtu == 1420, "wg-quick should have set MTU 1420, not {mtu}");
        let dump = wg_show_dump(&ns_a, &if_a)?;
        ensure!(
            dump.listen_port == PORT_A,
            "listen port {}",
            dump.listen_port
        );
        ensure!(
            dump.public_key.as_deref() == Some(keys_a.public.as_str()),
            "public key in {dump:?}"
        );
        let peer_a = dump.peer(&keys_b.public)?;
        ensure!(
            peer_a.endpoint == Some(endpoint_b),
            "endpoint in {peer_a:?}"
        );

        let b_v4: IpAddr = Ipv4Addr::new(10, 200, 0, 2).into();
        let b_v6: IpAddr = Ipv6Addr::new(0xfd10, 0, 0, 0, 0, 0, 0, 2).into();
        let a_v4: IpAddr = Ipv4Addr::new(10, 200, 0, 1).into();
        let a_v6: IpAddr = Ipv6Addr::new(0xfd10, 0, 0, 0, 0, 0, 0, 1).into();
        ping_until_reply(&ns_a, b_v4, Duration::from_secs(20))?;
        ping(&ns_a, b_v4, 3)?;
        ping(&ns_a, b_v6, 3)?;
        ping(&ns_b, a_v4, 3)?;
        ping(&ns_b, a_v6, 3)?;
        for (from, to, addr) in [(&ns_a, &ns_b, b_v4), (&ns_b, &ns_a, a_v6)] {
            let report = tcp_transfer(from, to, addr, MIB)?;
            ensure!(report.bytes == MIB, "transferred {} bytes", report.bytes);
            println!(
                "wg-quick case: {} bytes to {addr} in {:.2?}",
                report.bytes, report.elapsed
            );
        }
        ensure!(daemon_b.is_running(), "peer daemon died");

        let out = wg_quick(&ns_a, "down", &conf, userspace)?;
        println!("wg-quick down:\n{out}");
        ensure!(
            !ns_a.link_exists(&if_a),
            "interface {if_a} still there after wg-quick down"
        );
        wait_until(
            "the daemon to exit and remove its socket after wg-quick down",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || Ok(!socket_path(&if_a).exists() && ns_a.pids()?.is_empty()),
        )?;
        Ok(())
    };
    body(&mut daemon_b).map_err(|e| {
        anyhow!(
            "{e:#}\n----- peer {} -----\n{}",
            daemon_b.label(),
            daemon_b.log_tail(60)
        )
    })
}

/// While a transfer runs from `peer` (side A) to `victim` (side B), side A's
/// namespace floods B's listen port with bogus handshake initiations from many
/// source ports and four source addresses (one of them A's own), half of them
/// with a valid mac1. The transfer must complete, A must complete a fresh
/// handshake while the flood goes on (its peer entry is removed and re-added),
/// and B's resident memory must not grow by more than `max_rss_growth_kib`.
pub(crate) fn handshake_flood(
    victim: WgImpl,
    peer: WgImpl,
    outer: Family,
    max_rss_growth_kib: u64,
) -> Result<()> {
    let _serial = serial();
    let mut pair = up(PairBuilder::new(peer, victim)
        .outer(outer)
        .initiator(Initiator::A))?;
    pair.run(|pair| {
        pair.ping_all(2)?;
        let extra: Vec<IpAddr> = match outer {
            Family::V4 => (101..=103)
                .map(|i| Ipv4Addr::new(10, 77, 0, i).into())
                .collect(),
            Family::V6 => (0x101..=0x103)
                .map(|i| Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, i).into())
                .collect(),
        };
        let prefix = pair.a.outer_prefix;
        for addr in &extra {
            pair.a.ns.addr_add(VETH, &format!("{addr}/{prefix}"))?;
        }
        let mut sources = vec![pair.a.outer];
        sources.extend(extra);
        let rss_before = pair.b.rss_kib()?;
        let start = now();
        let mut flood = HandshakeFlood::start(
            &pair.a.ns,
            &FloodSpec {
                target: pair.b.outer,
                port: pair.b.listen_port,
                responder_public: pair.b.keys.public.clone(),
                sources,
                // Bounds only: the flood must outlast the transfer and the fresh
                // handshake below (bounded at about 90 s and 45 s), and is
                // stopped as soon as they are done.
                max_packets: 200_000_000,
                duration: Duration::from_secs(180),
            },
        )?;
        wait_until(
            "the flood to get going",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || Ok(flood.sent() >= 1000),
        )
        .with_context(|| flood.log())?;
        let report = pair.transfer(Dir::AtoB, Family::V4, 16 * MIB)?;
        println!(
            "{}: 16 MiB A -> B under flood in {:.2?} ({:.0} Mbit/s), flood sent {} so far",
            label(pair),
            report.elapsed,
            report.mbit_per_s(),
            flood.sent()
        );
        ensure!(
            flood.is_running(),
            "flood ended before the transfer did: {}",
            flood.log()
        );

        // A forgets B and must handshake afresh while the flood goes on.
        let b_public = pair.b.keys.public.clone();
        let allowed = format!("{}/32,{}/128", pair.b.tunnel_v4, pair.b.tunnel_v6);
        let endpoint = pair.b.endpoint().to_string();
        pair.a.wg_set(&["peer", &b_public, "remove"])?;
        pair.a.wg_set(&[
            "peer",
            &b_public,
            "allowed-ips",
            &allowed,
            "endpoint",
            &endpoint,
        ])?;
        ensure!(
            pair.a.peer()?.latest_handshake == 0,
            "re-added peer has a handshake already"
        );
        let hs = now();
        ping_until_reply(&pair.a.ns, pair.b.tunnel_v4.into(), Duration::from_secs(45))
            .context("fresh handshake under flood")?;
        let fresh = pair.a.peer()?;
        ensure!(
            pair.a.imp.has_handshake(&fresh),
            "no fresh handshake recorded by A: {fresh:?}"
        );
        ensure!(
            flood.is_running(),
            "flood ended before the fresh handshake: {}",
            flood.log()
        );
        println!("fresh handshake under flood after {:.2?}", hs.elapsed());

        let sent = flood.stop()?;
        let rss_after = pair.b.rss_kib()?;
        println!(
            "flood: {sent} packets in {:.2?}; {} RSS {rss_before} KiB -> {rss_after} KiB",
            start.elapsed(),
            pair.b.imp
        );
        ensure!(sent >= 5000, "the flood sent only {sent} packets");
        if matches!(
            pair.b.imp,
            WgImpl::Weft(_) | WgImpl::WeftNoOffload(_) | WgImpl::WeftSharded(..)
        ) {
            // The cookie defence must actually have engaged (weft logs the transition).
            let log = pair.b.daemon.log();
            ensure!(
                log.contains("under load, demanding cookies"),
                "weft never entered the under-load mode; its log:\n{}",
                pair.b.daemon.log_tail(40)
            );
        }
        ensure!(
            rss_after <= rss_before + max_rss_growth_kib,
            "{} RSS grew from {rss_before} KiB to {rss_after} KiB",
            pair.b.imp
        );
        pair.ping_all(2)?;
        transfers(pair, MIB, &[Family::V4])?;
        alive(pair)
    })
}
