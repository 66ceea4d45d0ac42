//! Two nodes behind simulated NATs, a simulated relay and two STUN servers: the namespace
//! scenarios of the issue, in simulated time, deterministic.

use std::time::Duration;

use super::*;
use crate::discovery::NatMapping;
use crate::sim::{Nat, NatKind};
use weft_keys::PrivateKey;

#[allow(clippy::disallowed_methods)] // An arbitrary base instant; only offsets matter.
fn t0() -> Instant {
    Instant::now()
}

const PORT: u16 = 41641;
const UDP_DELAY: Duration = Duration::from_millis(2);
const DERP_DELAY: Duration = Duration::from_millis(10);
const REGION: RegionId = 900;
const DATA: &[u8] = b"\x04\0\0\0 wireguard data";

#[derive(Debug)]
enum Wire {
    /// A UDP datagram on the internet: public source and destination.
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        bytes: Vec<u8>,
    },
    /// Through the relay to node `to`.
    Derp {
        to: usize,
        from: PublicKey,
        bytes: Vec<u8>,
    },
}

struct World {
    nodes: Vec<Node>,
    nats: Vec<Nat>,
    stun: Vec<SocketAddr>,
    udp_blocked: bool,
    wire: BTreeMap<(Instant, u64), Wire>,
    seq: u64,
    now: Instant,
    start: Instant,
    first_data: [Option<Duration>; 2],
    data_direct: [u64; 2],
    data_relayed: [u64; 2],
    /// Node `i` starts its own traffic this late (it answers the first packet at once).
    data_start: [Duration; 2],
    reply_once: [bool; 2],
}

fn node_key(i: usize) -> PrivateKey {
    PrivateKey::from_bytes([10 + i as u8; 32])
}

impl World {
    fn new(kinds: [NatKind; 2], udp_blocked: bool, seed: u8) -> Self {
        let start = t0();
        let stun: Vec<SocketAddr> = vec![
            "192.0.2.1:3478".parse().unwrap(),
            "192.0.2.2:3478".parse().unwrap(),
        ];
        let publics: [IpAddr; 2] = [
            "198.51.100.1".parse().unwrap(),
            "203.0.113.1".parse().unwrap(),
        ];
        let mut nodes = Vec::new();
        let mut nats = Vec::new();
        for i in 0..2 {
            let disco = DiscoPrivate::new(PrivateKey::from_bytes([20 + i as u8; 32]));
            let mut n = Node::new(
                disco,
                node_key(i).public_key(),
                stun.clone(),
                [seed.wrapping_add(i as u8); 32],
                start,
            );
            // Private LAN address: reachable by nobody outside.
            n.set_local_addrs(vec![SocketAddr::from(([10, 0, i as u8, 2], PORT))], start);
            nodes.push(n);
            nats.push(Nat::new(
                kinds[i],
                publics[i],
                [seed ^ (0x40 + i as u8); 32],
            ));
        }
        for i in 0..2 {
            let cfg = PeerConfig {
                node_key: node_key(1 - i).public_key(),
                disco: nodes[1 - i].disco_public(),
                endpoints: vec![],
                home_derp: Some(REGION),
            };
            nodes[i].upsert_peer(cfg, start);
        }
        Self {
            nodes,
            nats,
            stun,
            udp_blocked,
            wire: BTreeMap::new(),
            seq: 0,
            now: start,
            start,
            first_data: [None; 2],
            data_direct: [0; 2],
            data_relayed: [0; 2],
            data_start: [Duration::ZERO; 2],
            reply_once: [false; 2],
        }
    }

    fn put(&mut self, delay: Duration, w: Wire) {
        self.seq += 1;
        self.wire.insert((self.now + delay, self.seq), w);
    }

    fn send_udp(&mut self, from: usize, socket: u16, to: SocketAddr, bytes: Vec<u8>) {
        if self.udp_blocked {
            return;
        }
        if let Some(src) = self.nats[from].outbound(PORT + socket, to) {
            self.put(
                UDP_DELAY,
                Wire::Udp {
                    src,
                    dst: to,
                    bytes,
                },
            );
        }
    }

