//! Endpoint discovery: which addresses can a peer reach this node at, and what kind of NAT is in
//! the way.
//!
//! A node's endpoints are its local interface addresses (with the shared socket's port) and the
//! addresses its NAT maps that socket to, as STUN servers see it (`tailscale-protocol.md` §8).
//! Asking several servers also tells the NAT's mapping behaviour: one mapped address for every
//! destination is an endpoint-independent ("easy") NAT whose mapping a peer can reach; different
//! addresses per destination is an endpoint-dependent ("hard") NAT, where only the birthday
//! probe ([`crate::birthday`]) or the relay gets through.
//!
//! [`Discovery`] runs rounds: a binding request to every server (from the shared socket, so the
//! mapping is the one WireGuard uses), retransmitted a few times, and a report when every server
//! answered or the round timed out. A new round starts before the report goes stale (27 s,
//! `endpointsFreshEnoughDuration`), which also keeps the NAT mapping alive. The STUN codec is
//! `weft_derp::stun`'s, the same one the relay answers with.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use weft_derp::stun::{self, TxId};

/// STUN-derived endpoints are trusted this long (`endpointsFreshEnoughDuration`).
pub const ENDPOINTS_FRESH: Duration = Duration::from_secs(27);
/// A new round starts this long after the last one began.
pub const ROUND_INTERVAL: Duration = Duration::from_secs(20);
/// A round ends this long after it began, answered or not.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(3);
/// Gap between retransmissions of one request.
pub const RETRANSMIT: Duration = Duration::from_millis(500);
/// Requests sent per server per round.
pub const MAX_ATTEMPTS: u8 = 3;
/// Servers asked per round (the rest of a longer list is ignored).
pub const MAX_SERVERS: usize = 8;

/// How the NAT maps the node's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatMapping {
    /// Fewer than two servers answered.
    Unknown,
    /// The same public address for every destination: peers can reach the mapping.
    EndpointIndependent,
    /// A different public address per destination: the mapping is unpredictable.
    EndpointDependent,
}

/// How an endpoint was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EndpointKind {
    /// A local interface address.
    Local,
    /// The address a STUN server saw.
    Stun,
}

/// The result of a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// When the round began.
    pub at: Instant,
    /// Per answering server: the mapped address and the round-trip time.
    pub mapped: Vec<(SocketAddr, SocketAddr, Duration)>,
    /// The NAT's mapping behaviour.
    pub nat: NatMapping,
}

#[derive(Debug, Clone)]
struct Probe {
    server: SocketAddr,
    tx: TxId,
    first_sent: Option<Instant>,
    attempts: u8,
    next_send: Instant,
    answer: Option<(SocketAddr, Duration)>,
}

#[derive(Debug, Clone)]
struct Round {
    started: Instant,
    probes: Vec<Probe>,
}

/// The STUN endpoint-discovery state machine.
#[derive(Debug)]
pub struct Discovery {
    servers: Vec<SocketAddr>,
    local: Vec<SocketAddr>,
    rng: ChaCha20Rng,
    round: Option<Round>,
    next_round: Option<Instant>,
    report: Option<Report>,
    generation: u64,
    unmatched: u64,
    /// The current report's expiry has been announced (generation bumped).
    stale_announced: bool,
}

impl Discovery {
    /// Discovery against `servers` (STUN addresses of the DERP map's nodes).
    pub fn new(servers: Vec<SocketAddr>, seed: [u8; 32]) -> Self {
        let mut servers = servers;
        servers.sort();
        servers.dedup();
        servers.truncate(MAX_SERVERS);
        Self {
            servers,
            local: Vec::new(),
            rng: ChaCha20Rng::from_seed(seed),
            round: None,
            next_round: None,
            report: None,
            generation: 0,
            unmatched: 0,
            stale_announced: false,
        }
    }

    /// The node's local addresses with the shared socket's port (the shell lists interfaces).
    pub fn set_local(&mut self, mut addrs: Vec<SocketAddr>) {
        addrs.sort();
        addrs.dedup();
        if addrs != self.local {
            self.local = addrs;
            self.generation += 1;
        }
    }

    /// Starts a round now unless one is running.
    pub fn start(&mut self, now: Instant) {
        if self.round.is_some() || self.servers.is_empty() {
            return;
        }
        let probes = self
            .servers
            .iter()
            .map(|&server| {
                let mut id = [0u8; 12];
                self.rng.fill_bytes(&mut id);
                Probe {
                    server,
                    tx: TxId(id),
                    first_sent: None,
                    attempts: 0,
                    next_send: now,
                    answer: None,
                }
            })
            .collect();
        self.round = Some(Round {
            started: now,
            probes,
        });
        self.next_round = Some(now + ROUND_INTERVAL);
    }

