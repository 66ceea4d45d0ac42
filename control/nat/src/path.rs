//! Path selection for one peer: relay first, then the best direct path, kept alive while used.
//!
//! This is magicsock's per-peer endpoint logic (`tailscale-protocol.md` §7.4–7.5) as a state
//! machine over time and disco events, with no sockets and no crypto: [`PeerPath`] is told what
//! arrived (pings, pongs, call-me-maybes, outbound traffic, the clock) and answers two questions,
//! "where do I send this peer's packets now?" ([`PeerPath::route`]) and "which disco messages
//! must go out?" ([`PeerPath::poll_output`]). The node ([`crate::node`]) seals and transmits.
//!
//! The rules, in short:
//! * With no trusted direct path, packets go via DERP (and to the last known direct address as
//!   well, if any), and every candidate endpoint is pinged, with a `CallMeMaybe` via DERP so the
//!   peer pings back at once — the pings from both sides open the NATs.
//! * A pong over UDP measures a path; the better path (latency points plus bonuses for
//!   loopback, link-local, private and IPv6, with hysteresis) becomes the best one, and is
//!   trusted for 6.5 s after each pong: only then do packets go direct only.
//! * While traffic flows (an outbound packet in the last 45 s) the best path is pinged every
//!   3 s; all endpoints again when trust ran out, when there is no direct path, or every minute
//!   when the best path is slower than 5 ms. When pongs stop, trust expires and packets fall
//!   back to DERP by themselves.
//!
//! Bounded: at most [`MAX_ENDPOINTS`] candidates and [`MAX_PENDING`] unanswered pings per peer,
//! whatever peers send.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::disco::TxId;

/// Ping the best path this often while the session is active (`heartbeatInterval`).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// A direct path is used alone for this long after its last pong (`trustUDPAddrDuration`).
pub const TRUST_UDP_ADDR_DURATION: Duration = Duration::from_millis(6500);
/// Heartbeats stop after this long without outbound traffic (`sessionActiveTimeout`).
pub const SESSION_ACTIVE_TIMEOUT: Duration = Duration::from_secs(45);
/// Re-probe every endpoint this often even when a direct path works (`upgradeUDPDirectInterval`).
pub const UPGRADE_INTERVAL: Duration = Duration::from_secs(60);
/// A best path at or below this latency is not improved on (`goodEnoughLatency`).
pub const GOOD_ENOUGH_LATENCY: Duration = Duration::from_millis(5);
/// The least gap between two pings to one endpoint (`discoPingInterval`).
pub const DISCO_PING_INTERVAL: Duration = Duration::from_secs(5);
/// Without a trusted path, a ping received from an endpoint is answered with a ping of our own
/// at most this often (weft's addition; see [`PeerPath::handle_ping`]).
pub const PING_BACK_INTERVAL: Duration = Duration::from_millis(250);
/// A ping unanswered this long is forgotten (`pingTimeoutDuration`).
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Candidate endpoints kept per peer.
pub const MAX_ENDPOINTS: usize = 64;
/// Unanswered pings kept per peer.
pub const MAX_PENDING: usize = 256;

/// Where a disco message or a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    /// Directly, over UDP, to this address.
    Udp(SocketAddr),
    /// Through the peer's home DERP relay.
    Derp,
}

/// A disco message the node must seal and send for this peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A ping.
    Ping {
        /// Where.
        route: Route,
        /// Its transaction id.
        tx: TxId,
    },
    /// The answer to the peer's ping.
    Pong {
        /// Back the way the ping came.
        route: Route,
        /// The ping's id.
        tx: TxId,
        /// Where the ping came from, as seen here.
        src: SocketAddr,
    },
    /// This node's endpoints, via DERP (the node fills in the list).
    CallMeMaybe,
}

/// Where to send the peer's packets now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendTo {
    /// Directly to this address.
    pub udp: Option<SocketAddr>,
    /// Through DERP as well.
    pub derp: bool,
}

/// How a candidate endpoint became known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// From the control server's netmap.
    Control,
    /// From the peer's `CallMeMaybe`.
    CallMeMaybe,
    /// A ping arrived from it.
    Ping,
}

#[derive(Debug, Clone)]
struct Endpoint {
    source: Source,
    learned: Instant,
    last_ping: Option<Instant>,
    last_pong: Option<Instant>,
    last_ping_back: Option<Instant>,
    latency: Option<Duration>,
}

