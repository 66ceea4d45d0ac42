//! One node's NAT traversal: its disco key, its endpoint discovery, and a [`PeerPath`] per peer,
//! behind one sans-IO interface for the shell.
//!
//! The shell owns one UDP socket shared with WireGuard (socket 0; birthday probing may add
//! more) and DERP connections. Everything it receives goes through [`Node::handle_udp`] or
//! [`Node::handle_derp`], which keep STUN and disco for themselves and say when the bytes are
//! WireGuard's. Before it sends a peer a WireGuard packet it asks [`Node::send_to`] where to; and
//! it sends whatever [`Node::poll_transmit`] returns (sealed disco, STUN requests). Unknown
//! senders, forged boxes and misplaced messages are dropped and counted in [`NodeStats`], never
//! errors: hostile input must not disturb the node.
//!
//! Peers are keyed by node key (what DERP addresses and WireGuard knows); disco packets name
//! their sender by disco key, so the node keeps both maps.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use weft_keys::PublicKey;

use crate::birthday::{Birthday, Hit, Plan};
use crate::disco::{self, DiscoBox, DiscoPrivate, DiscoPublic, Message, TxId};
use crate::discovery::{Discovery, EndpointKind, NatMapping};
use crate::path::{Output, PeerPath, Route};

/// The address a packet received via DERP is said to come from (`127.3.3.40:<region>`).
pub const DERP_MAGIC_IP: Ipv4Addr = Ipv4Addr::new(127, 3, 3, 40);

/// A DERP region id.
pub type RegionId = u16;

/// What the node knows about a peer (from the control server, or given by hand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's node key (its WireGuard and DERP address).
    pub node_key: PublicKey,
    /// The peer's disco key.
    pub disco: DiscoPublic,
    /// The peer's endpoints as the control server lists them.
    pub endpoints: Vec<SocketAddr>,
    /// The peer's home DERP region.
    pub home_derp: Option<RegionId>,
}

/// How a datagram leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// From local socket `socket` to `to`.
    Udp {
        /// Local socket index (0 = the shared socket).
        socket: u16,
        /// Destination.
        to: SocketAddr,
    },
    /// Through DERP region `region`, addressed to node key `dst`.
    Derp {
        /// The region.
        region: RegionId,
        /// The recipient's node key.
        dst: PublicKey,
    },
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where.
    pub via: Via,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// Where a peer's WireGuard packet goes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Destinations {
    /// Directly.
    pub udp: Option<(u16, SocketAddr)>,
    /// Through this DERP region.
    pub derp: Option<RegionId>,
}

/// What a received datagram was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// STUN or disco, handled here.
    Handled,
    /// Not for the node: hand it to WireGuard.
    WireGuard,
    /// Dropped (counted).
    Dropped,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Disco messages opened.
    pub disco_in: u64,
    /// Disco messages sealed and queued.
    pub disco_out: u64,
    /// Disco from a disco key that is no peer's.
    pub disco_unknown_sender: u64,
    /// Disco that did not authenticate or parse.
    pub disco_bad: u64,
    /// CallMeMaybe over UDP (only accepted via DERP).
    pub call_me_maybe_over_udp: u64,
    /// STUN that answered no request.
    pub stun_unmatched: u64,
    /// Birthday probes sent.
    pub birthday_probes: u64,
    /// Disco from a key several peers claim, that nothing in it disambiguates.
    pub disco_ambiguous: u64,
    /// Peers whose disco key is unusable (all-zero or low-order): reached via DERP only.
    pub disco_key_refused: u64,
    /// Disco messages that needed DERP for a peer without a home region.
    pub derp_unroutable: u64,
}

#[derive(Debug)]
struct Peer {
    config: PeerConfig,
    /// `None` when the peer's disco key is unusable: no disco, DERP only.
    disco_box: Option<DiscoBox>,
    path: PeerPath,
    birthday: Option<Birthday>,
}

/// One node's NAT-traversal state.
#[derive(Debug)]
pub struct Node {
    disco: DiscoPrivate,
    node_key: PublicKey,
    rng: ChaCha20Rng,
    discovery: Discovery,
    endpoints_gen: u64,
    peers: BTreeMap<PublicKey, Peer>,
    /// Node keys by disco key. Normally one each; several nodes claiming one disco key are
    /// told apart by the node key in their pings, or by their DERP address.
    by_disco: BTreeMap<DiscoPublic, Vec<PublicKey>>,
    out: VecDeque<Transmit>,
    stats: NodeStats,
}

