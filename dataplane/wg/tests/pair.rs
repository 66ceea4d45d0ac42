//! Two `Device`s talking through a simulated network ([`util::Pair`]): handshakes, rekeying,
//! expiry, retransmission, keepalives, roaming, replays, cookies under load, bad input and
//! reconfiguration — each test asserts what the protocol (the whitepaper, and the kernel and
//! wireguard-go where the whitepaper is silent) requires.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod util;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;
use weft_keys::PrivateKey;
use weft_wg::cookie::{CookieChecker, CookieState};
use weft_wg::device::UNDER_LOAD_QUEUE_LEN;
use weft_wg::peer::MAX_STAGED_PACKETS;
use weft_wg::timers::{
    KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_AFTER_TIME, REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX_MS,
};
use weft_wg::{Decapsulated, Encapsulated, Endpoint, RxDrop, TxDrop};

use util::*;

fn is_packet(d: &Decapsulated) -> bool {
    matches!(d, Decapsulated::Packet { .. })
}

/// Sends `n` numbered packets from `who`, starting at `first`, and returns them.
fn send_n(p: &mut Pair, who: Who, first: u32, n: u32) -> Vec<Vec<u8>> {
    (first..first + n)
        .map(|seq| {
            let pkt = p.packet(who, seq);
            let r = p.send(who, &pkt);
            assert!(
                matches!(r, Encapsulated::Send { .. } | Encapsulated::Staged(_)),
                "{r:?}"
            );
            pkt
        })
        .collect()
}

/// Checks that data flows both ways right now.
fn assert_data_flows(p: &mut Pair) {
    let (na, nb) = (p.a.delivered.len(), p.b.delivered.len());
    let to_b = p.packet(Who::A, 90_001);
    let to_a = p.packet(Who::B, 90_002);
    p.send(Who::A, &to_b);
    p.send(Who::B, &to_a);
    p.drive();
    assert_eq!(p.b.delivered.get(nb), Some(&to_b), "A -> B broken");
    assert_eq!(p.a.delivered.get(na), Some(&to_a), "B -> A broken");
}

// ---------------------------------------------------------------------------------------------
// Handshakes
// ---------------------------------------------------------------------------------------------

#[test]
fn handshake_started_by_first_packet_of_a() {
    let mut p = Pair::new();
    let first = p.packet(Who::A, 0);
    let r = p.send(Who::A, &first);
    assert_eq!(r, Encapsulated::Staged(p.a.peer));

    // Step by step, to see when each side considers the handshake complete.
    assert_eq!(p.flush(), 1);
    assert!(p.a.sent[0].is_initiation());
    assert_eq!(p.a.sent[0].payload.len(), 148);
    assert_eq!(p.a.sent[0].to, Endpoint::Udp(b_addr()));
    p.deliver(Who::B);
    assert!(p.timeout(Who::B), "queued initiation is due at once");
    assert_eq!(p.b.dev.stats().rx_initiations, 1);
    assert_eq!(
        p.b.info().last_handshake,
        None,
        "the responder's handshake is complete only once the initiator confirms it"
    );
    assert_eq!(p.flush(), 1);
    assert!(p.b.sent[0].is_response());
    assert_eq!(p.b.sent[0].payload.len(), 92);
    p.deliver(Who::A);
    assert!(p.timeout(Who::A), "queued response is due at once");
    assert_eq!(p.a.dev.stats().rx_responses, 1);
    assert_eq!(p.a.info().last_handshake, Some(UNIX_BASE));
    // The staged packet is the confirmation (no extra keepalive is needed).
    assert_eq!(p.flush(), 1);
    assert!(p.a.sent[1].is_transport() && !p.a.sent[1].is_keepalive());
    p.deliver(Who::B);
    assert_eq!(p.b.delivered, vec![first]);
    assert_eq!(p.b.info().last_handshake, Some(UNIX_BASE));
    p.drive();

    // Data both ways, IPv4 and IPv6.
    p.advance(ms(500));
    let to_b = send_n(&mut p, Who::A, 1, 6);
    let to_a = send_n(&mut p, Who::B, 1, 6);
    p.drive();
    assert_eq!(p.b.delivered[1..], to_b[..]);
    assert_eq!(p.a.delivered, to_a);
    assert!(p.a.drops.is_empty() && p.b.drops.is_empty());
    assert_eq!(p.a.dev.stats().tx_initiations, 1);
    assert_eq!(p.b.dev.stats().tx_initiations, 0);

    // Byte counters count whole messages, handshake included, and agree across the link.
    let (ia, ib) = (p.a.info(), p.b.info());
    assert_eq!(ia.tx_bytes, p.a.bytes_sent());
    assert_eq!(ib.tx_bytes, p.b.bytes_sent());
    assert_eq!(ia.tx_bytes, ib.rx_bytes);
    assert_eq!(ib.tx_bytes, ia.rx_bytes);
    assert!(ia.tx_bytes > 148 && ib.tx_bytes > 92);
    assert_eq!(ia.endpoint, Some(Endpoint::Udp(b_addr())));
    assert_eq!(ib.endpoint, Some(Endpoint::Udp(a_addr())));
}

#[test]
fn handshake_started_by_b_delivers_staged_packets_in_order() {
    let mut p = Pair::new();
    let staged: Vec<Vec<u8>> = (0..5).map(|s| p.packet(Who::B, s)).collect();
    for pkt in &staged {
        assert_eq!(p.send(Who::B, pkt), Encapsulated::Staged(p.b.peer));
    }
    p.drive();
    assert_eq!(p.a.delivered, staged);
    assert_eq!(
        p.b.dev.stats().tx_initiations,
        1,
        "one initiation for 5 packets"
    );
    assert_eq!(p.a.dev.stats().tx_initiations, 0);
    assert_eq!(p.a.dev.stats().rx_initiations, 1);
    assert_eq!(p.b.dev.stats().rx_responses, 1);
    assert_eq!(p.a.info().last_handshake, Some(UNIX_BASE));
    assert_eq!(p.b.info().last_handshake, Some(UNIX_BASE));

    p.advance(secs(1));
    let to_b = send_n(&mut p, Who::A, 10, 4);
    p.drive();
    assert_eq!(p.b.delivered, to_b);
    assert_eq!(p.a.info().tx_bytes, p.b.info().rx_bytes);
    assert_eq!(p.b.info().tx_bytes, p.a.info().rx_bytes);
}

#[test]
fn staged_queue_is_bounded_and_keeps_the_newest() {
    let mut p = Pair::new();
    let n = MAX_STAGED_PACKETS as u32 + 2;
    let pkts = send_n(&mut p, Who::A, 0, n);
    assert_eq!(p.a.dev.stats().tx_staged_overflow, 2);
    p.drive();
    assert_eq!(p.b.delivered, pkts[2..]);
}

