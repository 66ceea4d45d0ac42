use super::*;
use crate::sim::{Nat, NatKind};
use std::collections::BTreeMap;

#[allow(clippy::disallowed_methods)] // An arbitrary base instant; only offsets matter.
fn t0() -> Instant {
    Instant::now()
}

const LOCAL_BASE: u16 = 20000;
const LATENCY: Duration = Duration::from_millis(2);

/// Runs one birthday attempt between two simulated NATs; returns the first hit (on either
/// side) and the probes both sides sent until then.
fn run(
    mut a: Birthday,
    mut b: Birthday,
    mut na: Nat,
    mut nb: Nat,
    start: Instant,
) -> Option<(Hit, u64)> {
    // In flight: arrival time → (to side B?, public destination, public source).
    let mut wire: BTreeMap<(Instant, u64), (bool, SocketAddr, SocketAddr)> = BTreeMap::new();
    let mut seq = 0u64;
    let mut now = start;
    for _ in 0..1_000_000 {
        for (side_b, bd, nat) in [(false, &mut a, &mut na), (true, &mut b, &mut nb)] {
            while let Some(p) = bd.poll_transmit(now) {
                if let Some(src) = nat.outbound(LOCAL_BASE + p.socket, p.to) {
                    seq += 1;
                    wire.insert((now + LATENCY, seq), (!side_b, p.to, src));
                }
            }
        }
        // Deliver everything due.
        while let Some((&(at, s), _)) = wire.first_key_value() {
            if at > now {
                break;
            }
            let Some((to_b, dst, src)) = wire.remove(&(at, s)) else {
                break;
            };
            let (bd, nat) = if to_b {
                (&mut b, &mut nb)
            } else {
                (&mut a, &mut na)
            };
            if dst.ip() != nat.public_ip() {
                continue;
            }
            if let Some(local) = nat.inbound(dst.port(), src) {
                if let Some(hit) = bd.handle_reply(local - LOCAL_BASE, src, at) {
                    return Some((hit, a.sent() + b.sent()));
                }
            }
        }
        let next = [
            a.poll_timeout(),
            b.poll_timeout(),
            wire.first_key_value().map(|(k, _)| k.0),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(t) => now = t.max(now),
            None => return None,
        }
    }
    None
}

fn ips() -> (IpAddr, IpAddr) {
    (
        "198.51.100.1".parse().unwrap(),
        "203.0.113.1".parse().unwrap(),
    )
}

/// Both hard, range `r`, `k` sockets per side, over `runs` seeds: (successes, mean probes).
fn both_hard(r: u16, k: u16, runs: u8) -> (u32, u64) {
    let (ia, ib) = ips();
    let (lo, hi) = (40000, 40000 + r - 1);
    let mut ok = 0u32;
    let mut probes = 0;
    for seed in 0..runs {
        let start = t0();
        let na = Nat::new(NatKind::Hard { lo, hi }, ia, [seed; 32]);
        let nb = Nat::new(NatKind::Hard { lo, hi }, ib, [seed.wrapping_add(128); 32]);
        let a = Birthday::new(Plan::sweep(ib, lo, hi, k), start);
        let b = Birthday::new(
            Plan::sweep(ia, lo, hi, k),
            start + Duration::from_millis(37),
        );
        if let Some((hit, n)) = run(a, b, na, nb, start) {
            ok += 1;
            probes += n;
            assert!(hit.elapsed < Duration::from_secs(5));
        }
    }
    (ok, probes / u64::from(ok.max(1)))
}

#[test]
fn two_hard_nats_with_a_small_range_meet_as_the_birthday_bound_predicts() {
    // k sockets a side: about k² mapping pairs can point at each other, so success ≈ 1 − e^(−k²).
    let (one, _) = both_hard(64, 1, 100);
    let (two, probes) = both_hard(64, 2, 100);
    eprintln!("two hard NATs, 64 ports: 1 socket/side {one}/100, 2 sockets/side {two}/100 (mean {probes} probes)");
    // 1 − e^(−1) = 63 %; 1 − e^(−4) = 98 %. Seeds are fixed, so these are exact replays.
    assert!((45..=80).contains(&one), "1 socket: {one}%");
    assert!(two >= 90, "2 sockets: {two}%");
}

