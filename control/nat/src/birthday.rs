//! Birthday probing: a direct path through NATs that pick a new public port per destination.
//!
//! Behind an endpoint-dependent ("hard") NAT a node's public port for a peer is unknowable in
//! advance, so pings to its STUN-mapped address go nowhere. But ports are finite: if one side
//! creates `k` mappings towards the other (one per local socket) and the other sends probes to
//! `n` ports of its public address, some probe lands on a mapping with probability about
//! `1 − e^(−k·n/R)` for a NAT port range of size `R` — the birthday paradox. The same mechanism
//! covers both cases the issue names:
//! * one easy, one hard NAT: the hard side opens many sockets and pings the easy side's mapped
//!   endpoint from each ([`Plan::fan_out`]); the easy side sprays random ports of the hard side's
//!   address from its one socket ([`Plan::spray`]);
//! * two hard NATs with a small port range: both sides sweep the whole range from a few sockets
//!   each ([`Plan::sweep`]); a hit needs a pair of mappings that point at each other, and with
//!   `k` sockets per side about `k²` such pairs are expected.
//!
//! This is a separate mechanism from [`crate::path`] (upstream has no equivalent); the shell runs
//! it when both ends report endpoint-dependent mappings, and a hit becomes a candidate endpoint
//! bound to the socket that received it. [`Birthday`] only schedules probes and recognises hits;
//! the probes themselves are disco pings. Repeated rounds matter: a probe that arrives before
//! the other side's mapping exists is lost, the next round's is not.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// The most probes one plan sends per round.
pub const MAX_PROBES_PER_ROUND: usize = 1 << 16;
/// The most local sockets a plan uses.
pub const MAX_SOCKETS: u16 = 1024;
/// How long a plan keeps listening after its last probe, beyond one round interval: the
/// peer's plan may end later than ours (the easy side's spray outlasts the hard side's
/// fan-out by about a second, and the two sides never start in the same instant), and its
/// last probes still aim at our sockets' mappings.
pub const LINGER: Duration = Duration::from_secs(5);

/// What to send: from which local sockets to which ports of the peer's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The peer's public IP.
    pub peer_ip: IpAddr,
    /// Local sockets to send from (indices `0..sockets`; the shell opens them).
    pub sockets: u16,
    /// Destination ports, probed from every socket.
    pub ports: Vec<u16>,
    /// Times the whole plan is repeated.
    pub rounds: u8,
    /// Gap between round starts.
    pub round_interval: Duration,
    /// Probes per second (pacing, so a burst does not overflow a queue on the way).
    pub rate: u32,
}

impl Plan {
    /// The hard side of an easy/hard pair: `sockets` mappings, all towards the easy side's
    /// mapped endpoint.
    pub fn fan_out(peer: SocketAddr, sockets: u16) -> Self {
        Self {
            peer_ip: peer.ip(),
            sockets: sockets.clamp(1, MAX_SOCKETS),
            ports: vec![peer.port()],
            rounds: 5,
            round_interval: Duration::from_secs(1),
            rate: 2000,
        }
    }