#[test]
fn simultaneous_initiations_converge() {
    let mut p = Pair::new();
    let pa = p.packet(Who::A, 0);
    let pb = p.packet(Who::B, 0);
    assert!(matches!(p.send(Who::A, &pa), Encapsulated::Staged(_)));
    assert!(matches!(p.send(Who::B, &pb), Encapsulated::Staged(_)));
    // Within a retransmission interval, both staged packets are through.
    p.advance(REKEY_TIMEOUT + ms(REKEY_TIMEOUT_JITTER_MAX_MS));
    assert_eq!(p.b.delivered, vec![pa]);
    assert_eq!(p.a.delivered, vec![pb]);
    assert_data_flows(&mut p);
    assert!(p.a.info().last_handshake.is_some() && p.b.info().last_handshake.is_some());
    // No handshake storm afterwards.
    let before = (
        p.a.dev.stats().tx_initiations,
        p.b.dev.stats().tx_initiations,
    );
    p.advance(secs(60));
    assert_eq!(
        before,
        (
            p.a.dev.stats().tx_initiations,
            p.b.dev.stats().tx_initiations
        )
    );
    assert_data_flows(&mut p);
}

// ---------------------------------------------------------------------------------------------
// Rekeying and expiry
// ---------------------------------------------------------------------------------------------

/// The harness time of the latest completed handshake on either side.
fn last_handshake(p: &Pair) -> Duration {
    let a = p.a.info().last_handshake.unwrap_or(UNIX_BASE);
    let b = p.b.info().last_handshake.unwrap_or(UNIX_BASE);
    a.max(b) - UNIX_BASE
}

/// One packet each way per second up to `until` seconds. When the session is REKEY_AFTER_TIME
/// old, packets are sealed on the old session and held "in flight" while the rekey handshake
/// that the sends start runs, then delivered. Returns the packets sent (to A, to B) and the
/// number of rekeys.
fn traffic_with_rekey_in_flight(
    p: &mut Pair,
    from_sec: u64,
    until: u64,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, usize) {
    let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
    let mut seq = 1_000;
    let mut rekeys = 0;
    for sec in from_sec..=until {
        p.advance_to(secs(sec));
        if secs(sec) >= last_handshake(p) + REKEY_AFTER_TIME {
            rekeys += 1;
            let initiations = p.a.dev.stats().tx_initiations + p.b.dev.stats().tx_initiations;
            // B's packets and A's packet leave on the old session; A's send starts the rekey.
            let mut held_to_a = Vec::new();
            for _ in 0..3 {
                let pkt = p.packet(Who::B, seq);
                seq += 1;
                held_to_a.push(p.seal(Who::B, &pkt));
                to_a.push(pkt);
            }
            let pkt = p.packet(Who::A, seq);
            seq += 1;
            let held_to_b = p.seal(Who::A, &pkt);
            to_b.push(pkt);
            p.drive();
            assert!(
                p.a.dev.stats().tx_initiations + p.b.dev.stats().tx_initiations > initiations,
                "no rekey at {sec} s"
            );
            // The new session is in use both ways: fresh messages carry other indices.
            let pkt = p.packet(Who::A, seq);
            seq += 1;
            let fresh = p.seal(Who::A, &pkt);
            assert_ne!(receiver_index(&fresh), receiver_index(&held_to_b));
            assert!(is_packet(&p.inject(Who::B, a_addr(), fresh)));
            to_b.push(pkt);
            let pkt = p.packet(Who::B, seq);
            seq += 1;
            let fresh = p.seal(Who::B, &pkt);
            assert_ne!(receiver_index(&fresh), receiver_index(&held_to_a[0]));
            assert!(is_packet(&p.inject(Who::A, b_addr(), fresh)));
            to_a.push(pkt);
            // The messages in flight arrive late, and out of order; they decrypt on the
            // previous session.
            for m in held_to_a.into_iter().rev() {
                let v = p.inject(Who::A, b_addr(), m);
                assert!(
                    is_packet(&v),
                    "in-flight packet to A lost at {sec} s: {v:?}"
                );
            }
            let v = p.inject(Who::B, a_addr(), held_to_b);
            assert!(
                is_packet(&v),
                "in-flight packet to B lost at {sec} s: {v:?}"
            );
        }
        for (who, list) in [(Who::A, &mut to_b), (Who::B, &mut to_a)] {
            let pkt = p.packet(who, seq);
            seq += 1;
            p.send(who, &pkt);
            list.push(pkt);
        }
        p.drive();
    }
    (to_a, to_b, rekeys)
}

fn sorted_seqs(pkts: &[Vec<u8>]) -> Vec<u32> {
    let mut v: Vec<u32> = pkts.iter().map(|p| seq_of(p)).collect();
    v.sort_unstable();
    v
}

#[test]
fn rekey_after_rekey_after_time_loses_no_packet() {
    let mut p = Pair::established();
    let (to_a, to_b, rekeys) = traffic_with_rekey_in_flight(&mut p, 1, 300);
    assert_eq!(rekeys, 2);
    assert_eq!(sorted_seqs(&p.a.delivered), sorted_seqs(&to_a));
    assert_eq!(sorted_seqs(&p.b.delivered), sorted_seqs(&to_b));
    assert!(p.a.drops.is_empty(), "{:?}", p.a.drops);
    assert!(p.b.drops.is_empty(), "{:?}", p.b.drops);
    // A initiated the first session, so A rekeys: at 120 s and 240 s.
    assert_eq!(p.a.dev.stats().tx_initiations, 3);
    assert_eq!(p.b.dev.stats().tx_initiations, 0);
    assert_eq!(p.a.info().last_handshake, Some(UNIX_BASE + secs(240)));
    assert_eq!(p.a.info().tx_bytes, p.b.info().rx_bytes);
    assert_eq!(p.b.info().tx_bytes, p.a.info().rx_bytes);
}

#[test]
fn rekey_after_simultaneous_start_loses_no_packet() {
    let mut p = Pair::new();
    let (pa, pb) = (p.packet(Who::A, 0), p.packet(Who::B, 0));
    p.send(Who::A, &pa);
    p.send(Who::B, &pb);
    p.advance(secs(6));
    assert_eq!((p.a.delivered.len(), p.b.delivered.len()), (1, 1));
    p.a.delivered.clear();
    p.b.delivered.clear();
    let (to_a, to_b, rekeys) = traffic_with_rekey_in_flight(&mut p, 7, 400);
    assert!(rekeys >= 2);
    assert_eq!(sorted_seqs(&p.a.delivered), sorted_seqs(&to_a));
    assert_eq!(sorted_seqs(&p.b.delivered), sorted_seqs(&to_b));
    assert!(p.a.drops.is_empty(), "{:?}", p.a.drops);
    assert!(p.b.drops.is_empty(), "{:?}", p.b.drops);
}

