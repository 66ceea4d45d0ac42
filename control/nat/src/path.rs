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
/// Ping ids remembered per peer, so a replayed ping is not answered again.
pub const SEEN_PINGS: usize = 256;
/// An endpoint learned only from a ping is forgotten this long after it was learned, unless it
/// answered a ping of ours (`sessionActiveTimeout`, as upstream).
pub const PING_LEARNED_LIFETIME: Duration = Duration::from_secs(45);
/// CallMeMaybe messages whose endpoints are pinged at once: a burst of this many, then one per
/// second. Further ones still update the candidates, which the next full ping reaches.
pub const CALL_ME_MAYBE_BURST: u32 = 2;
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
    latency: Option<Duration>,
    /// The local socket to reach it from (0 = the shared socket; birthday hits differ).
    socket: u16,
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
    /// Pings whose id was seen before (replays: not answered).
    pub pings_replayed: u64,
    /// CallMeMaybe messages over the rate whose endpoints were not pinged at once.
    pub call_me_maybe_limited: u64,
}

/// The path state of one peer.
#[derive(Debug)]
pub struct PeerPath {
    rng: ChaCha20Rng,
    via_derp: bool,
    endpoints: BTreeMap<SocketAddr, Endpoint>,
    pending: BTreeMap<TxId, (SocketAddr, Instant)>,
    /// The ids of `pending` in the order they were sent, so that the oldest (the next to time
    /// out) is found without a scan. Ids answered out of order linger until they reach the
    /// front; the front is always still pending.
    sent_order: VecDeque<TxId>,
    best: Option<(SocketAddr, Duration)>,
    trust_until: Option<Instant>,
    last_outbound: Option<Instant>,
    last_full_ping: Option<Instant>,
    last_call_me_maybe: Option<Instant>,
    next_heartbeat: Option<Instant>,
    /// Ids of pings received, newest last (bounded by [`SEEN_PINGS`]).
    seen_pings: VecDeque<TxId>,
    last_ping_back: Option<Instant>,
    /// CallMeMaybe token bucket: tokens and when it was last refilled.
    cmm_tokens: u32,
    cmm_refill: Option<Instant>,
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
            sent_order: VecDeque::new(),
            best: None,
            trust_until: None,
            last_outbound: None,
            last_full_ping: None,
            last_call_me_maybe: None,
            next_heartbeat: None,
            seen_pings: VecDeque::new(),
            last_ping_back: None,
            cmm_tokens: CALL_ME_MAYBE_BURST,
            cmm_refill: None,
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

    /// The peer's `CallMeMaybe` (via DERP): its endpoints replace those of its previous one,
    /// and are pinged now, which opens this side's NAT towards them. Bounded whatever the peer
    /// sends: duplicates and addresses never worth pinging (loopback, link-local, the DERP
    /// magic address) are dropped, at most [`crate::disco::MAX_CALL_ME_MAYBE_ENDPOINTS`] are
    /// taken, and only [`CALL_ME_MAYBE_BURST`] messages a second lead to pings.
    pub fn handle_call_me_maybe(&mut self, eps: &[SocketAddr], now: Instant) {
        let mut list: Vec<SocketAddr> = Vec::new();
        for &ep in eps {
            if remote_usable(ep) && !list.contains(&ep) {
                list.push(ep);
                if list.len() >= crate::disco::MAX_CALL_ME_MAYBE_ENDPOINTS {
                    break;
                }
            }
        }
        let best = self.best.map(|b| b.0);
        self.endpoints.retain(|addr, e| {
            e.source != Source::CallMeMaybe || list.contains(addr) || Some(*addr) == best
        });
        for &ep in &list {
            self.add_candidate(ep, Source::CallMeMaybe, now);
        }
        if !self.take_cmm_token(now) {
            self.stats.call_me_maybe_limited += 1;
            return;
        }
        for ep in list {
            if let Some(e) = self.endpoints.get_mut(&ep) {
                e.last_ping = None;
                self.ping(ep, now);
            }
        }
    }

    fn take_cmm_token(&mut self, now: Instant) -> bool {
        let last = *self.cmm_refill.get_or_insert(now);
        let secs = now.saturating_duration_since(last).as_secs();
        if secs > 0 {
            let add = u32::try_from(secs).unwrap_or(u32::MAX);
            self.cmm_tokens = self.cmm_tokens.saturating_add(add).min(CALL_ME_MAYBE_BURST);
            self.cmm_refill = Some(now);
        }
        if self.cmm_tokens == 0 {
            return false;
        }
        self.cmm_tokens -= 1;
        true
    }