    fn transmit_all(&mut self) {
        for i in 0..2 {
            while let Some(t) = self.nodes[i].poll_transmit(self.now) {
                match t.via {
                    Via::Udp { socket, to } => self.send_udp(i, socket, to, t.bytes),
                    Via::Derp { dst, .. } => {
                        let to = usize::from(dst == node_key(1).public_key());
                        let from = self.nodes[i].node_key();
                        self.put(
                            DERP_DELAY,
                            Wire::Derp {
                                to,
                                from,
                                bytes: t.bytes,
                            },
                        );
                    }
                }
            }
        }
    }

    /// Each node sends the other one data packet.
    /// Each node sends the other one data packet (once its traffic has started).
    fn send_data(&mut self) {
        for i in 0..2 {
            if self.now >= self.start + self.data_start[i] {
                self.send_one(i);
            }
        }
    }

    /// Node `i` sends its peer one data packet wherever its path says.
    fn send_one(&mut self, i: usize) {
        let peer = node_key(1 - i).public_key();
        let d = self.nodes[i].send_to(&peer, self.now).unwrap();
        if let Some((socket, to)) = d.udp {
            self.send_udp(i, socket, to, DATA.to_vec());
        }
        if d.derp.is_some() {
            let from = self.nodes[i].node_key();
            let bytes = DATA.to_vec();
            self.put(
                DERP_DELAY,
                Wire::Derp {
                    to: 1 - i,
                    from,
                    bytes,
                },
            );
        }
    }

    fn deliver(&mut self, w: Wire) {
        match w {
            Wire::Derp { to, from, bytes } => {
                let r = self.nodes[to].handle_derp(REGION, from, &bytes, self.now);
                if r == Received::WireGuard {
                    self.got_data(to, false);
                }
            }
            Wire::Udp { src, dst, bytes } => {
                if self.stun.contains(&dst) {
                    // A STUN server answers the public source it saw.
                    if let Ok(tx) = weft_derp::stun::parse_binding_request(&bytes) {
                        let resp = weft_derp::stun::binding_response(tx, src);
                        self.put(
                            UDP_DELAY,
                            Wire::Udp {
                                src: dst,
                                dst: src,
                                bytes: resp.as_bytes().to_vec(),
                            },
                        );
                    }
                    return;
                }
                let Some(to) = (0..2).find(|&i| self.nats[i].public_ip() == dst.ip()) else {
                    return;
                };
                let Some(local) = self.nats[to].inbound(dst.port(), src) else {
                    return;
                };
                let r = self.nodes[to].handle_udp(local - PORT, src, &bytes, self.now);
                if r == Received::WireGuard {
                    self.got_data(to, true);
                }
            }
        }
    }

    fn got_data(&mut self, at: usize, direct: bool) {
        if self.first_data[at].is_none() && self.reply_once[at] {
            // Like a WireGuard responder: one packet straight back when the first arrives.
            self.reply_once[at] = false;
            self.send_one(at);
        }
        if self.first_data[at].is_none() {
            self.first_data[at] = Some(self.now - self.start);
        }
        if direct {
            self.data_direct[at] += 1;
        } else {
            self.data_relayed[at] += 1;
        }
    }

    fn both_direct(&self) -> bool {
        (0..2).all(|i| {
            self.nodes[i]
                .direct_path(&node_key(1 - i).public_key(), self.now)
                .is_some()
        })
    }