#[test]
fn session_older_than_reject_after_time_is_not_used() {
    for who in [Who::A, Who::B] {
        let mut p = Pair::established();
        let pkt = p.packet(Who::A, 1);
        let old = p.seal(Who::A, &pkt);
        assert!(is_packet(&p.inject(Who::B, a_addr(), old.clone())));
        let initiations = p.side(who).dev.stats().tx_initiations;

        p.advance_to(REJECT_AFTER_TIME + secs(1));
        let sent_before = p.side(who).sent.len();
        let pkt = p.packet(who, 7);
        assert_eq!(
            p.send(who, &pkt),
            Encapsulated::Staged(p.side(who).peer),
            "{who:?} used an expired session"
        );
        assert_eq!(p.side(who).dev.stats().tx_initiations, initiations + 1);
        // Receiving on the expired session is refused as well.
        assert_eq!(
            p.inject(Who::B, a_addr(), old.clone()),
            Decapsulated::Dropped(RxDrop::Expired)
        );
        p.drive();
        let after = &p.side(who).sent[sent_before..];
        assert!(after[0].is_initiation(), "first message is the initiation");
        assert_eq!(p.side(who.other()).delivered.last(), Some(&pkt));
        assert_data_flows(&mut p);
    }
}

#[test]
fn keys_are_zeroed_three_reject_after_times_after_the_last_handshake() {
    let mut p = Pair::established();
    let pkt = p.packet(Who::A, 1);
    let old = p.seal(Who::A, &pkt);
    assert!(is_packet(&p.inject(Who::B, a_addr(), old.clone())));

    p.advance_to(secs(100));
    assert_eq!(
        p.inject(Who::B, a_addr(), old.clone()),
        Decapsulated::Dropped(RxDrop::Replay)
    );
    p.advance_to(secs(200));
    assert_eq!(
        p.inject(Who::B, a_addr(), old.clone()),
        Decapsulated::Dropped(RxDrop::Expired)
    );
    p.advance_to(secs(539));
    assert_eq!(
        p.inject(Who::B, a_addr(), old.clone()),
        Decapsulated::Dropped(RxDrop::Expired)
    );
    p.advance_to(secs(541));
    assert_eq!(
        p.inject(Who::B, a_addr(), old),
        Decapsulated::Dropped(RxDrop::UnknownIndex)
    );
    assert_eq!(p.b.dev.stats().rx_unknown_index, 1);
    // Nothing was sent while idle except B's passive keepalives: B got two data packets in
    // the first ten seconds, so it sends another one KEEPALIVE_TIMEOUT after the first.
    assert_eq!(
        p.b.keepalives_sent(),
        vec![KEEPALIVE_TIMEOUT, 2 * KEEPALIVE_TIMEOUT]
    );
    assert!(p.a.keepalives_sent().is_empty());
    assert_eq!(p.a.dev.stats().tx_initiations, 1);
    // A starts afresh.
    let pkt = p.packet(Who::A, 2);
    assert!(matches!(p.send(Who::A, &pkt), Encapsulated::Staged(_)));
    p.drive();
    assert_eq!(p.b.delivered.last(), Some(&pkt));
}

// ---------------------------------------------------------------------------------------------
// Retransmission and giving up
// ---------------------------------------------------------------------------------------------

#[test]
fn lost_initiations_are_retransmitted_with_jitter() {
    let mut p = Pair::new();
    p.a_to_b.blocked = true;
    let pkt = p.packet(Who::A, 0);
    assert!(matches!(p.send(Who::A, &pkt), Encapsulated::Staged(_)));
    p.advance_to(secs(12));
    assert_eq!(
        p.a.initiations_sent().len(),
        3,
        "{:?}",
        p.a.initiations_sent()
    );
    p.a_to_b.blocked = false;
    p.advance_to(secs(20));
    let times = p.a.initiations_sent();
    assert_eq!(times.len(), 4, "{times:?}");
    let intervals: Vec<_> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for i in &intervals {
        assert!(
            *i >= REKEY_TIMEOUT && *i < REKEY_TIMEOUT + ms(REKEY_TIMEOUT_JITTER_MAX_MS),
            "retry interval {i:?}"
        );
    }
    assert!(
        intervals.iter().any(|i| *i != REKEY_TIMEOUT),
        "no jitter: {intervals:?}"
    );
    assert_eq!(p.b.delivered, vec![pkt]);
    assert_eq!(p.b.dev.stats().rx_initiations, 1);
    assert_eq!(p.a.dev.stats().tx_handshake_gave_up, 0);
    // No more retries once the handshake completed.
    p.advance(secs(30));
    assert_eq!(p.a.initiations_sent().len(), 4);
}

#[test]
fn handshake_is_given_up_after_rekey_attempt_time() {
    let mut p = Pair::new();
    p.a_to_b.blocked = true;
    let staged = send_n(&mut p, Who::A, 0, 3);
    assert_eq!(staged.len(), 3);
    p.advance_to(secs(200));
    let times = p.a.initiations_sent();
    // The kernel and wireguard-go: the first try and MAX_TIMER_HANDSHAKES + 1 retries, then
    // one more timeout to give up, ~REKEY_ATTEMPT_TIME after the first try.
    assert_eq!(times.len(), 20, "{times:?}");
    assert_eq!(p.a.dev.stats().tx_initiations, 20);
    assert_eq!(p.a.dev.stats().tx_handshake_gave_up, 1);
    let last = *times.last().unwrap();
    assert!(last >= secs(95) && last < secs(95) + ms(20 * REKEY_TIMEOUT_JITTER_MAX_MS));
    // Staged packets were dropped with the handshake: when B reaches A later, A has nothing
    // to flush.
    p.a_to_b.blocked = false;
    let pkt = p.packet(Who::B, 9);
    assert!(matches!(p.send(Who::B, &pkt), Encapsulated::Staged(_)));
    p.drive();
    assert_eq!(p.a.delivered, vec![pkt]);
    assert!(
        p.b.delivered.is_empty(),
        "staged packets survived the give-up"
    );
    // A fresh packet from A goes through on the new session.
    assert_data_flows(&mut p);
}

// ---------------------------------------------------------------------------------------------
// Keepalives and the new-handshake timer
// ---------------------------------------------------------------------------------------------

#[test]
fn passive_keepalive_answers_unanswered_data_once() {
    let mut p = Pair::established();
    p.advance_to(secs(12));
    assert_eq!(p.b.keepalives_sent(), vec![secs(10)]);
    assert_eq!(p.a.keepalives_rx, vec![secs(10)]);

    p.advance_to(secs(20));
    send_n(&mut p, Who::A, 1, 1);
    p.advance_to(secs(50));
    assert_eq!(p.b.keepalives_sent(), vec![secs(10), secs(30)]);
    assert!(
        p.a.keepalives_sent().is_empty(),
        "a keepalive must not be answered"
    );
    assert_eq!(
        p.a.dev.stats().tx_initiations,
        1,
        "answered data needs no new handshake"
    );

    // Data answered by data within KEEPALIVE_TIMEOUT needs no keepalive from B; A, which got
    // the last data packet, sends one.
    p.advance_to(secs(60));
    send_n(&mut p, Who::A, 2, 1);
    p.advance_to(secs(65));
    send_n(&mut p, Who::B, 3, 1);
    p.advance_to(secs(110));
    assert_eq!(p.b.keepalives_sent(), vec![secs(10), secs(30)]);
    assert_eq!(p.a.keepalives_sent(), vec![secs(75)]);
    assert_eq!(p.a.dev.stats().tx_initiations, 1);
}

