use super::*;
use proptest::prelude::*;

#[allow(clippy::disallowed_methods)] // An arbitrary base instant; only offsets matter.
fn t0() -> Instant {
    Instant::now()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn drain(p: &mut PeerPath) -> Vec<Output> {
    std::iter::from_fn(|| p.poll_output()).collect()
}

fn pings(out: &[Output]) -> Vec<(SocketAddr, TxId)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Ping {
                route: Route::Udp(a),
                tx,
            } => Some((*a, *tx)),
            _ => None,
        })
        .collect()
}

#[test]
fn first_packet_goes_via_derp_and_starts_discovery() {
    let now = t0();
    let mut p = PeerPath::new([1; 32], true);
    p.set_control_endpoints(&[sa("198.51.100.1:41641"), sa("10.0.0.2:41641")], now);
    assert_eq!(
        p.route(now),
        SendTo {
            udp: None,
            derp: true
        }
    );
    p.note_outbound(now);
    let out = drain(&mut p);
    assert_eq!(pings(&out).len(), 2, "every endpoint pinged: {out:?}");
    assert!(out.contains(&Output::CallMeMaybe));
    // A second packet right after does not re-ping (5 s per endpoint, 5 s per CallMeMaybe).
    p.note_outbound(now + Duration::from_millis(10));
    assert!(drain(&mut p).is_empty());
}

#[test]
fn a_pong_switches_to_direct_and_trust_expires_back_to_derp() {
    let now = t0();
    let mut p = PeerPath::new([2; 32], true);
    let ep = sa("198.51.100.1:41641");
    p.set_control_endpoints(&[ep], now);
    p.note_outbound(now);
    let (to, tx) = pings(&drain(&mut p))[0];
    assert_eq!(to, ep);
    let at = now + Duration::from_millis(20);
    assert!(p.handle_pong(tx, ep, at));
    assert_eq!(p.latency(), Some(Duration::from_millis(20)));
    assert_eq!(
        p.route(at),
        SendTo {
            udp: Some(ep),
            derp: false
        }
    );
    assert_eq!(p.direct(at), Some(ep));
    // No more pongs: 6.5 s later both paths are used again.
    let later = at + TRUST_UDP_ADDR_DURATION;
    assert_eq!(
        p.route(later),
        SendTo {
            udp: Some(ep),
            derp: true
        }
    );
    assert_eq!(p.direct(later), None);
}

#[test]
fn pongs_must_match_id_and_address() {
    let now = t0();
    let mut p = PeerPath::new([3; 32], true);
    let ep = sa("198.51.100.1:41641");
    p.set_control_endpoints(&[ep], now);
    p.note_outbound(now);
    let (_, tx) = pings(&drain(&mut p))[0];
    assert!(!p.handle_pong(TxId([0; 12]), ep, now));
    assert!(!p.handle_pong(tx, sa("203.0.113.9:1"), now));
    assert_eq!(p.stats().pongs_unmatched, 2);
    assert_eq!(p.direct(now), None);
    assert!(p.handle_pong(tx, ep, now));
    // The same id twice is a replay.
    assert!(!p.handle_pong(tx, ep, now));
}

#[test]
fn heartbeat_pings_best_every_3s_while_active_and_stops_when_idle() {
    let now = t0();
    let mut p = PeerPath::new([4; 32], true);
    let ep = sa("10.0.0.2:41641");
    p.set_control_endpoints(&[ep], now);
    p.note_outbound(now);
    let (_, tx) = pings(&drain(&mut p))[0];
    p.handle_pong(tx, ep, now + Duration::from_millis(1));
    let mut t;
    let mut beats = 0;
    // Traffic keeps flowing for 30 s; pongs answer every heartbeat.
    for _ in 0..200 {
        let Some(next) = p.poll_timeout() else { break };
        t = next;
        if t > now + Duration::from_secs(30) {
            break;
        }
        p.note_outbound(t);
        p.handle_timeout(t);
        for (to, tx) in pings(&drain(&mut p)) {
            assert_eq!(to, ep);
            beats += 1;
            p.handle_pong(tx, ep, t + Duration::from_millis(1));
        }
        assert_eq!(p.direct(t + Duration::from_millis(1)), Some(ep));
    }
    assert!((9..=11).contains(&beats), "{beats} heartbeats in 30 s");
    // Idle: heartbeats stop within the session timeout plus one interval.
    let mut pinged_late = 0;
    for _ in 0..100 {
        let Some(next) = p.poll_timeout() else { break };
        t = next;
        p.handle_timeout(t);
        let out = drain(&mut p);
        if t > now + Duration::from_secs(30) + SESSION_ACTIVE_TIMEOUT + HEARTBEAT_INTERVAL {
            pinged_late += out.len();
        }
        for (to, tx) in pings(&out) {
            p.handle_pong(tx, to, t);
        }
    }
    assert_eq!(pinged_late, 0);
    assert_eq!(p.poll_timeout(), None, "timers stop when idle");
}