#[test]
fn easy_meets_hard_by_fan_out_and_spray() {
    let (ia, ib) = ips();
    let mut ok = 0u32;
    let mut total_probes = 0;
    for seed in 0..50u8 {
        let start = t0();
        // A is easy: its socket 0 keeps its port. B is hard over the default masquerade range.
        let na = Nat::new(NatKind::Easy, ia, [seed; 32]);
        let nb = Nat::new(
            NatKind::Hard {
                lo: 1024,
                hi: 65535,
            },
            ib,
            [seed ^ 0x55; 32],
        );
        let a_public = SocketAddr::new(ia, LOCAL_BASE);
        let b = Birthday::new(Plan::fan_out(a_public, 256), start);
        let a = Birthday::new(
            Plan::spray(ib, 1024, 65535, 1024, [seed; 32]),
            start + Duration::from_millis(200),
        );
        if let Some((hit, n)) = run(a, b, na, nb, start) {
            ok += 1;
            total_probes += n;
            assert!(hit.elapsed < Duration::from_secs(10));
        }
    }
    eprintln!(
        "easy/hard: {ok}/50 direct, mean {} probes",
        total_probes / u64::from(ok.max(1))
    );
    // 256 mappings, 1024 sprayed ports of 64 512: 1 − e^(−4.06) ≈ 98 %.
    assert!(ok >= 45, "{ok}/50");
}

#[test]
fn pacing_rounds_and_stop_after_hit() {
    let start = t0();
    let peer: IpAddr = "203.0.113.1".parse().unwrap();
    let mut b = Birthday::new(Plan::sweep(peer, 100, 109, 2), start);
    let mut first_round = 0;
    while b.poll_transmit(start + Duration::from_millis(9)).is_some() {
        first_round += 1;
    }
    // 2000/s: probes 0..=18 are due by 9 ms.
    assert_eq!(first_round, 19);
    let mut t = start;
    let mut all = first_round;
    for _ in 0..10_000 {
        let Some(next) = b.poll_timeout() else { break };
        t = next;
        while b.poll_transmit(t).is_some() {
            all += 1;
        }
    }
    assert_eq!(all, 4 * 2 * 10, "4 rounds × 2 sockets × 10 ports");
    assert!(b.finished());
    assert!(t >= start + Duration::from_secs(3));
    // After its last probe (at `t`) it listens one round interval plus LINGER, then no more.
    let late = t + b.plan().round_interval + LINGER;
    let ms = Duration::from_millis(1);
    assert!(b.listening(late - ms) && !b.listening(late));
    let from = SocketAddr::new(peer, 105);
    assert!(b.handle_reply(0, from, late).is_none(), "too late");
    assert!(b.handle_reply(0, from, late - ms).is_some(), "lingering");
    assert!(!b.listening(t), "a hit ends it");
    // A reply from elsewhere is not a hit; one from the peer is, once.
    let mut c = Birthday::new(Plan::sweep(peer, 100, 109, 2), start);
    assert!(c
        .handle_reply(0, "198.51.100.9:1".parse().unwrap(), start)
        .is_none());
    assert!(
        c.handle_reply(5, "203.0.113.1:105".parse().unwrap(), start)
            .is_none(),
        "no such socket"
    );
    let hit = c
        .handle_reply(1, "203.0.113.1:105".parse().unwrap(), start)
        .unwrap();
    assert_eq!(hit.socket, 1);
    assert!(c
        .handle_reply(0, "203.0.113.1:106".parse().unwrap(), start)
        .is_none());
    assert_eq!(
        c.poll_transmit(start + Duration::from_secs(1)),
        None,
        "stops after a hit"
    );
}

#[test]
fn spray_ports_are_distinct_and_in_range() {
    let p = Plan::spray("203.0.113.1".parse().unwrap(), 1024, 65535, 5000, [3; 32]);
    let mut seen = std::collections::BTreeSet::new();
    for &port in &p.ports {
        assert!(port >= 1024);
        assert!(seen.insert(port));
    }
    assert_eq!(p.ports.len(), 5000);
    let small = Plan::spray("203.0.113.1".parse().unwrap(), 10, 12, 100, [3; 32]);
    assert_eq!(small.ports.len(), 3);
}

#[test]
fn an_overrunning_round_does_not_leave_a_backlog() {
    // 600 probes at 2000/s take 300 ms per round, longer than the 100 ms interval.
    let start = t0();
    let peer: IpAddr = "203.0.113.1".parse().unwrap();
    let mut plan = Plan::sweep(peer, 1000, 1299, 2);
    plan.round_interval = Duration::from_millis(100);
    let mut b = Birthday::new(plan, start);
    let mut t = start;
    let mut max_burst = 0;
    for _ in 0..100_000 {
        let Some(next) = b.poll_timeout() else { break };
        t = next.max(t);
        let mut burst = 0;
        while b.poll_transmit(t).is_some() {
            burst += 1;
        }
        max_burst = max_burst.max(burst);
    }
    assert!(b.finished());
    assert!(max_burst <= 2, "probes sent in one go: {max_burst}");
    assert!(
        t >= start + Duration::from_millis(4 * 300 - 5),
        "paced over {:?}",
        t - start
    );
}

#[test]
fn an_empty_plan_is_finished_at_once() {
    let start = t0();
    let b = Birthday::new(
        Plan::spray("203.0.113.1".parse().unwrap(), 1024, 65535, 0, [0; 32]),
        start,
    );
    assert!(b.finished());
    assert_eq!(b.poll_timeout(), None);
}