    /// The peer pinged this node over `route` (from local socket `socket` for UDP): answer
    /// it, and remember a UDP source as a candidate. Without a trusted path, ping the source
    /// back at once (at most once per [`PING_BACK_INTERVAL`] per peer): the peer's NAT has just
    /// shown it holds a mapping towards this node, so this node's ping can now get through
    /// where an earlier one, which crossed the peer's on the way, was dropped.
    ///
    /// Returns false, and does nothing, for a ping id seen before: a replayed ping (from
    /// anywhere) is neither answered nor learned from.
    pub fn handle_ping(
        &mut self,
        route: Route,
        tx: TxId,
        src: SocketAddr,
        socket: u16,
        now: Instant,
    ) -> bool {
        if self.seen_pings.contains(&tx) {
            self.stats.pings_replayed += 1;
            return false;
        }
        if self.seen_pings.len() >= SEEN_PINGS {
            self.seen_pings.pop_front();
        }
        self.seen_pings.push_back(tx);
        if let Route::Udp(addr) = route {
            if !remote_usable(addr) && !self.endpoints.contains_key(&addr) {
                return false;
            }
            self.add_candidate(addr, Source::Ping, now);
            if let Some(e) = self.endpoints.get_mut(&addr) {
                // Answer (and reach it later) from the socket the ping came in on.
                e.socket = socket;
            }
        }
        self.out.push_back(Output::Pong { route, tx, src });
        if let Route::Udp(addr) = route {
            let due = self
                .last_ping_back
                .is_none_or(|t| now.saturating_duration_since(t) >= PING_BACK_INTERVAL);
            if due && !self.trusted(now) && self.endpoints.contains_key(&addr) {
                self.last_ping_back = Some(now);
                self.ping(addr, now);
            }
        }
        true
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
        self.trim_sent_order();
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

    /// Adds a candidate found outside disco (a birthday hit on local socket `socket`) and
    /// pings it now.
    pub fn add_and_ping(&mut self, addr: SocketAddr, socket: u16, now: Instant) {
        self.add_candidate(addr, Source::Ping, now);
        if let Some(e) = self.endpoints.get_mut(&addr) {
            e.socket = socket;
            self.ping(addr, now);
        }
    }

    /// The local socket to reach `addr` from (0, the shared socket, unless a birthday hit or a
    /// ping arriving elsewhere said otherwise).
    pub fn socket_for(&self, addr: SocketAddr) -> u16 {
        self.endpoints.get(&addr).map_or(0, |e| e.socket)
    }

    /// The local sockets its endpoints are reached from.
    pub fn sockets(&self) -> impl Iterator<Item = u16> + '_ {
        self.endpoints.values().map(|e| e.socket)
    }

    /// The next disco message to send.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Self::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self
            .sent_order
            .front()
            .and_then(|tx| self.pending.get(tx))
            .map(|&(_, t)| t + PING_TIMEOUT);
        match (self.next_heartbeat, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs timers: forgets unanswered pings and stale ping-learned endpoints, sends
    /// heartbeats.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.forget_stale(now);
        while let Some(tx) = self.sent_order.front() {
            match self.pending.get(tx) {
                Some(&(_, t)) if now < t + PING_TIMEOUT => break,
                Some(_) => {
                    self.pending.remove(tx);
                    self.stats.ping_timeouts += 1;
                }
                None => {}
            }
            self.sent_order.pop_front();
        }
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

    /// Drops answered ids from the front of `sent_order`.
    fn trim_sent_order(&mut self) {
        while let Some(tx) = self.sent_order.front() {
            if self.pending.contains_key(tx) {
                break;
            }
            self.sent_order.pop_front();
        }
    }

    fn ping(&mut self, to: SocketAddr, now: Instant) {
        if self.pending.len() >= MAX_PENDING {
            // Forget the oldest unanswered ping rather than refuse a fresh one.
            if let Some(tx) = self.sent_order.pop_front() {
                self.pending.remove(&tx);
                self.trim_sent_order();
            }
        }
        if self.sent_order.len() >= 2 * MAX_PENDING {
            // Many pongs came out of order: drop their lingering ids.
            let pending = &self.pending;
            self.sent_order.retain(|tx| pending.contains_key(tx));
        }
        let mut id = [0u8; 12];
        self.rng.fill_bytes(&mut id);
        let tx = TxId(id);
        self.pending.insert(tx, (to, now));
        self.sent_order.push_back(tx);
        if let Some(e) = self.endpoints.get_mut(&to) {
            e.last_ping = Some(now);
        }
        self.stats.pings_sent += 1;
        self.out.push_back(Output::Ping {
            route: Route::Udp(to),
            tx,
        });
    }

    /// Drops endpoints learned only from pings once they are [`PING_LEARNED_LIFETIME`] old
    /// and never answered a ping of ours (the best path is kept).
    fn forget_stale(&mut self, now: Instant) {
        let best = self.best.map(|b| b.0);
        self.endpoints.retain(|addr, e| {
            e.source != Source::Ping
                || Some(*addr) == best
                || e.last_pong.is_some()
                || now.saturating_duration_since(e.learned) < PING_LEARNED_LIFETIME
        });
    }

    fn add_candidate(&mut self, addr: SocketAddr, source: Source, now: Instant) {
        if !usable(addr) {
            return;
        }
        if let Some(e) = self.endpoints.get_mut(&addr) {
            // A stronger source wins (control > call-me-maybe > ping).
            if rank(source) > rank(e.source) {
                e.source = source;
            }
            return;
        }
        self.forget_stale(now);
        if self.endpoints.len() >= MAX_ENDPOINTS {
            // Evict the oldest endpoint of the weakest source, never one stronger than the
            // newcomer, never a control-given one, never the best path.
            let best = self.best.map(|b| b.0);
            let victim = self
                .endpoints
                .iter()
                .filter(|(a, e)| {
                    e.source != Source::Control
                        && rank(e.source) <= rank(source)
                        && Some(**a) != best
                })
                .min_by_key(|(_, e)| (rank(e.source), e.learned))
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
                latency: None,
                socket: 0,
            },
        );
    }
}

fn rank(s: Source) -> u8 {
    match s {
        Source::Ping => 0,
        Source::CallMeMaybe => 1,
        Source::Control => 2,
    }
}

/// Addresses a peer may name (in a CallMeMaybe, or as a ping's source): usable, and not
/// loopback, link-local or the DERP magic address, which would turn a peer's message into
/// traffic to this host's own services or its LAN segment.
fn remote_usable(addr: SocketAddr) -> bool {
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_canonical(),
        v4 => v4,
    };
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    usable(addr)
        && !ip.is_loopback()
        && !link_local
        && ip != IpAddr::from(crate::node::DERP_MAGIC_IP)
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