impl Node {
    /// A node with disco key `disco` and node key `node_key`, asking `stun_servers` for its
    /// public address.
    pub fn new(
        disco: DiscoPrivate,
        node_key: PublicKey,
        stun_servers: Vec<SocketAddr>,
        seed: [u8; 32],
        now: Instant,
    ) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut dseed = [0u8; 32];
        rng.fill_bytes(&mut dseed);
        let mut discovery = Discovery::new(stun_servers, dseed);
        discovery.start(now);
        Self {
            disco,
            node_key,
            rng,
            discovery,
            endpoints_gen: 0,
            peers: BTreeMap::new(),
            by_disco: BTreeMap::new(),
            out: VecDeque::new(),
            stats: NodeStats::default(),
        }
    }

    /// This node's disco public key.
    pub fn disco_public(&self) -> DiscoPublic {
        self.disco.public()
    }

    /// This node's node key.
    pub fn node_key(&self) -> PublicKey {
        self.node_key
    }

    /// Local interface addresses with the shared socket's port.
    pub fn set_local_addrs(&mut self, addrs: Vec<SocketAddr>, now: Instant) {
        self.discovery.set_local(addrs);
        self.check_endpoints(now);
    }

    /// Adds or updates a peer. A new disco key resets its path (the peer restarted).
    pub fn upsert_peer(&mut self, config: PeerConfig, now: Instant) {
        let key = config.node_key;
        let same_disco = self
            .peers
            .get(&key)
            .is_some_and(|p| p.config.disco == config.disco);
        if !same_disco {
            self.remove_peer(&key);
            let mut seed = [0u8; 32];
            self.rng.fill_bytes(&mut seed);
            let disco_box = DiscoBox::new(&self.disco, config.disco);
            if disco_box.is_some() {
                self.by_disco.entry(config.disco).or_default().push(key);
            } else {
                self.stats.disco_key_refused += 1;
            }
            let peer = Peer {
                disco_box,
                path: PeerPath::new(seed, config.home_derp.is_some()),
                birthday: None,
                config: config.clone(),
            };
            self.peers.insert(key, peer);
        }
        if let Some(p) = self.peers.get_mut(&key) {
            p.path.set_via_derp(config.home_derp.is_some());
            p.path.set_control_endpoints(&config.endpoints, now);
            p.config = config;
        }
    }

    /// Forgets a peer.
    pub fn remove_peer(&mut self, node_key: &PublicKey) {
        let Some(p) = self.peers.remove(node_key) else {
            return;
        };
        if let Some(keys) = self.by_disco.get_mut(&p.config.disco) {
            keys.retain(|k| k != node_key);
            if keys.is_empty() {
                self.by_disco.remove(&p.config.disco);
            }
        }
    }

    /// A datagram arrived on local socket `socket` from `from`.
    pub fn handle_udp(
        &mut self,
        socket: u16,
        from: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) -> Received {
        // A dual-stack socket reports IPv4 senders as v4-mapped IPv6; endpoints and STUN
        // servers are kept in plain form.
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        // STUN as §7.3 tells it apart: binding method in byte 1, then the cookie.
        if bytes.get(1) == Some(&0x01) && weft_derp::stun::is_stun(bytes) {
            if self.discovery.handle_stun(from, bytes, now) {
                self.check_endpoints(now);
                return Received::Handled;
            }
            return Received::Dropped;
        }
        if !bytes.starts_with(&disco::MAGIC) {
            return Received::WireGuard;
        }
        let Some((key, msg)) = self.open(bytes, None) else {
            return Received::Dropped;
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return Received::Dropped;
        };
        match msg {
            Message::Ping { tx, .. } => {
                let fresh = peer
                    .path
                    .handle_ping(Route::Udp(from), tx, from, socket, now);
                // A fresh (not replayed) ping from the peer's address on a birthday socket is
                // a hit: that socket's mapping and the peer's point at each other.
                if fresh {
                    if let Some(b) = peer.birthday.as_mut() {
                        if let Some(hit) = b.handle_reply(socket, from, now) {
                            peer.path.add_and_ping(hit.remote, hit.socket, now);
                        }
                    }
                }
            }
            Message::Pong { tx, .. } => {
                peer.path.handle_pong(tx, from, now);
            }
            Message::CallMeMaybe { .. } => {
                self.stats.call_me_maybe_over_udp += 1;
                return Received::Dropped;
            }
        }
        self.flush_peer(key, now);
        Received::Handled
    }

    /// A packet arrived via DERP region `region` from node key `src`.
    pub fn handle_derp(
        &mut self,
        region: RegionId,
        src: PublicKey,
        bytes: &[u8],
        now: Instant,
    ) -> Received {
        if !bytes.starts_with(&disco::MAGIC) {
            return Received::WireGuard;
        }
        let Some((key, msg)) = self.open(bytes, Some(src)) else {
            return Received::Dropped;
        };
        if key != src {
            // A disco key speaking through someone else's DERP address.
            self.stats.disco_bad += 1;
            return Received::Dropped;
        }
        let Some(peer) = self.peers.get_mut(&key) else {
            return Received::Dropped;
        };
        match msg {
            Message::Ping { tx, .. } => {
                let src = SocketAddr::new(IpAddr::V4(DERP_MAGIC_IP), region);
                peer.path.handle_ping(Route::Derp, tx, src, 0, now);
            }
            Message::Pong { .. } => {}
            Message::CallMeMaybe { endpoints } => {
                peer.path.handle_call_me_maybe(&endpoints, now);
            }
        }
        self.flush_peer(key, now);
        Received::Handled
    }

    /// Where to send `peer`'s next WireGuard packet (also marks the session active, which may
    /// start path discovery). `None` for an unknown peer.
    pub fn send_to(&mut self, peer: &PublicKey, now: Instant) -> Option<Destinations> {
        let p = self.peers.get_mut(peer)?;
        p.path.note_outbound(now);
        let r = p.path.route(now);
        let d = Destinations {
            udp: r.udp.map(|a| (p.path.socket_for(a), a)),
            derp: if r.derp { p.config.home_derp } else { None },
        };
        self.flush_peer(*peer, now);
        Some(d)
    }

    /// The peer's path counters and candidate endpoints (for status output).
    pub fn peer_status(
        &self,
        peer: &PublicKey,
    ) -> Option<(
        crate::path::PathStats,
        Vec<(SocketAddr, crate::path::Source)>,
    )> {
        let p = self.peers.get(peer)?;
        Some((p.path.stats(), p.path.candidates().collect()))
    }

    /// The peer's trusted direct path, if any.
    pub fn direct_path(&self, peer: &PublicKey, now: Instant) -> Option<SocketAddr> {
        self.peers.get(peer)?.path.direct(now)
    }

    /// Starts birthday probing towards `peer` (the shell has opened `plan.sockets` sockets).
    pub fn start_birthday(&mut self, peer: &PublicKey, plan: Plan, now: Instant) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.birthday = Some(Birthday::new(plan, now));
        }
    }

    /// The local sockets still needed at `now`: the shared one, those any peer's endpoints
    /// are reached from, and all of a birthday plan's while it is listening (it runs, or ended
    /// moments ago). The shell may close the others.
    pub fn sockets_in_use(&self, now: Instant) -> BTreeSet<u16> {
        let mut set = BTreeSet::from([0]);
        for p in self.peers.values() {
            set.extend(p.path.sockets());
            if let Some(b) = p.birthday.as_ref().filter(|b| b.listening(now)) {
                set.extend(0..b.plan().sockets);
            }
        }
        set
    }

    /// True while some peer's birthday plan is listening.
    pub fn birthday_listening(&self, now: Instant) -> bool {
        self.peers
            .values()
            .any(|p| p.birthday.as_ref().is_some_and(|b| b.listening(now)))
    }

    /// The birthday hit towards `peer`, once found.
    pub fn birthday_hit_for(&self, peer: &PublicKey) -> Option<Hit> {
        self.peers.get(peer)?.birthday.as_ref()?.hit()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if let Some(t) = self.out.pop_front() {
            return Some(t);
        }
        if let Some((server, req)) = self.discovery.poll_transmit(now) {
            return Some(Transmit {
                via: Via::Udp {
                    socket: 0,
                    to: server,
                },
                bytes: req.to_vec(),
            });
        }
        // Birthday probes are paced: at most one per peer per call.
        let keys: Vec<PublicKey> = self.peers.keys().copied().collect();
        for key in keys {
            let probe = self
                .peers
                .get_mut(&key)
                .and_then(|p| p.birthday.as_mut())
                .and_then(|b| b.poll_transmit(now));
            if let Some(probe) = probe {
                let mut tx = [0u8; 12];
                self.rng.fill_bytes(&mut tx);
                let msg = Message::Ping {
                    tx: TxId(tx),
                    node_key: Some(self.node_key),
                    padding: 0,
                };
                self.stats.birthday_probes += 1;
                if let Some(bytes) = self.seal(key, &msg) {
                    return Some(Transmit {
                        via: Via::Udp {
                            socket: probe.socket,
                            to: probe.to,
                        },
                        bytes,
                    });
                }
            }
        }
        None
    }

    /// When [`Self::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let peers = self.peers.values().flat_map(|p| {
            [
                p.path.poll_timeout(),
                p.birthday.as_ref().and_then(Birthday::poll_timeout),
            ]
        });
        std::iter::once(self.discovery.poll_timeout())
            .chain(peers)
            .flatten()
            .min()
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.discovery.handle_timeout(now);
        self.check_endpoints(now);
        let keys: Vec<PublicKey> = self.peers.keys().copied().collect();
        for key in keys {
            if let Some(p) = self.peers.get_mut(&key) {
                p.path.handle_timeout(now);
            }
            self.flush_peer(key, now);
        }
    }

    /// This node's endpoints now (what a CallMeMaybe carries).
    pub fn endpoints(&self, now: Instant) -> Vec<(SocketAddr, EndpointKind)> {
        self.discovery.endpoints(now)
    }

    /// The NAT's mapping behaviour from the last STUN round.
    pub fn nat_mapping(&self) -> NatMapping {
        self.discovery
            .report()
            .map_or(NatMapping::Unknown, |r| r.nat)
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        let mut s = self.stats;
        s.stun_unmatched += self.discovery.unmatched();
        s
    }

    fn check_endpoints(&mut self, now: Instant) {
        let gen = self.discovery.generation();
        if gen == self.endpoints_gen {
            return;
        }
        self.endpoints_gen = gen;
        let keys: Vec<PublicKey> = self.peers.keys().copied().collect();
        for key in keys {
            if let Some(p) = self.peers.get_mut(&key) {
                p.path.endpoints_changed(now);
            }
            self.flush_peer(key, now);
        }
    }

    /// Opens a disco packet from a known peer and says which peer sent it. `derp_src` is the
    /// DERP address it came from, if it came via DERP.
    fn open(&mut self, bytes: &[u8], derp_src: Option<PublicKey>) -> Option<(PublicKey, Message)> {
        let Ok(sender) = disco::sender(bytes) else {
            self.stats.disco_bad += 1;
            return None;
        };
        let Some(keys) = self.by_disco.get(&sender).filter(|k| !k.is_empty()) else {
            self.stats.disco_unknown_sender += 1;
            return None;
        };
        let keys = keys.clone();
        // Every peer with this disco key has the same box: open with the first.
        let opened = keys
            .first()
            .and_then(|k| self.peers.get(k))
            .and_then(|p| p.disco_box.as_ref())
            .map(|b| b.open(bytes));
        let msg = match opened {
            Some(Ok(m)) => m,
            _ => {
                self.stats.disco_bad += 1;
                return None;
            }
        };
        self.stats.disco_in += 1;
        let key = match keys.as_slice() {
            [only] => Some(*only),
            _ => {
                // Several nodes claim this disco key: the DERP address, or the node key in a
                // ping, must name one of them; anything else is dropped.
                let named = derp_src.or(match &msg {
                    Message::Ping { node_key, .. } => *node_key,
                    _ => None,
                });
                named.filter(|k| keys.contains(k))
            }
        };
        match key {
            Some(k) => Some((k, msg)),
            None => {
                self.stats.disco_ambiguous += 1;
                None
            }
        }
    }

    fn seal(&mut self, key: PublicKey, msg: &Message) -> Option<Vec<u8>> {
        let disco_box = self.peers.get(&key)?.disco_box.as_ref()?;
        let mut nonce = [0u8; disco::NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        let mut bytes = Vec::new();
        disco_box.seal(nonce, msg, &mut bytes).ok()?;
        self.stats.disco_out += 1;
        Some(bytes)
    }

    /// Seals and queues everything the peer's path state machine wants sent.
    fn flush_peer(&mut self, key: PublicKey, now: Instant) {
        loop {
            let Some(peer) = self.peers.get_mut(&key) else {
                return;
            };
            let Some(output) = peer.path.poll_output() else {
                return;
            };
            let region = peer.config.home_derp;
            let socket_for = |a: SocketAddr| peer.path.socket_for(a);
            let (route, msg) = match output {
                Output::Ping { route, tx } => (
                    route,
                    Message::Ping {
                        tx,
                        node_key: Some(self.node_key),
                        padding: 0,
                    },
                ),
                Output::Pong { route, tx, src } => (route, Message::Pong { tx, src }),
                Output::CallMeMaybe => {
                    let endpoints = self
                        .discovery
                        .endpoints(now)
                        .into_iter()
                        .map(|e| e.0)
                        .collect();
                    (Route::Derp, Message::CallMeMaybe { endpoints })
                }
            };
            let via = match route {
                Route::Udp(to) => Via::Udp {
                    socket: socket_for(to),
                    to,
                },
                Route::Derp => match region {
                    Some(region) => Via::Derp { region, dst: key },
                    None => {
                        self.stats.derp_unroutable += 1;
                        continue;
                    }
                },
            };
            if let Some(bytes) = self.seal(key, &msg) {
                self.out.push_back(Transmit { via, bytes });
            }
        }
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