/// Counters for one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathStats {
    /// Pings queued.
    pub pings_sent: u64,
    /// Pongs that matched a ping.
    pub pongs_matched: u64,
    /// Pongs with an unknown id or from the wrong address (dropped).
    pub pongs_unmatched: u64,
    /// Times the best direct path changed.
    pub best_changes: u64,
    /// Pings that timed out.
    pub ping_timeouts: u64,
}

/// The path state of one peer.
#[derive(Debug)]
pub struct PeerPath {
    rng: ChaCha20Rng,
    via_derp: bool,
    endpoints: BTreeMap<SocketAddr, Endpoint>,
    pending: BTreeMap<TxId, (SocketAddr, Instant)>,
    best: Option<(SocketAddr, Duration)>,
    trust_until: Option<Instant>,
    last_outbound: Option<Instant>,
    last_full_ping: Option<Instant>,
    last_call_me_maybe: Option<Instant>,
    next_heartbeat: Option<Instant>,
    out: VecDeque<Output>,
    stats: PathStats,
}

impl PeerPath {
    /// A peer with no known path. `via_derp` says whether it has a home relay.
    pub fn new(seed: [u8; 32], via_derp: bool) -> Self {
        Self {
            rng: ChaCha20Rng::from_seed(seed),
            via_derp,
            endpoints: BTreeMap::new(),
            pending: BTreeMap::new(),
            best: None,
            trust_until: None,
            last_outbound: None,
            last_full_ping: None,
            last_call_me_maybe: None,
            next_heartbeat: None,
            out: VecDeque::new(),
            stats: PathStats::default(),
        }
    }

    /// Whether the peer can be reached through DERP (it has a home region).
    pub fn set_via_derp(&mut self, via_derp: bool) {
        self.via_derp = via_derp;
    }

    /// Replaces the endpoints the control server lists; learned ones stay.
    pub fn set_control_endpoints(&mut self, eps: &[SocketAddr], now: Instant) {
        self.endpoints
            .retain(|addr, e| e.source != Source::Control || eps.contains(addr));
        for &ep in eps {
            self.add_candidate(ep, Source::Control, now);
        }
    }

    /// The peer's `CallMeMaybe` (via DERP): add its endpoints and ping them all now, which opens
    /// this side's NAT towards them.
    pub fn handle_call_me_maybe(&mut self, eps: &[SocketAddr], now: Instant) {
        for &ep in eps {
            self.add_candidate(ep, Source::CallMeMaybe, now);
            if let Some(e) = self.endpoints.get_mut(&ep) {
                e.last_ping = None;
            }
        }
        for &ep in eps {
            if self.endpoints.contains_key(&ep) {
                self.ping(ep, now);
            }
        }
    }

    /// The peer pinged this node over `route`: answer it, and remember a UDP source as a
    /// candidate. Without a trusted path, ping the source back at once (at most once per
    /// [`PING_BACK_INTERVAL`]): the peer's NAT has just shown it holds a mapping towards this
    /// node, so this node's ping can now get through where an earlier one, which crossed the
    /// peer's on the way, was dropped.
    pub fn handle_ping(&mut self, route: Route, tx: TxId, src: SocketAddr, now: Instant) {
        self.out.push_back(Output::Pong { route, tx, src });
        if let Route::Udp(addr) = route {
            self.add_candidate(addr, Source::Ping, now);
            let due = self.endpoints.get(&addr).is_some_and(|e| {
                e.last_ping_back
                    .is_none_or(|t| now.saturating_duration_since(t) >= PING_BACK_INTERVAL)
            });
            if due && !self.trusted(now) {
                if let Some(e) = self.endpoints.get_mut(&addr) {
                    e.last_ping_back = Some(now);
                }
                self.ping(addr, now);
            }
        }
    }