#[test]
fn call_me_maybe_pings_new_endpoints_at_once_even_if_recently_pinged() {
    let now = t0();
    let mut p = PeerPath::new([5; 32], true);
    let ep = sa("198.51.100.1:41641");
    p.set_control_endpoints(&[ep], now);
    p.note_outbound(now);
    drain(&mut p);
    let more = sa("198.51.100.1:50000");
    p.handle_call_me_maybe(&[ep, more], now + Duration::from_millis(100));
    let sent = pings(&drain(&mut p));
    let to: Vec<SocketAddr> = sent.iter().map(|s| s.0).collect();
    assert_eq!(to, vec![ep, more]);
}

#[test]
fn a_ping_is_answered_on_its_route_and_its_source_learned() {
    let now = t0();
    let mut p = PeerPath::new([6; 32], true);
    let src = sa("203.0.113.7:1234");
    p.handle_ping(Route::Udp(src), TxId([9; 12]), src, 0, now);
    let out = drain(&mut p);
    assert_eq!(
        out[0],
        Output::Pong {
            route: Route::Udp(src),
            tx: TxId([9; 12]),
            src
        }
    );
    assert_eq!(pings(&out), vec![(src, pings(&out)[0].1)], "pinged back");
    assert!(p.candidates().any(|(a, s)| a == src && s == Source::Ping));
    // Via DERP: answered via DERP, nothing learned.
    let derp_src = sa("127.3.3.40:900");
    p.handle_ping(Route::Derp, TxId([8; 12]), derp_src, 0, now);
    assert_eq!(
        drain(&mut p),
        vec![Output::Pong {
            route: Route::Derp,
            tx: TxId([8; 12]),
            src: derp_src
        }]
    );
    assert!(!p.candidates().any(|(a, _)| a == derp_src));
}

#[test]
fn better_follows_latency_points_and_bonuses() {
    let ms = Duration::from_millis;
    let public = sa("198.51.100.1:1");
    let public2 = sa("198.51.100.2:1");
    let private = sa("10.0.0.2:1");
    // Faster wins.
    assert!(better((public, ms(10)), (public2, ms(20))));
    assert!(!better((public, ms(20)), (public2, ms(10))));
    // Private +20 beats a public path up to ~20% faster.
    assert!(better((private, ms(10)), (public, ms(9))));
    assert!(!better((private, ms(20)), (public, ms(10))));
    // Same address never "better"; a 1-point gain over nothing does not switch.
    assert!(!better((public, ms(1)), (public, ms(9))));
    assert!(!better((public, ms(99)), (public2, ms(100))));
    // Loopback and IPv6 bonuses.
    assert!(better((sa("127.0.0.1:1"), ms(5)), (private, ms(4))));
    assert!(better((sa("[2001:db8::1]:1"), ms(10)), (public, ms(10))));
}

#[test]
fn endpoints_and_pending_pings_stay_bounded() {
    let now = t0();
    let mut p = PeerPath::new([7; 32], true);
    for i in 0..1000u32 {
        let src = SocketAddr::from(([203, 0, (i >> 8) as u8, i as u8], 1000));
        let mut tx = [0; 12];
        tx[..4].copy_from_slice(&i.to_le_bytes());
        p.handle_ping(Route::Udp(src), TxId(tx), src, 0, now);
    }
    assert!(p.candidates().count() <= MAX_ENDPOINTS);
    assert!(p.pending.len() <= MAX_PENDING);
    // Useless addresses are never candidates.
    p.set_control_endpoints(&[sa("0.0.0.0:1"), sa("224.0.0.1:1"), sa("1.2.3.4:0")], now);
    assert!(p.candidates().all(|(a, _)| usable(a)));
}

#[derive(Debug, Clone)]
enum Ev {
    Outbound,
    Control(Vec<u16>),
    CallMeMaybe(Vec<u16>),
    Ping(u16),
    PongFor(usize, bool),
    Advance(u16),
}