#[test]
fn persistent_keepalive_every_interval_without_storm() {
    let mut p = Pair::established();
    p.advance_to(secs(12));
    let now = p.now();
    let peer = p.a.peer;
    p.a.dev.set_persistent_keepalive(peer, 25, now);
    assert_eq!(p.a.info().persistent_keepalive, 25);
    p.advance_to(secs(100));
    assert_eq!(
        p.a.keepalives_sent(),
        vec![secs(12), secs(37), secs(62), secs(87)]
    );
    assert_eq!(
        p.b.keepalives_sent(),
        vec![secs(10)],
        "keepalives are not answered"
    );

    // Traffic pushes the next one out: A sends data at 100; B's passive keepalive arrives at
    // 110; A's persistent keepalive is due 25 s after that.
    send_n(&mut p, Who::A, 1, 1);
    p.advance_to(secs(140));
    assert_eq!(p.a.keepalives_sent().last(), Some(&secs(135)));

    let now = p.now();
    p.a.dev.set_persistent_keepalive(peer, 0, now);
    let n = p.a.keepalives_sent().len();
    p.advance_to(secs(300));
    assert_eq!(p.a.keepalives_sent().len(), n, "off means off");
}

#[test]
fn keepalives_alone_rekey_like_data() {
    // A initiated the session; its persistent keepalives are transport messages, so the first
    // one sent on a session older than REKEY_AFTER_TIME starts a new handshake (the kernel's
    // keep_key_fresh runs for every packet sent).
    let mut p = Pair::established();
    let now = p.now();
    let peer = p.a.peer;
    p.a.dev.set_persistent_keepalive(peer, 25, now);
    p.advance_to(secs(400));
    let times = p.a.initiations_sent();
    assert!(times.len() >= 2, "{times:?}");
    assert!(
        times[1] <= REKEY_AFTER_TIME + secs(25),
        "rekey came only at {:?}",
        times[1]
    );
    assert!(p.a.drops.is_empty() && p.b.drops.is_empty());
}

#[test]
fn unanswered_data_starts_a_new_handshake() {
    let mut p = Pair::established();
    p.advance_to(secs(20));
    p.b_to_a.blocked = true;
    send_n(&mut p, Who::A, 1, 1);
    p.advance_to(secs(21));
    send_n(&mut p, Who::A, 2, 1);
    p.advance_to(secs(22));
    send_n(&mut p, Who::A, 3, 1);
    p.advance_to(secs(40));
    let times = p.a.initiations_sent();
    assert_eq!(times.len(), 2, "{times:?}");
    // KEEPALIVE_TIMEOUT + REKEY_TIMEOUT after the first unanswered packet, plus jitter.
    let due = secs(20) + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT;
    assert!(
        times[1] >= due && times[1] < due + ms(REKEY_TIMEOUT_JITTER_MAX_MS),
        "{:?}",
        times[1]
    );
    p.b_to_a.blocked = false;
    p.advance_to(secs(50));
    assert_eq!(p.a.dev.stats().rx_responses, 2);
    assert_data_flows(&mut p);
}

// ---------------------------------------------------------------------------------------------
// Roaming
// ---------------------------------------------------------------------------------------------

#[test]
fn roaming_follows_authenticated_packets_only() {
    let mut p = Pair::established();
    p.advance(secs(1));
    let new_addr = SocketAddr::from(([198, 51, 100, 7], 40_000));
    p.a.addr = new_addr;
    let pkt = p.packet(Who::A, 1);
    p.send(Who::A, &pkt);
    p.drive();
    assert_eq!(p.b.delivered.last(), Some(&pkt));
    assert_eq!(p.b.info().endpoint, Some(Endpoint::Udp(new_addr)));
    let reply = p.packet(Who::B, 2);
    assert!(matches!(
        p.send(Who::B, &reply),
        Encapsulated::Send { endpoint, .. } if endpoint == Endpoint::Udp(new_addr)
    ));
    p.drive();
    assert_eq!(p.a.delivered.last(), Some(&reply));
    assert!(p.misrouted.is_empty());

    // Neither a forgery nor a replay from elsewhere moves the endpoint.
    let pkt = p.packet(Who::A, 3);
    let genuine = p.seal(Who::A, &pkt);
    let mut forged = genuine.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0x40;
    assert_eq!(
        p.inject(Who::B, attacker_addr(), forged),
        Decapsulated::Dropped(RxDrop::DecryptFailed)
    );
    assert!(is_packet(&p.inject(Who::B, new_addr, genuine.clone())));
    assert_eq!(
        p.inject(Who::B, attacker_addr(), genuine),
        Decapsulated::Dropped(RxDrop::Replay)
    );
    assert_eq!(p.b.info().endpoint, Some(Endpoint::Udp(new_addr)));
}

// ---------------------------------------------------------------------------------------------
// Replays
// ---------------------------------------------------------------------------------------------

#[test]
fn replayed_transport_messages_are_dropped_and_counted() {
    let mut p = Pair::established();
    let pkt = p.packet(Who::A, 1);
    let m = p.seal(Who::A, &pkt);
    assert!(is_packet(&p.inject(Who::B, a_addr(), m.clone())));
    for i in 1..=3 {
        assert_eq!(
            p.inject(Who::B, a_addr(), m.clone()),
            Decapsulated::Dropped(RxDrop::Replay)
        );
        assert_eq!(p.b.dev.stats().rx_replay, i);
    }
    // Reordering inside the window is not replay.
    let (p2, p3) = (p.packet(Who::A, 2), p.packet(Who::A, 3));
    let (m2, m3) = (p.seal(Who::A, &p2), p.seal(Who::A, &p3));
    assert!(is_packet(&p.inject(Who::B, a_addr(), m3.clone())));
    assert!(is_packet(&p.inject(Who::B, a_addr(), m2.clone())));
    assert_eq!(
        p.inject(Who::B, a_addr(), m2),
        Decapsulated::Dropped(RxDrop::Replay)
    );
    assert_eq!(p.b.dev.stats().rx_replay, 4);
    assert_eq!(p.b.dev.stats().rx_dropped(), 4);
    assert_data_flows(&mut p);
}

#[test]
fn replayed_initiation_is_refused_and_changes_nothing() {
    let mut p = Pair::established();
    let initiation = p.a.sent.iter().find(|s| s.is_initiation()).unwrap().clone();
    p.advance(secs(3));
    let before = (p.b.info().last_handshake, p.b.info().rx_bytes);
    // From the attacker's address: the endpoint must not move either.
    assert_eq!(
        p.inject(Who::B, attacker_addr(), initiation.payload.clone()),
        Decapsulated::Handshake
    );
    assert!(p.timeout(Who::B));
    assert_eq!(p.b.dev.stats().rx_replayed_initiation, 1);
    assert_eq!(p.b.dev.stats().rx_initiations, 1);
    assert_eq!(p.flush(), 0, "a replayed initiation gets no response");
    assert_eq!(p.b.info().endpoint, Some(Endpoint::Udp(a_addr())));
    assert_eq!((p.b.info().last_handshake, p.b.info().rx_bytes), before);
    assert_data_flows(&mut p);
}