    /// The next request to send now: the server and the 40-byte binding request.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, [u8; stun::REQUEST_LEN])> {
        let round = self.round.as_mut()?;
        let probe = round
            .probes
            .iter_mut()
            .find(|p| p.answer.is_none() && p.attempts < MAX_ATTEMPTS && p.next_send <= now)?;
        probe.attempts += 1;
        probe.first_sent.get_or_insert(now);
        probe.next_send = now + RETRANSMIT;
        Some((probe.server, stun::binding_request(probe.tx)))
    }

    /// A STUN packet arrived from `from`. Returns true when it answered one of this round's
    /// requests (anything else is counted and ignored).
    pub fn handle_stun(&mut self, from: SocketAddr, packet: &[u8], now: Instant) -> bool {
        let Ok((tx, mapped)) = stun::parse_response(packet) else {
            self.unmatched += 1;
            return false;
        };
        let Some(round) = self.round.as_mut() else {
            self.unmatched += 1;
            return false;
        };
        let Some(probe) = round
            .probes
            .iter_mut()
            .find(|p| p.tx == tx && p.server == from && p.answer.is_none())
        else {
            self.unmatched += 1;
            return false;
        };
        let rtt = probe
            .first_sent
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        probe.answer = Some((mapped, rtt));
        if round.probes.iter().all(|p| p.answer.is_some()) {
            self.finish();
        } else {
            self.publish_partial();
        }
        true
    }

    /// When [`Self::handle_timeout`] or [`Self::poll_transmit`] has work next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.round {
            Some(r) => {
                let resend = r
                    .probes
                    .iter()
                    .filter(|p| p.answer.is_none() && p.attempts < MAX_ATTEMPTS)
                    .map(|p| p.next_send)
                    .min();
                let end = r.started + ROUND_TIMEOUT;
                Some(resend.map_or(end, |t| t.min(end)))
            }
            None => {
                // Wake when the report goes stale too, to tell peers its addresses are gone.
                let stale = self
                    .report
                    .as_ref()
                    .filter(|r| !self.stale_announced && !r.mapped.is_empty())
                    .map(|r| r.at + ENDPOINTS_FRESH);
                match (self.next_round, stale) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    /// Ends a timed-out round and starts the next one when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired = self.report.as_ref().is_some_and(|r| {
            !r.mapped.is_empty() && now.saturating_duration_since(r.at) >= ENDPOINTS_FRESH
        });
        if expired && !self.stale_announced {
            self.stale_announced = true;
            self.generation += 1;
        }
        if let Some(r) = &self.round {
            if now >= r.started + ROUND_TIMEOUT {
                self.finish();
            }
        }
        if self.round.is_none() && self.next_round.is_some_and(|t| now >= t) {
            self.start(now);
        }
    }

    /// The last finished round's report.
    pub fn report(&self) -> Option<&Report> {
        self.report.as_ref()
    }

    /// Changes whenever [`Self::endpoints`] may have changed (tell peers and control again).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// STUN packets that answered nothing (late, forged, foreign).
    pub fn unmatched(&self) -> u64 {
        self.unmatched
    }

    /// The node's endpoints now: STUN-mapped addresses from a fresh report, then local ones.
    pub fn endpoints(&self, now: Instant) -> Vec<(SocketAddr, EndpointKind)> {
        let mut out: Vec<(SocketAddr, EndpointKind)> = Vec::new();
        if let Some(r) = &self.report {
            if now.saturating_duration_since(r.at) < ENDPOINTS_FRESH {
                for &(_, mapped, _) in &r.mapped {
                    if !out.iter().any(|(a, _)| *a == mapped) {
                        out.push((mapped, EndpointKind::Stun));
                    }
                }
            }
        }
        for &l in &self.local {
            if !out.iter().any(|(a, _)| *a == l) {
                out.push((l, EndpointKind::Local));
            }
        }
        out
    }

    /// An address a round has just learnt is offered at once rather than when the slowest
    /// server answers (peers can start punching a round-trip earlier); the round's final
    /// report still replaces it.
    fn publish_partial(&mut self) {
        let Some(round) = &self.round else {
            return;
        };
        let mut partial = round_report(round);
        if partial.nat == NatMapping::Unknown {
            // One answer tells no NAT type; keep what the last full round said.
            if let Some(old) = &self.report {
                partial.nat = old.nat;
            }
        }
        let new_addr = self.report.as_ref().is_none_or(|old| {
            let known = addrs(old);
            addrs(&partial).iter().any(|a| !known.contains(a))
        });
        if new_addr {
            self.generation += 1;
            self.report = Some(partial);
            self.stale_announced = false;
        }
    }

    fn finish(&mut self) {
        let Some(round) = self.round.take() else {
            return;
        };
        let report = round_report(&round);
        // A round nobody answered does not withdraw addresses that are still fresh: a few lost
        // datagrams must not make peers forget how to reach this node (upstream keeps them too).
        let keep_old = report.mapped.is_empty()
            && self.report.as_ref().is_some_and(|old| {
                !old.mapped.is_empty()
                    && round.started.saturating_duration_since(old.at) < ENDPOINTS_FRESH
            });
        if keep_old {
            return;
        }
        let changed = self
            .report
            .as_ref()
            .is_none_or(|old| addrs(old) != addrs(&report) || old.nat != report.nat);
        if changed {
            self.generation += 1;
        }
        self.report = Some(report);
        self.stale_announced = false;
    }
}