    /// A pong arrived over UDP from `from`. Returns true when the best path changed.
    pub fn handle_pong(&mut self, tx: TxId, from: SocketAddr, now: Instant) -> bool {
        let Some(&(to, sent)) = self.pending.get(&tx) else {
            self.stats.pongs_unmatched += 1;
            return false;
        };
        if to != from {
            self.stats.pongs_unmatched += 1;
            return false;
        }
        self.pending.remove(&tx);
        self.stats.pongs_matched += 1;
        let latency = now.saturating_duration_since(sent);
        if let Some(e) = self.endpoints.get_mut(&from) {
            e.last_pong = Some(now);
            e.latency = Some(latency);
        }
        let trusted = self.trusted(now);
        let changed = match self.best {
            Some((addr, _)) if addr == from => {
                self.best = Some((from, latency));
                false
            }
            Some(best) if trusted && !better((from, latency), best) => false,
            _ => {
                self.best = Some((from, latency));
                self.stats.best_changes += 1;
                true
            }
        };
        if self.best.map(|b| b.0) == Some(from) {
            self.trust_until = Some(now + TRUST_UDP_ADDR_DURATION);
        }
        changed
    }

    /// The node is sending the peer a packet now: keep the session active and start path
    /// discovery if there is no trusted direct path.
    pub fn note_outbound(&mut self, now: Instant) {
        self.last_outbound = Some(now);
        if self.next_heartbeat.is_none() {
            self.next_heartbeat = Some(now + HEARTBEAT_INTERVAL);
        }
        if self.wants_full_ping(now) {
            self.full_ping(now);
        }
    }

    /// Where the peer's packets go now.
    pub fn route(&self, now: Instant) -> SendTo {
        let udp = self.best.map(|b| b.0);
        SendTo {
            udp,
            derp: self.via_derp && !(udp.is_some() && self.trusted(now)),
        }
    }

    /// The trusted direct path, if any.
    pub fn direct(&self, now: Instant) -> Option<SocketAddr> {
        self.best.map(|b| b.0).filter(|_| self.trusted(now))
    }

    /// The best path's last measured latency.
    pub fn latency(&self) -> Option<Duration> {
        self.best.map(|b| b.1)
    }

    /// This node's endpoints changed: tell an active peer without a trusted path at once.
    pub fn endpoints_changed(&mut self, now: Instant) {
        self.last_call_me_maybe = None;
        let active = self
            .last_outbound
            .is_some_and(|t| now.saturating_duration_since(t) < SESSION_ACTIVE_TIMEOUT);
        if active && self.via_derp && !self.trusted(now) {
            self.last_call_me_maybe = Some(now);
            self.out.push_back(Output::CallMeMaybe);
        }
    }

    /// Adds a candidate found outside disco (a birthday hit) and pings it now.
    pub fn add_and_ping(&mut self, addr: SocketAddr, now: Instant) {
        self.add_candidate(addr, Source::Ping, now);
        if self.endpoints.contains_key(&addr) {
            self.ping(addr, now);
        }
    }

    /// The next disco message to send.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Self::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self.pending.values().map(|&(_, t)| t + PING_TIMEOUT).min();
        match (self.next_heartbeat, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs timers: forgets unanswered pings and sends heartbeats.
    pub fn handle_timeout(&mut self, now: Instant) {
        let before = self.pending.len();
        self.pending.retain(|_, &mut (_, t)| now < t + PING_TIMEOUT);
        self.stats.ping_timeouts += (before - self.pending.len()) as u64;
        let Some(at) = self.next_heartbeat else {
            return;
        };
        if now < at {
            return;
        }
        let active = self
            .last_outbound
            .is_some_and(|t| now.saturating_duration_since(t) < SESSION_ACTIVE_TIMEOUT);
        if !active {
            self.next_heartbeat = None;
            return;
        }
        if let Some((best, _)) = self.best {
            self.ping(best, now);
        }
        if self.wants_full_ping(now) {
            self.full_ping(now);
        }
        self.next_heartbeat = Some(now + HEARTBEAT_INTERVAL);
    }

    /// Counters.
    pub fn stats(&self) -> PathStats {
        self.stats
    }

    /// The candidate endpoints, in address order.
    pub fn candidates(&self) -> impl Iterator<Item = (SocketAddr, Source)> + '_ {
        self.endpoints.iter().map(|(a, e)| (*a, e.source))
    }

    fn trusted(&self, now: Instant) -> bool {
        self.trust_until.is_some_and(|t| now < t)
    }

    fn wants_full_ping(&self, now: Instant) -> bool {
        let Some((_, latency)) = self.best else {
            return true;
        };
        if !self.trusted(now) {
            return true;
        }
        let stale = self
            .last_full_ping
            .is_none_or(|t| now.saturating_duration_since(t) >= UPGRADE_INTERVAL);
        stale && latency > GOOD_ENOUGH_LATENCY
    }