    /// Runs for `secs` of simulated time with data every 100 ms; returns when both sides first
    /// had a trusted direct path.
    fn run(&mut self, secs: u64) -> Option<Duration> {
        let end = self.start + Duration::from_secs(secs);
        let mut next_data = self.start + Duration::from_millis(50);
        let mut direct_at = None;
        for _ in 0..1_000_000 {
            if self.now >= end {
                break;
            }
            if self.now >= next_data {
                self.send_data();
                next_data += Duration::from_millis(100);
            }
            for i in 0..2 {
                if self.nodes[i].poll_timeout().is_some_and(|t| t <= self.now) {
                    self.nodes[i].handle_timeout(self.now);
                }
            }
            self.transmit_all();
            while let Some((&(at, seq), _)) = self.wire.first_key_value() {
                if at > self.now {
                    break;
                }
                if let Some(w) = self.wire.remove(&(at, seq)) {
                    self.deliver(w);
                    self.transmit_all();
                }
            }
            if direct_at.is_none() && self.both_direct() {
                direct_at = Some(self.now - self.start);
            }
            let next = [
                Some(next_data),
                self.nodes[0].poll_timeout(),
                self.nodes[1].poll_timeout(),
                self.wire.first_key_value().map(|(k, _)| k.0),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end);
            self.now = next.max(self.now).min(end);
        }
        direct_at
    }
}

#[test]
fn scenario_1_two_easy_nats_go_direct_within_5s() {
    for seed in 0..20 {
        let mut w = World::new([NatKind::Easy, NatKind::Easy], false, seed);
        let direct = w.run(15).expect("direct path");
        eprintln!(
            "seed {seed}: first packet {:?}, direct after {direct:?}",
            w.first_data[1]
        );
        assert!(
            direct < Duration::from_secs(5),
            "seed {seed}: direct after {direct:?}"
        );
        assert_eq!(w.nodes[0].nat_mapping(), NatMapping::EndpointIndependent);
        // The first packet went through the relay at once.
        assert_eq!(w.first_data[1], Some(Duration::from_millis(60)));
        assert!(
            w.data_direct[1] > w.data_relayed[1],
            "traffic moved to the direct path"
        );
        // Kept: still direct at the end, well past several trust periods.
        assert!(w.both_direct(), "seed {seed}: lost the path");
    }
}

#[test]
fn scenario_3_two_hard_nats_stay_relayed_and_traffic_flows() {
    let mut w = World::new(
        [
            NatKind::Hard {
                lo: 1024,
                hi: 65535,
            },
            NatKind::Hard {
                lo: 1024,
                hi: 65535,
            },
        ],
        false,
        7,
    );
    assert_eq!(w.run(20), None);
    assert_eq!(w.nodes[0].nat_mapping(), NatMapping::EndpointDependent);
    // 20 s at 10 packets/s each way, all through the relay.
    assert!(
        w.data_relayed[0] >= 195 && w.data_relayed[1] >= 195,
        "{:?}",
        w.data_relayed
    );
    assert_eq!(w.data_direct, [0, 0]);
}

#[test]
fn scenario_4_udp_blocked_everything_goes_through_the_relay() {
    let mut w = World::new([NatKind::Easy, NatKind::Easy], true, 3);
    assert_eq!(w.run(10), None);
    assert_eq!(w.nodes[0].nat_mapping(), NatMapping::Unknown);
    assert!(w.data_relayed[1] >= 95);
    assert_eq!(w.first_data[1], Some(Duration::from_millis(60)));
}