#[test]
fn replayed_response_is_dropped() {
    let mut p = Pair::established();
    let response = p.b.sent.iter().find(|s| s.is_response()).unwrap().clone();
    p.advance(secs(2));
    let dropped = p.a.dev.stats().rx_dropped();
    assert_eq!(
        p.inject(Who::A, attacker_addr(), response.payload.clone()),
        Decapsulated::Handshake
    );
    p.drive();
    assert_eq!(p.a.dev.stats().rx_dropped(), dropped + 1);
    assert_eq!(p.a.dev.stats().rx_responses, 1);
    assert_eq!(p.a.info().endpoint, Some(Endpoint::Udp(b_addr())));
    assert_eq!(p.b.sent.iter().filter(|s| s.is_response()).count(), 1);
    assert_data_flows(&mut p);

    // Also while A has a new initiation outstanding (rekey in progress): the old response
    // must not complete it.
    p.advance_to(REKEY_AFTER_TIME + secs(1));
    p.b_to_a.blocked = true;
    send_n(&mut p, Who::A, 50, 1);
    p.drive();
    assert_eq!(p.a.dev.stats().tx_initiations, 2);
    let dropped = p.a.dev.stats().rx_dropped();
    p.inject(Who::A, attacker_addr(), response.payload);
    p.drive();
    assert_eq!(p.a.dev.stats().rx_dropped(), dropped + 1);
    assert_eq!(p.a.dev.stats().rx_responses, 1);
}

// ---------------------------------------------------------------------------------------------
// Cookies under load
// ---------------------------------------------------------------------------------------------

/// A type-1 message with a random body and a valid mac1 for `to`.
fn junk_initiation(rng: &mut XorShift, to: &weft_keys::PublicKey, p: &Pair) -> Vec<u8> {
    let mut msg = vec![0u8; 148];
    msg[0] = 1;
    rng.fill(&mut msg[4..116]);
    CookieState::new(to).add_macs(&mut msg, p.now());
    msg
}

fn junk_source(i: usize) -> SocketAddr {
    SocketAddr::from(([198, 18, (i >> 8) as u8, i as u8], 1000))
}