fn arb_ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        Just(Ev::Outbound),
        proptest::collection::vec(1u16..20, 0..4).prop_map(Ev::Control),
        proptest::collection::vec(1u16..20, 0..4).prop_map(Ev::CallMeMaybe),
        (1u16..20).prop_map(Ev::Ping),
        (any::<usize>(), any::<bool>()).prop_map(|(i, ok)| Ev::PongFor(i, ok)),
        (0u16..10_000).prop_map(Ev::Advance),
    ]
}

proptest! {
    /// Whatever happens: direct-only sending requires a pong in the last 6.5 s from that
    /// address, DERP is used whenever no direct path is trusted, and timers never go backwards.
    #[test]
    fn routing_invariants_hold(evs in proptest::collection::vec(arb_ev(), 1..200)) {
        let start = t0();
        let mut now = start;
        let mut p = PeerPath::new([9; 32], true);
        let mut sent: Vec<(SocketAddr, TxId)> = Vec::new();
        let mut last_pong: BTreeMap<SocketAddr, Instant> = BTreeMap::new();
        let port = |n: u16| SocketAddr::from(([198, 51, 100, 1], 40000 + n));
        for ev in evs {
            match ev {
                Ev::Outbound => p.note_outbound(now),
                Ev::Control(v) => p.set_control_endpoints(&v.into_iter().map(port).collect::<Vec<_>>(), now),
                Ev::CallMeMaybe(v) => p.handle_call_me_maybe(&v.into_iter().map(port).collect::<Vec<_>>(), now),
                Ev::Ping(n) => {
                    p.handle_ping(Route::Udp(port(n)), TxId([n as u8; 12]), port(n), 0, now);
                }
                Ev::PongFor(i, ok) => {
                    if !sent.is_empty() {
                        let (to, tx) = sent[i % sent.len()];
                        let from = if ok { to } else { port(0) };
                        if p.pending.get(&tx).is_some_and(|&(a, _)| a == from) {
                            last_pong.insert(from, now);
                        }
                        p.handle_pong(tx, from, now);
                    }
                }
                Ev::Advance(ms) => {
                    now += Duration::from_millis(u64::from(ms));
                    if p.poll_timeout().is_some_and(|t| t <= now) {
                        p.handle_timeout(now);
                    }
                }
            }
            sent.extend(pings(&drain(&mut p)));
            let r = p.route(now);
            if let (Some(addr), false) = (r.udp, r.derp) {
                let pong = last_pong.get(&addr).copied();
                prop_assert!(pong.is_some_and(|t| now < t + TRUST_UDP_ADDR_DURATION),
                    "direct-only to {addr} without a recent pong");
            }
            if p.direct(now).is_none() {
                prop_assert!(r.derp);
            }
            prop_assert!(p.candidates().count() <= MAX_ENDPOINTS);
            // The ordered ids find the oldest pending ping exactly as a scan would.
            let scan = p.pending.values().map(|&(_, t)| t + PING_TIMEOUT).min();
            prop_assert_eq!(p.poll_timeout(), [p.next_heartbeat, scan].into_iter().flatten().min());
            prop_assert!(p.pending.keys().all(|tx| p.sent_order.contains(tx)));
            prop_assert!(p.sent_order.len() <= 2 * MAX_PENDING);
        }
    }
}

#[test]
fn a_ping_from_a_recently_pinged_endpoint_is_pinged_back_when_untrusted() {
    // Crossing probes: our ping to the peer died at its NAT; its ping to us shows its NAT now
    // holds a mapping, so we ping back at once instead of waiting out the 5 s interval.
    let now = t0();
    let mut p = PeerPath::new([8; 32], true);
    let ep = sa("203.0.113.1:41641");
    p.handle_call_me_maybe(&[ep], now);
    assert_eq!(pings(&drain(&mut p)).len(), 1);
    let later = now + Duration::from_millis(20);
    p.handle_ping(Route::Udp(ep), TxId([1; 12]), ep, 0, later);
    let out = drain(&mut p);
    assert_eq!(pings(&out).len(), 1, "{out:?}");
    // Not more than once per PING_BACK_INTERVAL.
    p.handle_ping(
        Route::Udp(ep),
        TxId([2; 12]),
        ep,
        0,
        later + Duration::from_millis(100),
    );
    assert!(pings(&drain(&mut p)).is_empty());
    // Once trusted, pings are only answered.
    let (_, tx) = pings(&out)[0];
    assert!(p.handle_pong(tx, ep, later + Duration::from_millis(2)));
    p.handle_ping(
        Route::Udp(ep),
        TxId([3; 12]),
        ep,
        0,
        later + Duration::from_secs(2),
    );
    assert!(pings(&drain(&mut p)).is_empty());
}