/// The report of a round so far.
fn round_report(round: &Round) -> Report {
    let mapped: Vec<(SocketAddr, SocketAddr, Duration)> = round
        .probes
        .iter()
        .filter_map(|p| p.answer.map(|(m, rtt)| (p.server, m, rtt)))
        .collect();
    let nat = classify(&mapped);
    Report {
        at: round.started,
        mapped,
        nat,
    }
}

fn addrs(r: &Report) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = r.mapped.iter().map(|m| m.1).collect();
    v.sort();
    v.dedup();
    v
}

/// Endpoint-independent when every server saw the same address, dependent when any two saw
/// different ones; unknown from fewer than two answers.
fn classify(mapped: &[(SocketAddr, SocketAddr, Duration)]) -> NatMapping {
    let Some(first) = mapped.first() else {
        return NatMapping::Unknown;
    };
    if mapped.len() < 2 {
        return NatMapping::Unknown;
    }
    if mapped.iter().all(|m| m.1 == first.1) {
        NatMapping::EndpointIndependent
    } else {
        NatMapping::EndpointDependent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // An arbitrary base instant; only offsets matter.
    fn t0() -> Instant {
        Instant::now()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Answers every request as a STUN server behind `nat` would.
    fn answer_all(d: &mut Discovery, now: Instant, nat: impl Fn(SocketAddr) -> SocketAddr) {
        while let Some((server, req)) = d.poll_transmit(now) {
            let tx = stun::parse_binding_request(&req).unwrap();
            let resp = stun::binding_response(tx, nat(server));
            assert!(d.handle_stun(server, resp.as_bytes(), now + Duration::from_millis(3)));
        }
    }

    #[test]
    fn easy_nat_is_one_mapping_for_every_server() {
        let now = t0();
        let s1 = sa("192.0.2.1:3478");
        let s2 = sa("192.0.2.2:3478");
        let mut d = Discovery::new(vec![s1, s2], [1; 32]);
        d.set_local(vec![sa("10.0.0.2:41641")]);
        d.start(now);
        answer_all(&mut d, now, |_| sa("198.51.100.7:41641"));
        let r = d.report().unwrap();
        assert_eq!(r.nat, NatMapping::EndpointIndependent);
        assert_eq!(r.mapped.len(), 2);
        assert_eq!(r.mapped[0].2, Duration::from_millis(3));
        assert_eq!(
            d.endpoints(now),
            vec![
                (sa("198.51.100.7:41641"), EndpointKind::Stun),
                (sa("10.0.0.2:41641"), EndpointKind::Local)
            ]
        );
        // Stale after 27 s: only local addresses are offered.
        assert_eq!(d.endpoints(now + ENDPOINTS_FRESH).len(), 1);
    }

    #[test]
    fn hard_nat_maps_per_destination() {
        let now = t0();
        let mut d = Discovery::new(vec![sa("192.0.2.1:3478"), sa("192.0.2.2:3478")], [2; 32]);
        d.start(now);
        // A fully-random NAT: the port depends on the destination.
        answer_all(&mut d, now, |s| {
            SocketAddr::from((
                [198, 51, 100, 7],
                30000 + u16::from(s.ip() == sa("192.0.2.2:0").ip()),
            ))
        });
        assert_eq!(d.report().unwrap().nat, NatMapping::EndpointDependent);
    }

    #[test]
    fn lost_requests_are_retransmitted_then_the_round_times_out() {
        let now = t0();
        let s1 = sa("192.0.2.1:3478");
        let mut d = Discovery::new(vec![s1], [3; 32]);
        d.start(now);
        let mut sent = 0;
        let mut t = now;
        for _ in 0..50 {
            while d.poll_transmit(t).is_some() {
                sent += 1;
            }
            let Some(next) = d.poll_timeout() else { break };
            if next > now + ROUND_TIMEOUT {
                break;
            }
            t = next;
            d.handle_timeout(t);
        }
        assert_eq!(sent, usize::from(MAX_ATTEMPTS));
        assert_eq!(d.report().unwrap().nat, NatMapping::Unknown);
        assert!(d.report().unwrap().mapped.is_empty());
        // The next round begins on schedule.
        d.handle_timeout(now + ROUND_INTERVAL);
        assert!(d.poll_transmit(now + ROUND_INTERVAL).is_some());
    }

    #[test]
    fn forged_and_foreign_answers_are_ignored() {
        let now = t0();
        let s1 = sa("192.0.2.1:3478");
        let mut d = Discovery::new(vec![s1], [4; 32]);
        d.start(now);
        let (_, req) = d.poll_transmit(now).unwrap();
        let tx = stun::parse_binding_request(&req).unwrap();
        let wrong_tx = stun::binding_response(TxId([0; 12]), sa("203.0.113.1:1"));
        assert!(!d.handle_stun(s1, wrong_tx.as_bytes(), now));
        let good = stun::binding_response(tx, sa("198.51.100.7:1"));
        assert!(
            !d.handle_stun(sa("203.0.113.66:3478"), good.as_bytes(), now),
            "wrong server"
        );
        assert!(!d.handle_stun(s1, b"junk", now));
        assert_eq!(d.unmatched(), 3);
        assert!(d.handle_stun(s1, good.as_bytes(), now));
        assert!(!d.handle_stun(s1, good.as_bytes(), now), "duplicate");
    }

    #[test]
    fn the_first_answer_is_offered_before_the_round_ends() {
        let now = t0();
        let s1 = sa("192.0.2.1:3478");
        let s2 = sa("192.0.2.2:3478");
        let mut d = Discovery::new(vec![s1, s2], [6; 32]);
        d.start(now);
        let (a, ra) = d.poll_transmit(now).unwrap();
        let _lost = d.poll_transmit(now).unwrap();
        let g0 = d.generation();
        let tx = stun::parse_binding_request(&ra).unwrap();
        let mapped = sa("198.51.100.7:41641");
        assert!(d.handle_stun(a, stun::binding_response(tx, mapped).as_bytes(), now));
        assert!(d.generation() > g0);
        assert_eq!(d.endpoints(now), vec![(mapped, EndpointKind::Stun)]);
        assert_eq!(
            d.report().unwrap().nat,
            NatMapping::Unknown,
            "one answer tells no NAT type"
        );
        // The round goes on: the other server is asked again, and its answer completes it.
        let (b, rb) = d.poll_transmit(now + RETRANSMIT).unwrap();
        assert_eq!(b, s2);
        let tx = stun::parse_binding_request(&rb).unwrap();
        assert!(d.handle_stun(
            b,
            stun::binding_response(tx, mapped).as_bytes(),
            now + RETRANSMIT
        ));
        assert_eq!(d.report().unwrap().nat, NatMapping::EndpointIndependent);
    }

    #[test]
    fn a_failed_round_keeps_fresh_addresses_and_expiry_is_announced() {
        let now = t0();
        let s1 = sa("192.0.2.1:3478");
        let mut d = Discovery::new(vec![s1], [7; 32]);
        d.start(now);
        answer_all(&mut d, now, |_| sa("198.51.100.7:1"));
        let g = d.generation();
        // The next round is lost entirely.
        let t = now + ROUND_INTERVAL;
        d.handle_timeout(t);
        while d.poll_transmit(t + RETRANSMIT * 3).is_some() {}
        d.handle_timeout(t + ROUND_TIMEOUT);
        assert_eq!(d.endpoints(t + ROUND_TIMEOUT).len(), 1, "still offered");
        assert_eq!(d.generation(), g);
        // At 27 s the address is gone, and the generation says so.
        let wake = d.poll_timeout().unwrap();
        assert!(wake <= now + ENDPOINTS_FRESH);
        d.handle_timeout(now + ENDPOINTS_FRESH);
        assert!(d.endpoints(now + ENDPOINTS_FRESH).is_empty());
        assert!(d.generation() > g);
    }

    #[test]
    fn generation_changes_only_when_endpoints_do() {
        let now = t0();
        let mut d = Discovery::new(vec![sa("192.0.2.1:3478")], [5; 32]);
        let g0 = d.generation();
        d.start(now);
        answer_all(&mut d, now, |_| sa("198.51.100.7:1"));
        let g1 = d.generation();
        assert!(g1 > g0);
        let later = now + ROUND_INTERVAL;
        d.handle_timeout(later);
        answer_all(&mut d, later, |_| sa("198.51.100.7:1"));
        assert_eq!(d.generation(), g1, "same mapping: nothing to tell peers");
        let later2 = later + ROUND_INTERVAL;
        d.handle_timeout(later2);
        answer_all(&mut d, later2, |_| sa("198.51.100.7:2"));
        assert!(d.generation() > g1, "the NAT rebound");
    }
}