#[test]
fn scenario_2_easy_and_hard_need_the_birthday_probe() {
    // Plain disco cannot: the hard side's mapping towards the easy side is unknowable.
    let mut w = World::new(
        [
            NatKind::Easy,
            NatKind::Hard {
                lo: 1024,
                hi: 65535,
            },
        ],
        false,
        11,
    );
    assert_eq!(w.run(10), None);
    let mut successes = 0;
    for seed in 0..10 {
        let mut w = World::new(
            [
                NatKind::Easy,
                NatKind::Hard {
                    lo: 1024,
                    hi: 65535,
                },
            ],
            false,
            seed,
        );
        // Let STUN finish, then run the probe the NAT types call for.
        w.run(1);
        let easy_public = w.nodes[0]
            .endpoints(w.now)
            .into_iter()
            .find(|e| e.1 == crate::discovery::EndpointKind::Stun)
            .unwrap()
            .0;
        let hard_ip = w.nats[1].public_ip();
        let now = w.now;
        w.nodes[1].start_birthday(
            &node_key(0).public_key(),
            Plan::fan_out(easy_public, 256),
            now,
        );
        w.nodes[0].start_birthday(
            &node_key(1).public_key(),
            Plan::spray(hard_ip, 1024, 65535, 1024, [seed; 32]),
            now + Duration::from_millis(200),
        );
        w.start = now;
        if let Some(t) = w.run(10) {
            eprintln!("seed {seed}: direct {t:?} after the probe started");
            successes += 1;
            assert!(t < Duration::from_secs(10));
            assert!(w.data_direct[0] > 0 && w.data_direct[1] > 0);
            // The plan is over: of its 256 sockets only those a path uses stay needed.
            let hit = w.nodes[1]
                .birthday_hit_for(&node_key(0).public_key())
                .unwrap();
            let used = w.nodes[1].sockets_in_use(w.now);
            eprintln!("seed {seed}: sockets still needed {used:?}");
            assert_eq!(used, BTreeSet::from([0, hit.socket]));
        }
    }
    assert!(successes >= 8, "{successes}/10");
}

#[test]
fn a_birthday_plan_needs_its_sockets_until_it_is_over() {
    let now = t0();
    let (mut n, _, peer) = node_with_one_peer(now);
    assert_eq!(n.sockets_in_use(now), BTreeSet::from([0]));
    let mut plan = Plan::sweep(IpAddr::from([203, 0, 113, 1]), 40000, 40003, 3);
    plan.rounds = 1;
    let interval = plan.round_interval;
    n.start_birthday(&peer, plan, now);
    assert_eq!(n.sockets_in_use(now), BTreeSet::from([0, 1, 2]));
    // Send the whole plan (bounded: 12 probes, paced).
    let mut t = now;
    let mut probes = 0;
    for _ in 0..1000 {
        while n.poll_transmit(t).is_some() {
            probes += 1;
        }
        match n.poll_timeout() {
            Some(next) if probes < 12 => t = next.max(t),
            _ => break,
        }
        n.handle_timeout(t);
    }
    assert_eq!(probes, 12);
    // The peer's last probes may still be on their way: the sockets stay a while.
    assert!(n.birthday_listening(t));
    let end = t + interval + crate::birthday::LINGER;
    assert_eq!(
        n.sockets_in_use(end - Duration::from_millis(1)),
        BTreeSet::from([0, 1, 2])
    );
    assert_eq!(n.sockets_in_use(end), BTreeSet::from([0]));
    assert!(!n.birthday_listening(end));
}