#[test]
fn a_replayed_ping_is_neither_answered_nor_learned() {
    let now = t0();
    let mut p = PeerPath::new([10; 32], true);
    let src = sa("203.0.113.7:1234");
    assert!(p.handle_ping(Route::Udp(src), TxId([4; 12]), src, 0, now));
    drain(&mut p);
    // The same id again, from the same or a spoofed source: silence.
    let spoofed = sa("198.51.100.99:53");
    assert!(!p.handle_ping(Route::Udp(src), TxId([4; 12]), src, 0, now));
    assert!(!p.handle_ping(Route::Udp(spoofed), TxId([4; 12]), spoofed, 0, now));
    assert!(drain(&mut p).is_empty());
    assert!(!p.candidates().any(|(a, _)| a == spoofed));
    assert_eq!(p.stats().pings_replayed, 2);
}

#[test]
fn ping_backs_are_limited_per_peer_not_per_address() {
    let now = t0();
    let mut p = PeerPath::new([11; 32], true);
    let mut pinged = 0;
    for i in 0..50u8 {
        let src = SocketAddr::from(([203, 0, 113, i], 1000));
        p.handle_ping(Route::Udp(src), TxId([i; 12]), src, 0, now);
        pinged += pings(&drain(&mut p)).len();
    }
    assert_eq!(pinged, 1, "one ping-back per 250 ms, whatever the sources");
}

#[test]
fn call_me_maybe_is_deduplicated_capped_filtered_and_rate_limited() {
    let now = t0();
    let mut p = PeerPath::new([12; 32], true);
    let x = sa("198.51.100.1:41641");
    // 3636 copies of one address: one ping.
    p.handle_call_me_maybe(&vec![x; 3636], now);
    let sent = pings(&drain(&mut p));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, x);
    // Never-worth-pinging addresses are dropped.
    let bad = [
        sa("127.0.0.1:22"),
        sa("169.254.1.1:1"),
        sa("[fe80::1]:1"),
        sa("127.3.3.40:900"),
        sa("0.0.0.0:1"),
    ];
    p.handle_call_me_maybe(&bad, now + Duration::from_secs(2));
    assert!(pings(&drain(&mut p)).is_empty());
    assert!(p.candidates().all(|(a, _)| !bad.contains(&a)));
    // 200 distinct addresses: at most 64 taken, and they replace the previous list.
    let many: Vec<SocketAddr> = (0..200u16)
        .map(|i| SocketAddr::from(([198, 51, 100, 2], 1000 + i)))
        .collect();
    p.handle_call_me_maybe(&many, now + Duration::from_secs(4));
    assert_eq!(
        pings(&drain(&mut p)).len(),
        crate::disco::MAX_CALL_ME_MAYBE_ENDPOINTS
    );
    assert!(!p.candidates().any(|(a, _)| a == x), "replaced");
    // A burst of CallMeMaybes: only CALL_ME_MAYBE_BURST of them ping at once.
    let mut t = now + Duration::from_secs(10);
    let mut pinging = 0;
    for i in 0..10u16 {
        p.handle_call_me_maybe(&[SocketAddr::from(([198, 51, 100, 3], 2000 + i))], t);
        pinging += usize::from(!pings(&drain(&mut p)).is_empty());
        t += Duration::from_millis(10);
    }
    assert_eq!(pinging, CALL_ME_MAYBE_BURST as usize);
    assert!(p.stats().call_me_maybe_limited >= 8);
}

#[test]
fn ping_learned_endpoints_age_out_and_never_evict_stronger_ones() {
    let now = t0();
    let mut p = PeerPath::new([13; 32], true);
    let cmm: Vec<SocketAddr> = (0..10u16)
        .map(|i| SocketAddr::from(([198, 51, 100, 4], 3000 + i)))
        .collect();
    p.handle_call_me_maybe(&cmm, now);
    for i in 0..500u32 {
        let src = SocketAddr::from(([203, 0, (i >> 8) as u8, i as u8], 1000));
        let mut tx = [1; 12];
        tx[..4].copy_from_slice(&i.to_le_bytes());
        p.handle_ping(Route::Udp(src), TxId(tx), src, 0, now);
    }
    for a in &cmm {
        assert!(
            p.candidates().any(|(c, _)| c == *a),
            "{a} evicted by ping-learned ones"
        );
    }
    // After 45 s the unanswered ping-learned ones are gone.
    p.note_outbound(now + PING_LEARNED_LIFETIME);
    p.handle_timeout(now + PING_LEARNED_LIFETIME + HEARTBEAT_INTERVAL);
    assert!(p.candidates().all(|(_, s)| s != Source::Ping));
}