    fn full_ping(&mut self, now: Instant) {
        self.last_full_ping = Some(now);
        let due: Vec<SocketAddr> = self
            .endpoints
            .iter()
            .filter(|(_, e)| {
                e.last_ping
                    .is_none_or(|t| now.saturating_duration_since(t) >= DISCO_PING_INTERVAL)
            })
            .map(|(a, _)| *a)
            .collect();
        for ep in due {
            self.ping(ep, now);
        }
        let cmm_due = self
            .last_call_me_maybe
            .is_none_or(|t| now.saturating_duration_since(t) >= DISCO_PING_INTERVAL);
        if self.via_derp && cmm_due {
            self.last_call_me_maybe = Some(now);
            self.out.push_back(Output::CallMeMaybe);
        }
    }

    fn ping(&mut self, to: SocketAddr, now: Instant) {
        if self.pending.len() >= MAX_PENDING {
            // Forget the oldest unanswered ping rather than refuse a fresh one.
            if let Some((&tx, _)) = self.pending.iter().min_by_key(|(_, &(_, t))| t) {
                self.pending.remove(&tx);
            }
        }
        let mut id = [0u8; 12];
        self.rng.fill_bytes(&mut id);
        let tx = TxId(id);
        self.pending.insert(tx, (to, now));
        if let Some(e) = self.endpoints.get_mut(&to) {
            e.last_ping = Some(now);
        }
        self.stats.pings_sent += 1;
        self.out.push_back(Output::Ping {
            route: Route::Udp(to),
            tx,
        });
    }

    fn add_candidate(&mut self, addr: SocketAddr, source: Source, now: Instant) {
        if !usable(addr) {
            return;
        }
        if let Some(e) = self.endpoints.get_mut(&addr) {
            if source == Source::Control {
                e.source = Source::Control;
            }
            return;
        }
        if self.endpoints.len() >= MAX_ENDPOINTS {
            // Evict the oldest learned (never a control-given) endpoint that is not the best.
            let best = self.best.map(|b| b.0);
            let victim = self
                .endpoints
                .iter()
                .filter(|(a, e)| e.source != Source::Control && Some(**a) != best)
                .min_by_key(|(_, e)| e.learned)
                .map(|(a, _)| *a);
            match victim {
                Some(v) => {
                    self.endpoints.remove(&v);
                }
                None => return,
            }
        }
        self.endpoints.insert(
            addr,
            Endpoint {
                source,
                learned: now,
                last_ping: None,
                last_pong: None,
                last_ping_back: None,
                latency: None,
            },
        );
    }
}

/// Addresses never worth pinging: unspecified, multicast, broadcast, port 0.
fn usable(addr: SocketAddr) -> bool {
    let ip = addr.ip();
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && ip != IpAddr::from([255, 255, 255, 255])
}

/// Whether path `a` should replace path `b` (`betterAddr`, §7.5): latency points, bonuses by
/// address kind, and no switch for a one-point gain over a pointless incumbent.
pub fn better(a: (SocketAddr, Duration), b: (SocketAddr, Duration)) -> bool {
    if a.0 == b.0 {
        return false;
    }
    let (mut ap, mut bp) = (0i64, 0i64);
    let (al, bl) = (a.1.as_nanos(), b.1.as_nanos());
    if al > bl && al > 0 {
        bp = 100 - i64::try_from(bl * 100 / al).unwrap_or(100);
    } else if bl > al && bl > 0 {
        ap = 100 - i64::try_from(al * 100 / bl).unwrap_or(100);
    }
    ap += bonus(a.0.ip());
    bp += bonus(b.0.ip());
    if ap <= 1 && bp == 0 {
        return false;
    }
    ap > bp
}

fn bonus(ip: IpAddr) -> i64 {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_canonical(),
        v4 => v4,
    };
    let mut points = 0;
    if ip.is_loopback() {
        points += 50;
    }
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_link_local() {
                points += 30;
            }
            if v4.is_private() {
                points += 20;
            }
        }
        IpAddr::V6(v6) => {
            points += 10;
            let seg = v6.segments()[0];
            if seg & 0xffc0 == 0xfe80 {
                points += 30;
            }
            if seg & 0xfe00 == 0xfc00 {
                points += 20;
            }
        }
    }
    points
}

#[cfg(test)]
#[path = "path_tests.rs"]
mod tests;