    /// The easy side of an easy/hard pair: `count` distinct random ports in `lo..=hi` of the
    /// hard side's address, from the one shared socket.
    pub fn spray(peer_ip: IpAddr, lo: u16, hi: u16, count: usize, seed: [u8; 32]) -> Self {
        let (lo, hi) = (lo.min(hi), lo.max(hi));
        let span = usize::from(hi - lo) + 1;
        let count = count.min(span).min(MAX_PROBES_PER_ROUND);
        let mut rng = ChaCha20Rng::from_seed(seed);
        // A partial Fisher–Yates shuffle of the range: distinct ports, uniformly chosen.
        let mut all: Vec<u16> = (lo..=hi).collect();
        for i in 0..count {
            let j = i + (rng.next_u64() % (span - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(count);
        Self {
            peer_ip,
            sockets: 1,
            ports: all,
            rounds: 4,
            round_interval: Duration::from_millis(1500),
            rate: 2000,
        }
    }

    /// Both sides hard with a small range: every port of `lo..=hi` from `sockets` sockets.
    pub fn sweep(peer_ip: IpAddr, lo: u16, hi: u16, sockets: u16) -> Self {
        let (lo, hi) = (lo.min(hi), lo.max(hi));
        Self {
            peer_ip,
            sockets: sockets.clamp(1, MAX_SOCKETS),
            ports: (lo..=hi).take(MAX_PROBES_PER_ROUND).collect(),
            rounds: 4,
            round_interval: Duration::from_secs(1),
            rate: 2000,
        }
    }

    fn probes_per_round(&self) -> usize {
        (usize::from(self.sockets) * self.ports.len()).min(MAX_PROBES_PER_ROUND)
    }
}

/// One probe to send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The local socket index.
    pub socket: u16,
    /// Where.
    pub to: SocketAddr,
}

/// The path a hit found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The local socket that heard the peer.
    pub socket: u16,
    /// The peer's address as seen on that socket.
    pub remote: SocketAddr,
    /// Probes sent until then.
    pub probes_sent: u64,
    /// Time from the first probe.
    pub elapsed: Duration,
}

/// The probe scheduler.
#[derive(Debug)]
pub struct Birthday {
    plan: Plan,
    started: Instant,
    /// When the current round began: its schedule, or later if the previous round overran.
    round_start: Instant,
    round: u8,
    cursor: usize,
    sent: u64,
    hit: Option<Hit>,
    /// When the last probe went out.
    finished_at: Option<Instant>,
}

impl Birthday {
    /// Starts `plan` at `now`.
    pub fn new(plan: Plan, now: Instant) -> Self {
        let mut plan = plan;
        plan.rate = plan.rate.clamp(1, 1_000_000);
        plan.round_interval = plan.round_interval.min(Duration::from_secs(3600));
        // Sockets past the per-round cap would never send: don't ask for them.
        let usable = (MAX_PROBES_PER_ROUND / plan.ports.len().max(1)).max(1);
        plan.sockets = plan
            .sockets
            .clamp(1, MAX_SOCKETS)
            .min(u16::try_from(usable).unwrap_or(MAX_SOCKETS));
        if plan.ports.is_empty() {
            // Nothing to send: finished at once (no timer that never fires).
            plan.rounds = 0;
        }
        let finished_at = (plan.rounds == 0).then_some(now);
        Self {
            plan,
            started: now,
            round_start: now,
            round: 0,
            cursor: 0,
            sent: 0,
            hit: None,
            finished_at,
        }
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The next probe due at `now`, if any (paced at the plan's rate).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Probe> {
        if self.hit.is_some() || self.finished() {
            return None;
        }
        if self.due_at().is_some_and(|t| t > now) {
            return None;
        }
        let per_round = self.plan.probes_per_round();
        let ports = self.plan.ports.len().max(1);
        let i = self.cursor;
        // Socket-major order: each socket's mappings all exist early in the round.
        let socket = u16::try_from(i / ports).unwrap_or(0);
        let port = *self.plan.ports.get(i % ports)?;
        self.cursor += 1;
        self.sent += 1;
        if self.cursor >= per_round {
            self.cursor = 0;
            self.round += 1;
            // The next round starts on schedule, or now if this one overran it: never a
            // backlog sent unpaced.
            let scheduled = self
                .plan
                .round_interval
                .checked_mul(u32::from(self.round))
                .and_then(|d| self.started.checked_add(d))
                .unwrap_or(now);
            self.round_start = scheduled.max(now);
            if self.finished() {
                self.finished_at = Some(now);
            }
        }
        Some(Probe {
            socket,
            to: SocketAddr::new(self.plan.peer_ip, port),
        })
    }

    /// When the next probe is due (`None` once finished or hit).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.hit.is_some() || self.finished() {
            None
        } else {
            self.due_at()
        }
    }

    /// A disco message from the peer's IP arrived on local socket `socket`. Returns the hit the
    /// first time, while the plan is [listening](Self::listening).
    pub fn handle_reply(&mut self, socket: u16, from: SocketAddr, now: Instant) -> Option<Hit> {
        if !self.listening(now) || from.ip() != self.plan.peer_ip || socket >= self.plan.sockets {
            return None;
        }
        let hit = Hit {
            socket,
            remote: from,
            probes_sent: self.sent,
            elapsed: now.saturating_duration_since(self.started),
        };
        self.hit = Some(hit);
        Some(hit)
    }

    /// The hit, once found.
    pub fn hit(&self) -> Option<Hit> {
        self.hit
    }

    /// True when every round was sent without a hit.
    pub fn finished(&self) -> bool {
        self.round >= self.plan.rounds
    }

    /// True while a hit can still come: no hit yet, and probes still to send or the last
    /// one sent less than a round interval plus [`LINGER`] ago. Until then the plan's
    /// sockets must stay open.
    pub fn listening(&self, now: Instant) -> bool {
        if self.hit.is_some() {
            return false;
        }
        match self.finished_at {
            None => true,
            Some(at) => now < at + self.plan.round_interval + LINGER,
        }
    }

    /// Probes sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    fn due_at(&self) -> Option<Instant> {
        let pace = Duration::from_nanos(1_000_000_000 / u64::from(self.plan.rate));
        let offset = pace.checked_mul(u32::try_from(self.cursor).ok()?)?;
        self.round_start.checked_add(offset)
    }
}

#[cfg(test)]
#[path = "birthday_tests.rs"]
mod tests;