#[test]
fn hostile_disco_is_dropped_and_counted() {
    let now = t0();
    let mut n = Node::new(
        DiscoPrivate::new(PrivateKey::from_bytes([1; 32])),
        node_key(0).public_key(),
        vec![],
        [0; 32],
        now,
    );
    let peer_disco = DiscoPrivate::new(PrivateKey::from_bytes([2; 32]));
    n.upsert_peer(
        PeerConfig {
            node_key: node_key(1).public_key(),
            disco: peer_disco.public(),
            endpoints: vec![],
            home_derp: Some(REGION),
        },
        now,
    );
    let from: SocketAddr = "203.0.113.5:1000".parse().unwrap();
    // A stranger's disco key.
    let stranger = DiscoBox::new(
        &DiscoPrivate::new(PrivateKey::from_bytes([3; 32])),
        n.disco_public(),
    )
    .unwrap();
    let mut pkt = Vec::new();
    stranger
        .seal(
            [0; 24],
            &Message::Ping {
                tx: TxId([0; 12]),
                node_key: None,
                padding: 0,
            },
            &mut pkt,
        )
        .unwrap();
    assert_eq!(n.handle_udp(0, from, &pkt, now), Received::Dropped);
    // The peer's key but a forged box.
    pkt[6..38].copy_from_slice(peer_disco.public().0.as_bytes());
    assert_eq!(n.handle_udp(0, from, &pkt, now), Received::Dropped);
    // CallMeMaybe over UDP.
    let real = DiscoBox::new(&peer_disco, n.disco_public()).unwrap();
    real.seal(
        [1; 24],
        &Message::CallMeMaybe {
            endpoints: vec![from],
        },
        &mut pkt,
    )
    .unwrap();
    assert_eq!(n.handle_udp(0, from, &pkt, now), Received::Dropped);
    // The peer's disco through another node's DERP address.
    assert_eq!(
        n.handle_derp(REGION, node_key(5).public_key(), &pkt, now),
        Received::Dropped
    );
    // A truncated disco packet and stray STUN.
    assert_eq!(n.handle_udp(0, from, &disco::MAGIC, now), Received::Dropped);
    let stun = weft_derp::stun::binding_response(weft_derp::stun::TxId([0; 12]), from);
    assert_eq!(
        n.handle_udp(0, from, stun.as_bytes(), now),
        Received::Dropped
    );
    let s = n.stats();
    assert_eq!(s.disco_unknown_sender, 1);
    assert_eq!(s.disco_bad, 3);
    assert_eq!(s.call_me_maybe_over_udp, 1);
    assert_eq!(s.stun_unmatched, 1);
    // Nothing was sent in answer to any of it.
    assert_eq!(n.poll_transmit(now), None);
    // WireGuard passes through.
    assert_eq!(n.handle_udp(0, from, DATA, now), Received::WireGuard);
}

#[test]
fn scenario_1_direct_soon_when_one_side_starts_later() {
    // The lab's shape: node 1 only answers node 0's first packet, and sends on its own 200 ms
    // later; the path must not wait for node 1's own traffic.
    let mut w = World::new([NatKind::Easy, NatKind::Easy], false, 5);
    w.data_start = [Duration::ZERO, Duration::from_millis(500)];
    w.reply_once = [false, true];
    let direct = w.run(5).expect("direct path");
    eprintln!("asymmetric start: direct after {direct:?}");
    assert!(
        direct < Duration::from_millis(200),
        "direct after {direct:?}"
    );
}

fn lone_node(now: Instant) -> Node {
    Node::new(
        DiscoPrivate::new(PrivateKey::from_bytes([1; 32])),
        node_key(0).public_key(),
        vec![],
        [0; 32],
        now,
    )
}

/// [`lone_node`] with one peer (node key 1, homed on `REGION`), and that peer's disco key.
fn node_with_one_peer(now: Instant) -> (Node, DiscoPrivate, PublicKey) {
    let mut n = lone_node(now);
    let d = DiscoPrivate::new(PrivateKey::from_bytes([2; 32]));
    let peer = node_key(1).public_key();
    n.upsert_peer(peer_cfg(peer, d.public()), now);
    (n, d, peer)
}

fn peer_cfg(node: PublicKey, disco: DiscoPublic) -> PeerConfig {
    PeerConfig {
        node_key: node,
        disco,
        endpoints: vec![],
        home_derp: Some(REGION),
    }
}