#[test]
fn cookie_exchange_under_load() {
    let mut p = Pair::new();
    p.timeouts_enabled = [true, false]; // B's handshake queue only fills
    let b_pub = p.b.public;
    let mut rng = XorShift::new(7);
    for i in 0..UNDER_LOAD_QUEUE_LEN {
        let msg = junk_initiation(&mut rng, &b_pub, &p);
        assert_eq!(
            p.inject(Who::B, junk_source(i), msg),
            Decapsulated::Handshake
        );
    }
    assert!(p.b.dev.is_under_load(p.now()));
    assert_eq!(p.b.dev.stats().tx_cookie_replies, 0);

    // A's initiation finds B under load: B answers with a cookie instead of queueing it.
    let pkt = p.packet(Who::A, 0);
    assert!(matches!(p.send(Who::A, &pkt), Encapsulated::Staged(_)));
    p.drive();
    assert_eq!(p.b.dev.stats().tx_cookie_replies, 1);
    assert_eq!(p.a.dev.stats().rx_cookie_replies, 1);
    let reply = p.b.sent.last().unwrap();
    assert!(reply.is_cookie_reply());
    assert_eq!(reply.payload.len(), 64);
    assert_eq!(reply.to, Endpoint::Udp(a_addr()));
    assert_eq!(
        receiver_index(&reply.payload),
        u32::from_le_bytes(p.a.sent[0].payload[4..8].try_into().unwrap())
    );
    assert_eq!(p.b.dev.stats().rx_initiations, 0);
    assert_eq!(&p.a.sent[0].payload[132..], &[0u8; 16], "no cookie yet");

    // A retransmits after REKEY_TIMEOUT with mac2; B accepts it into the queue.
    let mut n = 0;
    while p.a.initiations_sent().len() < 2 {
        assert!(p.advance_to_next_deadline(secs(10)));
        n += 1;
        assert!(n < 10);
    }
    let t_retry = p.elapsed;
    assert!(t_retry >= REKEY_TIMEOUT && t_retry < REKEY_TIMEOUT + ms(REKEY_TIMEOUT_JITTER_MAX_MS));
    let retry = p.a.sent.iter().rfind(|s| s.is_initiation()).unwrap();
    assert_ne!(&retry.payload[132..], &[0u8; 16], "retry carries mac2");
    assert_eq!(p.b.dev.stats().tx_cookie_replies, 1, "mac2 was accepted");

    // B works through its queue: 512 junk initiations fail, A's succeeds.
    p.timeouts_enabled = [true, true];
    p.drive();
    assert_eq!(
        p.b.dev.stats().rx_handshake_failed,
        UNDER_LOAD_QUEUE_LEN as u64
    );
    assert_eq!(p.b.dev.stats().rx_initiations, 1);
    assert_eq!(p.a.dev.stats().rx_responses, 1);
    assert_eq!(p.b.delivered, vec![pkt]);

    // Under load lasts a second past the last message that found the queue full, although
    // the queue is empty now.
    let t = p.base + t_retry;
    assert!(p.b.dev.is_under_load(t + ms(999)));
    assert!(!p.b.dev.is_under_load(t + secs(1)));
    // While it lasts, a new sender without a cookie gets a cookie reply...
    p.advance(ms(500));
    let msg = junk_initiation(&mut rng, &b_pub, &p);
    assert_eq!(
        p.inject(Who::B, junk_source(9999), msg),
        Decapsulated::Handshake
    );
    assert_eq!(p.b.dev.stats().tx_cookie_replies, 2);
    p.drive();
    // ...and afterwards its message is queued (and fails) without one.
    p.advance(ms(600));
    let msg = junk_initiation(&mut rng, &b_pub, &p);
    assert_eq!(
        p.inject(Who::B, junk_source(9998), msg),
        Decapsulated::Handshake
    );
    p.drive();
    assert_eq!(p.b.dev.stats().tx_cookie_replies, 2);
    assert_eq!(
        p.b.dev.stats().rx_handshake_failed,
        UNDER_LOAD_QUEUE_LEN as u64 + 1
    );
    assert_data_flows(&mut p);
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

/// An established pair plus one genuine message of every type, each already delivered to its
/// recipient (so that none of them may be accepted again).
struct Captured {
    p: Pair,
    /// (recipient, message)
    messages: Vec<(Who, Vec<u8>)>,
}

fn captured() -> Captured {
    let mut p = Pair::established();
    let initiation =
        p.a.sent
            .iter()
            .find(|s| s.is_initiation())
            .unwrap()
            .payload
            .clone();
    let response =
        p.b.sent
            .iter()
            .find(|s| s.is_response())
            .unwrap()
            .payload
            .clone();
    // A cookie reply to A's initiation as B would make it: valid once, consumed here.
    let mut checker = CookieChecker::new(&p.b.public);
    let sender = u32::from_le_bytes(initiation[4..8].try_into().unwrap());
    let now = p.now();
    let mut rng = XorShift::new(3);
    let cookie = checker
        .make_reply(&initiation, sender, &a_addr(), now, &mut |b| rng.fill(b))
        .to_vec();
    assert_eq!(
        p.inject(Who::A, b_addr(), cookie.clone()),
        Decapsulated::Handshake
    );
    assert_eq!(p.a.dev.stats().rx_cookie_replies, 1);
    p.advance(secs(1));
    let to_b = p.seal(Who::A, &p.packet(Who::A, 1));
    assert!(is_packet(&p.inject(Who::B, a_addr(), to_b.clone())));
    let to_a = p.seal(Who::B, &p.packet(Who::B, 2));
    assert!(is_packet(&p.inject(Who::A, b_addr(), to_a.clone())));
    p.drive();
    let keepalive =
        p.b.sent
            .iter()
            .find(|s| s.is_keepalive())
            .map(|s| s.payload.clone());
    let mut messages = vec![
        (Who::B, initiation),
        (Who::A, response),
        (Who::A, cookie),
        (Who::B, to_b),
        (Who::A, to_a),
    ];
    if let Some(k) = keepalive {
        messages.push((Who::A, k));
    }
    p.a.drops.clear();
    p.b.drops.clear();
    Captured { p, messages }
}

/// Feeds one datagram from the attacker's address to `who` and checks it was rejected,
/// counted once, answered with nothing, and changed no peer state.
fn feed_bad(p: &mut Pair, who: Who, bytes: Vec<u8>) {
    let dropped = p.side(who).dev.stats().rx_dropped();
    let info = p.side(who).info();
    let v = p.inject(who, attacker_addr(), bytes.clone());
    assert!(
        matches!(v, Decapsulated::Dropped(_) | Decapsulated::Handshake),
        "accepted {v:?}: {}",
        hex::encode(&bytes)
    );
    // Queued handshake messages are processed (and must fail) at once.
    while p.timeout(who) {}
    assert_eq!(
        p.side(who).dev.stats().rx_dropped(),
        dropped + 1,
        "drop not counted exactly once: {v:?} {}",
        hex::encode(&bytes)
    );
    assert_eq!(p.flush(), 0, "bad input caused a transmit");
    let after = p.side(who).info();
    assert_eq!(after.endpoint, info.endpoint);
    assert_eq!(after.rx_bytes, info.rx_bytes);
    assert_eq!(after.tx_bytes, info.tx_bytes);
    assert_eq!(after.last_handshake, info.last_handshake);
}

#[test]
fn every_single_bit_flip_of_every_message_is_dropped_and_counted() {
    let Captured { mut p, messages } = captured();
    let base = p.a.dev.stats().rx_dropped() + p.b.dev.stats().rx_dropped();
    assert_eq!(base, 0);
    let received_before = p.a.received.len() + p.b.received.len();
    let mut total = 0;
    for (who, msg) in &messages {
        for bit in 0..msg.len() * 8 {
            let mut m = msg.clone();
            m[bit / 8] ^= 1 << (bit % 8);
            feed_bad(&mut p, *who, m);
            total += 1;
        }
        // The genuine message itself is a replay by now.
        feed_bad(&mut p, *who, msg.clone());
        // Truncations and extensions.
        for len in [0, 1, 3, 4, 31, 32, msg.len() - 1] {
            feed_bad(&mut p, *who, msg[..len.min(msg.len())].to_vec());
        }
        let mut longer = msg.clone();
        longer.push(0);
        feed_bad(&mut p, *who, longer);
        // Reserved bytes set.
        for i in 1..4 {
            let mut m = msg.clone();
            m[i] = 0x80;
            feed_bad(&mut p, *who, m);
        }
    }
    assert!(total > 3000);
    let fed = (p.a.received.len() + p.b.received.len() - received_before) as u64;
    let dropped = p.a.dev.stats().rx_dropped() + p.b.dev.stats().rx_dropped();
    assert_eq!(
        dropped, fed,
        "every rejected datagram is counted exactly once"
    );
    assert_data_flows(&mut p);
    assert_eq!(p.a.info().endpoint, Some(Endpoint::Udp(b_addr())));
    assert_eq!(p.b.info().endpoint, Some(Endpoint::Udp(a_addr())));
}

fn mutation() -> impl Strategy<Value = (usize, Vec<(usize, u8)>, Option<usize>)> {
    (
        0usize..8,
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        proptest::option::of(any::<usize>()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_datagrams_never_panic_nor_change_state(
        raw in proptest::collection::vec(
            (0u8..6, proptest::collection::vec(any::<u8>(), 0..200)), 0..8),
        mutations in proptest::collection::vec(mutation(), 0..8),
    ) {
        let Captured { mut p, messages } = captured();
        for (ty, mut bytes) in raw {
            if let Some(b) = bytes.first_mut() {
                *b = ty;
            }
            let who = if ty % 2 == 0 { Who::A } else { Who::B };
            feed_bad(&mut p, who, bytes);
        }
        for (which, edits, truncate) in mutations {
            let (who, msg) = &messages[which % messages.len()];
            let mut m = msg.clone();
            for (at, xor) in edits {
                let i = at % m.len();
                m[i] ^= xor;
            }
            if let Some(t) = truncate {
                m.truncate(t % (m.len() + 1));
            }
            feed_bad(&mut p, *who, m);
        }
        assert_data_flows(&mut p);
    }
}

// ---------------------------------------------------------------------------------------------
// An impaired network
// ---------------------------------------------------------------------------------------------

#[test]
fn lossy_duplicating_reordering_corrupting_network() {
    let mut p = Pair::new();
    let bad = Link {
        blocked: false,
        loss_ppm: 100_000,
        dup_ppm: 50_000,
        reorder_ppm: 200_000,
        corrupt_ppm: 20_000,
    };
    p.a_to_b = bad;
    p.b_to_a = bad;
    let mut sent = [Vec::new(), Vec::new()];
    for step in 0..3000u32 {
        p.advance(ms(100));
        for (i, who) in [Who::A, Who::B].into_iter().enumerate() {
            let pkt = p.packet(who, step);
            p.send(who, &pkt);
            sent[i].push(pkt);
        }
    }
    p.advance(secs(1));
    for (i, who) in [Who::B, Who::A].into_iter().enumerate() {
        let delivered = &p.side(who).delivered;
        let seqs: BTreeSet<u32> = delivered.iter().map(|d| seq_of(d)).collect();
        assert_eq!(seqs.len(), delivered.len(), "a packet was delivered twice");
        for d in delivered {
            assert_eq!(
                d,
                &sent[i][seq_of(d) as usize],
                "corrupted packet delivered"
            );
        }
        assert!(
            delivered.len() * 10 > sent[i].len() * 7,
            "{who:?} got only {} of {}",
            delivered.len(),
            sent[i].len()
        );
        let stats = p.side(who).dev.stats();
        assert!(
            stats.rx_replay > 0,
            "duplicates were not refused as replays"
        );
        assert!(stats.rx_dropped() > 0);
    }
    // 300 s of traffic: the initiator rekeyed at least twice.
    assert!(p.a.dev.stats().tx_initiations + p.b.dev.stats().tx_initiations >= 3);
}

// ---------------------------------------------------------------------------------------------
// Reconfiguration
// ---------------------------------------------------------------------------------------------

#[test]
fn new_private_key_invalidates_sessions_and_handshakes_at_once() {
    let mut p = Pair::established();
    p.advance(secs(1));
    let pkt = p.packet(Who::B, 1);
    let old = p.seal(Who::B, &pkt);
    let new_key = PrivateKey::from_bytes([0x33; 32]);
    p.a.dev.set_private_key(Some(new_key.clone()));
    assert_eq!(p.a.dev.public_key(), Some(new_key.public_key()));
    assert_eq!(
        p.inject(Who::A, b_addr(), old),
        Decapsulated::Dropped(RxDrop::UnknownIndex),
        "the old session survived the key change"
    );
    // The next packet starts a handshake with the new key right away (the kernel and
    // wireguard-go reset the initiation rate limit when they expire the sessions).
    let pkt = p.packet(Who::A, 2);
    assert_eq!(p.send(Who::A, &pkt), Encapsulated::Staged(p.a.peer));
    assert_eq!(p.a.dev.stats().tx_initiations, 2);
    p.drive();
    assert_eq!(
        p.b.dev.stats().rx_unknown_peer,
        1,
        "B does not know the new key"
    );
    // B learns A's new key: the retransmission succeeds.
    let old_peer = p.b.peer;
    p.b.dev.remove_peer(old_peer);
    let id = p.b.dev.add_peer(new_key.public_key());
    p.b.dev.set_endpoint(id, Some(Endpoint::Udp(a_addr())));
    p.b.dev.add_allowed_ip(id, IpAddr::V4(A_V4), 32).unwrap();
    p.b.dev.add_allowed_ip(id, IpAddr::V6(A_V6), 128).unwrap();
    p.b.peer = id;
    p.advance(REKEY_TIMEOUT + ms(REKEY_TIMEOUT_JITTER_MAX_MS));
    assert_eq!(p.b.delivered.last(), Some(&pkt));
    assert_data_flows(&mut p);
}

#[test]
fn removing_a_peer_frees_its_indices() {
    let mut p = Pair::established();
    p.advance(secs(1));
    let pkt = p.packet(Who::B, 1);
    let to_a = p.seal(Who::B, &pkt);
    let b_pub = p.b.public;
    let old = p.a.peer;
    p.a.dev.remove_peer(old);
    assert!(p.a.dev.peer_info(old).is_none());
    assert_eq!(p.a.dev.route(IpAddr::V4(B_V4)), None);
    assert_eq!(
        p.inject(Who::A, b_addr(), to_a.clone()),
        Decapsulated::Dropped(RxDrop::UnknownIndex)
    );
    let pkt = p.packet(Who::A, 2);
    assert_eq!(p.send(Who::A, &pkt), Encapsulated::Dropped(TxDrop::NoRoute));
    // A pending handshake's index is freed too.
    let id = p.a.dev.add_peer(b_pub);
    assert_ne!(id, old);
    p.a.dev.set_endpoint(id, Some(Endpoint::Udp(b_addr())));
    p.a.dev.add_allowed_ip(id, IpAddr::V4(B_V4), 32).unwrap();
    p.a.dev.add_allowed_ip(id, IpAddr::V6(B_V6), 128).unwrap();
    p.a.peer = id;
    p.a_to_b.blocked = true;
    p.b_to_a.blocked = true;
    p.send(Who::A, &pkt);
    p.drive();
    let pending =
        p.a.sent
            .iter()
            .rfind(|s| s.is_initiation())
            .unwrap()
            .clone();
    // B answers it (delivered by hand), but A removes the peer before the response arrives.
    assert_eq!(
        p.inject(Who::B, a_addr(), pending.payload),
        Decapsulated::Handshake
    );
    assert!(p.timeout(Who::B));
    let response = p.b.dev.poll_transmit().unwrap().payload;
    p.a.dev.remove_peer(id);
    p.inject(Who::A, b_addr(), response);
    p.drive();
    assert_eq!(p.a.dev.stats().rx_unknown_index, 2);
    assert_eq!(p.a.dev.stats().rx_responses, 1);
    // The old session B still holds is useless to A as well.
    assert_eq!(
        p.inject(Who::A, b_addr(), to_a),
        Decapsulated::Dropped(RxDrop::UnknownIndex)
    );
}

// ---------------------------------------------------------------------------------------------
// More protocol rules
// ---------------------------------------------------------------------------------------------

#[test]
fn responder_learns_its_endpoint_from_the_initiation() {
    let mut p = Pair::new();
    let bp = p.b.peer;
    p.b.dev.set_endpoint(bp, None);
    let pkt = p.packet(Who::B, 1);
    assert_eq!(
        p.send(Who::B, &pkt),
        Encapsulated::Dropped(TxDrop::NoEndpoint)
    );
    assert_eq!(p.b.dev.stats().tx_no_endpoint, 1);
    let first = p.packet(Who::A, 2);
    p.send(Who::A, &first);
    p.drive();
    assert_eq!(p.b.delivered, vec![first]);
    assert_eq!(p.b.info().endpoint, Some(Endpoint::Udp(a_addr())));
    assert!(
        matches!(p.send(Who::B, &pkt), Encapsulated::Send { endpoint, .. } if endpoint == Endpoint::Udp(a_addr()))
    );
    p.drive();
    assert_eq!(p.a.delivered, vec![pkt]);
}

#[test]
fn initiator_rekeys_when_receiving_on_a_session_near_expiry() {
    // REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT: the initiator that only receives
    // must still renew the session before the responder can no longer send.
    let mut p = Pair::established();
    p.advance_to(secs(164));
    send_n(&mut p, Who::B, 1, 1);
    p.drive();
    assert_eq!(p.a.initiations_sent(), vec![Duration::ZERO]);
    p.advance_to(secs(166));
    send_n(&mut p, Who::B, 2, 1);
    p.drive();
    assert_eq!(p.a.initiations_sent(), vec![Duration::ZERO, secs(166)]);
    assert_eq!(p.a.dev.stats().rx_responses, 2);
    p.advance_to(secs(167));
    send_n(&mut p, Who::B, 3, 2);
    p.advance_to(secs(200));
    assert_eq!(
        p.a.initiations_sent().len(),
        2,
        "one rekey, not one per packet"
    );
    assert_eq!(p.a.delivered.len(), 4);
    assert!(p.a.drops.is_empty());
    // B sends well past the first session's REJECT_AFTER_TIME without a hiccup.
    send_n(&mut p, Who::B, 5, 1);
    p.drive();
    assert_eq!(p.a.delivered.len(), 5);
}

#[test]
fn cryptokey_routing_on_receive() {
    let mut p = Pair::established();
    // B claims a source that is not in its allowed IPs: A refuses it.
    let spoofed = ipv4(std::net::Ipv4Addr::new(10, 0, 0, 99), A_V4, 1, 30);
    assert!(matches!(
        p.send(Who::B, &spoofed),
        Encapsulated::Send { .. }
    ));
    p.drive();
    assert_eq!(p.a.drops, vec![RxDrop::SourceNotAllowed]);
    assert_eq!(p.a.dev.stats().rx_source_not_allowed, 1);
    // An IP header that claims more bytes than were sent.
    let mut long = ipv4(B_V4, A_V4, 2, 30);
    long[2..4].copy_from_slice(&1000u16.to_be_bytes());
    assert!(matches!(p.send(Who::B, &long), Encapsulated::Send { .. }));
    p.drive();
    assert_eq!(p.a.dev.stats().rx_bad_inner_packet, 1);
    assert!(p.a.delivered.is_empty());
    // Neither is data that needs a keepalive, nor data that counts as received.
    p.advance(secs(30));
    assert!(p.a.keepalives_sent().is_empty());
    // What the sender refuses.
    assert_eq!(
        p.send(Who::B, &[0x50; 40]),
        Encapsulated::Dropped(TxDrop::Malformed)
    );
    let nowhere = ipv4(B_V4, std::net::Ipv4Addr::new(10, 9, 9, 9), 3, 30);
    assert_eq!(
        p.send(Who::B, &nowhere),
        Encapsulated::Dropped(TxDrop::NoRoute)
    );
    assert_eq!(
        (p.b.dev.stats().tx_malformed, p.b.dev.stats().tx_no_route),
        (1, 1)
    );
    assert_data_flows(&mut p);
}

#[test]
fn transport_messages_are_padded_to_sixteen() {
    let mut p = Pair::established();
    for (payload, expect) in [(4usize, 32usize), (12, 32), (13, 48), (100, 128)] {
        let pkt = ipv4(A_V4, B_V4, 1, payload);
        let m = p.seal(Who::A, &pkt);
        assert_eq!(m.len(), 16 + expect + 16, "{} bytes of IP", pkt.len());
        assert!(is_packet(&p.inject(Who::B, a_addr(), m)));
        assert_eq!(p.b.delivered.last(), Some(&pkt), "padding removed");
    }
}

#[test]
fn persistent_keepalive_on_a_fresh_peer_starts_the_handshake() {
    let mut p = Pair::new();
    let now = p.now();
    let peer = p.a.peer;
    p.a.dev.set_persistent_keepalive(peer, 25, now);
    p.advance(secs(60));
    assert_eq!(p.a.initiations_sent(), vec![Duration::ZERO]);
    assert_eq!(
        p.a.keepalives_sent(),
        vec![Duration::ZERO, secs(25), secs(50)]
    );
    assert_eq!(p.b.keepalives_rx.len(), 3);
    assert!(p.b.keepalives_sent().is_empty());
}

#[test]
fn initiations_faster_than_fifty_per_second_are_refused() {
    let mut p = Pair::established();
    // A second device with A's key and a clock one second ahead: its initiations are newer
    // than A's, so only the flood rule can refuse them.
    let mut a2 = weft_wg::Device::new([0x5a; 32], p.base, UNIX_BASE + secs(1));
    a2.set_private_key(Some(PrivateKey::from_bytes(A_KEY)));
    let id = a2.add_peer(p.b.public);
    a2.set_endpoint(id, Some(Endpoint::Udp(b_addr())));
    a2.initiate_handshake(id, p.now());
    let init = a2.poll_transmit().unwrap().payload;

    p.advance(ms(10));
    assert_eq!(
        p.inject(Who::B, a_addr(), init.clone()),
        Decapsulated::Handshake
    );
    assert!(p.timeout(Who::B));
    assert_eq!(p.b.dev.stats().rx_initiation_flood, 1);
    assert_eq!(p.flush(), 0);
    // The refused initiation left no trace: the same message is welcome 20 ms later.
    p.advance(ms(20));
    p.inject(Who::B, a_addr(), init);
    assert!(p.timeout(Who::B));
    assert_eq!(p.b.dev.stats().rx_initiations, 2);
}

#[test]
fn setting_the_same_private_key_again_changes_nothing() {
    let mut p = Pair::established();
    p.a.dev.set_private_key(Some(PrivateKey::from_bytes(A_KEY)));
    let pkt = p.packet(Who::A, 1);
    assert!(matches!(p.send(Who::A, &pkt), Encapsulated::Send { .. }));
    p.drive();
    assert_eq!(p.b.delivered, vec![pkt]);
    assert_data_flows(&mut p);
    assert_eq!(p.a.dev.stats().tx_initiations, 1);
}

#[test]
fn soak_with_outages_over_many_seeds() {
    for seed in 1..=12u8 {
        let mut p = Pair::with_seeds([seed; 32], [seed.wrapping_mul(7); 32]);
        p.rng = XorShift::new(u64::from(seed) * 0x9e37_79b9);
        let bad = Link {
            blocked: false,
            loss_ppm: 150_000,
            dup_ppm: 30_000,
            reorder_ppm: 300_000,
            corrupt_ppm: 10_000,
        };
        p.a_to_b = bad;
        p.b_to_a = bad;
        let mut seq = 0;
        for half_sec in 0..1400u32 {
            let t = half_sec / 2;
            // A one-way outage of 25 s every 100 s, alternating direction, and a total one
            // longer than REKEY_ATTEMPT_TIME in the middle.
            p.a_to_b.blocked = (t % 200) < 25 || (300..400).contains(&t);
            p.b_to_a.blocked = (t % 200 >= 100 && t % 200 < 125) || (300..400).contains(&t);
            p.advance(ms(500));
            for who in [Who::A, Who::B] {
                if p.rng.chance(600_000) {
                    let pkt = p.packet(who, seq);
                    seq += 1;
                    p.send(who, &pkt);
                }
            }
        }
        for side in [&p.a, &p.b] {
            let seqs: BTreeSet<u32> = side.delivered.iter().map(|d| seq_of(d)).collect();
            assert_eq!(seqs.len(), side.delivered.len(), "seed {seed}: duplicate");
        }
        // At most one initiation per REKEY_TIMEOUT per side, however bad the network.
        for side in [&p.a, &p.b] {
            let times = side.initiations_sent();
            assert!(
                times.windows(2).all(|w| w[1] - w[0] >= REKEY_TIMEOUT),
                "seed {seed}: initiations closer than REKEY_TIMEOUT"
            );
        }
        p.a_to_b = Link::default();
        p.b_to_a = Link::default();
        p.advance(secs(1));
        assert_data_flows(&mut p);
        assert!(
            p.a.delivered.len() > 100 && p.b.delivered.len() > 100,
            "seed {seed}: {} / {}",
            p.a.delivered.len(),
            p.b.delivered.len()
        );
    }
}