#[test]
fn nodes_sharing_a_disco_key_are_told_apart_and_removing_one_orphans_nobody() {
    let now = t0();
    let mut n = lone_node(now);
    let d = DiscoPrivate::new(PrivateKey::from_bytes([2; 32]));
    let (a, b) = (node_key(1).public_key(), node_key(2).public_key());
    n.upsert_peer(peer_cfg(a, d.public()), now);
    n.upsert_peer(peer_cfg(b, d.public()), now);
    let sealer = DiscoBox::new(&d, n.disco_public()).unwrap();
    let from: SocketAddr = "198.51.100.7:41641".parse().unwrap();
    let ping = |tx: u8, key: Option<PublicKey>| {
        let mut p = Vec::new();
        sealer
            .seal(
                [tx; 24],
                &Message::Ping {
                    tx: TxId([tx; 12]),
                    node_key: key,
                    padding: 0,
                },
                &mut p,
            )
            .unwrap();
        p
    };
    // The ping names B: B learns the endpoint, A does not.
    assert_eq!(
        n.handle_udp(0, from, &ping(1, Some(b)), now),
        Received::Handled
    );
    let has = |n: &Node, k: &PublicKey| n.peer_status(k).unwrap().1.iter().any(|(e, _)| *e == from);
    assert!(has(&n, &b) && !has(&n, &a));
    // No node key (or a stranger's): ambiguous, dropped.
    assert_eq!(
        n.handle_udp(0, from, &ping(2, None), now),
        Received::Dropped
    );
    assert_eq!(
        n.handle_udp(0, from, &ping(3, Some(node_key(9).public_key())), now),
        Received::Dropped
    );
    assert_eq!(n.stats().disco_ambiguous, 2);
    // Via DERP the relay's source address decides.
    assert_eq!(
        n.handle_derp(REGION, a, &ping(4, None), now),
        Received::Handled
    );
    // Removing A leaves B reachable by its disco key alone.
    n.remove_peer(&a);
    assert_eq!(
        n.handle_udp(0, from, &ping(5, None), now),
        Received::Handled
    );
}

#[test]
fn a_peer_with_a_zero_disco_key_is_reached_through_derp_only() {
    let now = t0();
    let mut n = lone_node(now);
    let peer = node_key(1).public_key();
    let mut cfg = peer_cfg(peer, DiscoPublic(PublicKey::from_bytes([0; 32])));
    cfg.endpoints = vec!["198.51.100.7:41641".parse().unwrap()];
    n.upsert_peer(cfg, now);
    assert_eq!(n.stats().disco_key_refused, 1);
    let d = n.send_to(&peer, now).unwrap();
    assert_eq!(d.udp, None);
    assert_eq!(d.derp, Some(REGION));
    // Nothing sealed with a key anyone could compute: no pings, no CallMeMaybe.
    assert_eq!(n.poll_transmit(now), None);
    // A "ping" sealed to the zero key's shared secret is refused like any stranger's.
    let forger = DiscoPrivate::new(PrivateKey::from_bytes([0; 32]));
    assert!(DiscoBox::new(&forger, n.disco_public()).is_some());
    let mut p = Vec::new();
    DiscoBox::new(&forger, n.disco_public())
        .unwrap()
        .seal(
            [0; 24],
            &Message::Ping {
                tx: TxId([0; 12]),
                node_key: None,
                padding: 0,
            },
            &mut p,
        )
        .unwrap();
    assert_eq!(
        n.handle_udp(0, "203.0.113.9:1".parse().unwrap(), &p, now),
        Received::Dropped
    );
}

#[test]
fn v4_mapped_sources_from_a_dual_stack_socket_are_canonical() {
    let now = t0();
    let (mut n, d, peer) = node_with_one_peer(now);
    let mut p = Vec::new();
    DiscoBox::new(&d, n.disco_public())
        .unwrap()
        .seal(
            [0; 24],
            &Message::Ping {
                tx: TxId([7; 12]),
                node_key: Some(peer),
                padding: 0,
            },
            &mut p,
        )
        .unwrap();
    let mapped: SocketAddr = "[::ffff:198.51.100.7]:41641".parse().unwrap();
    assert_eq!(n.handle_udp(0, mapped, &p, now), Received::Handled);
    let plain: SocketAddr = "198.51.100.7:41641".parse().unwrap();
    assert!(n
        .peer_status(&peer)
        .unwrap()
        .1
        .iter()
        .any(|(e, _)| *e == plain));
    // The pong goes to the plain address.
    let t = n.poll_transmit(now).unwrap();
    assert_eq!(
        t.via,
        Via::Udp {
            socket: 0,
            to: plain
        }
    );
}
