//! The WireGuard device: every peer, the receiver-index table, cryptokey routing, and the
//! handshake path's DoS defences — as a state machine with no I/O.
//!
//! # Calling contract
//! Like quinn-proto's `Endpoint`, a [`Device`] is driven by its owner (the I/O shell):
//!
//! * **Commands** configure it: [`Device::set_private_key`], [`Device::add_peer`],
//!   [`Device::set_endpoint`], [`Device::add_allowed_ip`], … (the UAPI maps onto these).
//! * **`handle_*`-style calls** feed it input: [`Device::encapsulate`] for a packet read from
//!   the TUN, [`Device::decapsulate`] for a datagram read from the network, and
//!   [`Device::handle_timeout`] when [`Device::poll_timeout`] says a deadline passed.
//! * **`poll_*` calls** drain output: after any of the above, call [`Device::poll_transmit`]
//!   until it returns `None` and send each datagram.
//!
//! Every call takes `now`; nothing reads a clock. Randomness (ephemeral keys, indices, jitter,
//! cookie secrets) comes from a ChaCha20 generator seeded in [`Device::new`], so a test with a
//! fixed seed and a fake clock is fully deterministic.
//!
//! # The data path
//! [`Device::encapsulate`] and [`Device::decapsulate`] work in place on the caller's buffer and
//! allocate nothing. Only the handshake path allocates (queued handshakes, packets staged while
//! a handshake is pending, transmits it creates).
//!
//! # Bad input
//! Every malformed, unauthenticated, replayed or unexpected datagram is dropped, counted in
//! [`DeviceStats`], and reported as [`Decapsulated::Dropped`] with a reason; none changes a
//! session's state. Nothing here panics on any input.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use weft_keys::{PresharedKey, PrivateKey, PublicKey};

use crate::allowedips::{AllowedIps, AllowedIpsError};
use crate::cookie::CookieChecker;
use crate::handshake::StaticIdentity;
use crate::messages::{Message, TRANSPORT_HEADER_LEN};
use crate::peer::{Peer, PeerId, Slot};

mod handshake_path;
mod timer_path;
use crate::ratelimiter::RateLimiter;
use crate::session::OpenError;
use crate::stats::{DeviceStats, RxDrop, TxDrop};
use crate::timers::{REKEY_ON_RECEIVE_AGE, REKEY_TIMEOUT_JITTER_MAX_MS};
use crate::{ip, Endpoint};

/// Bound of the queue of handshake messages waiting for processing (the kernel's
/// `MAX_QUEUED_INCOMING_HANDSHAKES`).
pub const MAX_QUEUED_HANDSHAKES: usize = 4096;
/// The device is *under load* while the handshake queue holds at least this many messages,
/// and for a second afterwards (the trigger of the kernel and wireguard-go).
pub const UNDER_LOAD_QUEUE_LEN: usize = MAX_QUEUED_HANDSHAKES / 8;
const UNDER_LOAD_HOLD: Duration = Duration::from_secs(1);
/// Handshakes processed per [`Device::handle_timeout`] call.
///
/// Small on purpose. The kernel receives at line rate in softirq and computes handshakes in a
/// workqueue, so a flood backs up its handshake queue and turns on cookies. A single-threaded
/// shell must reproduce that split: it drains many datagrams per iteration (cheap: a MAC check)
/// and spends only this many Diffie-Hellmans, so a flood fills the queue, the device goes under
/// load, and the flood then costs a MAC and a cookie reply per packet instead of a DH.
pub const HANDSHAKES_PER_TIMEOUT: usize = 8;
/// Default tunnel MTU (wireguard-go's).
pub const DEFAULT_MTU: usize = 1420;

/// A datagram the device wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub endpoint: Endpoint,
    /// The peer it is for; `None` for cookie replies to unauthenticated senders.
    pub peer: Option<PeerId>,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// The result of [`Device::encapsulate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encapsulated {
    /// The buffer now holds a transport message of `len` bytes to send to `endpoint`.
    Send {
        /// The destination peer.
        peer: PeerId,
        /// Where to send the message.
        endpoint: Endpoint,
        /// Length of the message at the start of the buffer.
        len: usize,
    },
    /// No usable session yet: the packet was queued and a handshake started (see
    /// [`Device::poll_transmit`]).
    Staged(PeerId),
    /// The packet was dropped and counted.
    Dropped(TxDrop),
}

/// The result of [`Device::decapsulate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decapsulated {
    /// The datagram held an IP packet for the TUN at `datagram[start..start + len]`.
    Packet {
        /// The sending peer.
        peer: PeerId,
        /// Offset of the packet in the datagram buffer.
        start: usize,
        /// Length of the packet (padding removed).
        len: usize,
    },
    /// A valid keepalive from `peer`; nothing to deliver.
    Keepalive(PeerId),
    /// A handshake message was accepted for processing or answered; check
    /// [`Device::poll_timeout`] and [`Device::poll_transmit`].
    Handshake,
    /// The datagram was dropped and counted.
    Dropped(RxDrop),
}

/// What [`Device::peer_info`] reports about a peer (the UAPI `get` needs all of it).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's public key.
    pub public_key: PublicKey,
    /// Its preshared key (all zeros for none).
    pub preshared_key: PresharedKey,
    /// Its current endpoint.
    pub endpoint: Option<Endpoint>,
    /// Wall-clock time of the last completed handshake, since the Unix epoch.
    pub last_handshake: Option<Duration>,
    /// Bytes received from the peer (whole WireGuard messages).
    pub rx_bytes: u64,
    /// Bytes sent to the peer (whole WireGuard messages).
    pub tx_bytes: u64,
    /// Persistent keepalive interval in seconds; zero is off.
    pub persistent_keepalive: u16,
    /// Its allowed IPs.
    pub allowed_ips: Vec<(IpAddr, u8)>,
}

/// An initiation from a public key that this device does not hold, received by a partitioned
/// device (see [`Device::set_index_partition`]): the shell hands it to the partition that
/// holds the peer, which consumes it with [`Device::accept_forwarded`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignInitiation {
    /// The initiator's static key, revealed by decrypting the initiation.
    pub initiator: PublicKey,
    /// Where it came from.
    pub from: Endpoint,
    /// The whole initiation message, as received.
    pub datagram: Vec<u8>,
}

/// Which receiver indices a partitioned device allocates: those with `index % parts == part`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Partition {
    part: u32,
    parts: u32,
}

#[derive(Debug)]
struct QueuedHandshake {
    from: Endpoint,
    bytes: Vec<u8>,
    /// Handed over by another partition: never handed out again.
    forwarded: bool,
}

/// A WireGuard device. See the module documentation for the calling contract.
#[derive(Debug)]
pub struct Device {
    identity: Option<StaticIdentity>,
    checker: Option<CookieChecker>,
    peers: BTreeMap<PeerId, Peer>,
    by_key: BTreeMap<PublicKey, PeerId>,
    indices: BTreeMap<u32, PeerId>,
    allowed: AllowedIps<PeerId>,
    next_peer_id: u32,
    rng: ChaCha20Rng,
    clock_base: (Instant, Duration),
    queue: VecDeque<QueuedHandshake>,
    under_load_until: Option<Instant>,
    limiter: RateLimiter,
    transmits: VecDeque<Transmit>,
    stats: DeviceStats,
    mtu: usize,
    partition: Option<Partition>,
    foreign: VecDeque<ForeignInitiation>,
}

/// The value of a route that another partition holds (see [`Device::set_routes_elsewhere`]):
/// never a peer of this device, so a lookup that lands on it routes nowhere and matches no
/// peer's source address. `add_peer` never hands out this id.
const ELSEWHERE: PeerId = PeerId(u32::MAX);

fn jitter(rng: &mut ChaCha20Rng) -> Duration {
    Duration::from_millis(u64::from(rng.next_u32()) % REKEY_TIMEOUT_JITTER_MAX_MS)
}

fn alloc_index(
    indices: &mut BTreeMap<u32, PeerId>,
    rng: &mut ChaCha20Rng,
    partition: Option<Partition>,
    id: PeerId,
) -> u32 {
    loop {
        let mut idx = rng.next_u32();
        if let Some(Partition { part, parts }) = partition {
            // The same random draw moved into this partition's residue class.
            let Some(moved) = (idx - idx % parts).checked_add(part) else {
                continue;
            };
            idx = moved;
        }
        if let std::collections::btree_map::Entry::Vacant(e) = indices.entry(idx) {
            e.insert(id);
            return idx;
        }
    }
}

fn free_indices(indices: &mut BTreeMap<u32, PeerId>, freed: impl IntoIterator<Item = u32>) {
    for idx in freed {
        indices.remove(&idx);
    }
}

impl Device {
    /// Creates a device with no key and no peers.
    ///
    /// `seed` seeds every random choice; `now` and `unix_now` pin the monotonic clock to wall
    /// time, which the handshake's TAI64N timestamps and `last_handshake` need.
    pub fn new(seed: [u8; 32], now: Instant, unix_now: Duration) -> Self {
        Self {
            identity: None,
            checker: None,
            peers: BTreeMap::new(),
            by_key: BTreeMap::new(),
            indices: BTreeMap::new(),
            allowed: AllowedIps::new(),
            next_peer_id: 0,
            rng: ChaCha20Rng::from_seed(seed),
            clock_base: (now, unix_now),
            queue: VecDeque::new(),
            under_load_until: None,
            limiter: RateLimiter::new(),
            transmits: VecDeque::new(),
            stats: DeviceStats::default(),
            mtu: DEFAULT_MTU,
            partition: None,
            foreign: VecDeque::new(),
        }
    }

    /// Makes this device one of `parts` partitions of a sharded device, each holding some of
    /// the peers: it allocates only receiver indices with `index % parts == part` (so that the
    /// shell can steer a transport packet to its partition by the index alone), and an
    /// initiation from a key it does not hold is not dropped but handed out through
    /// [`Device::poll_foreign`]. Call it before adding peers; `parts == 1` (or `part >= parts`)
    /// turns partitioning off.
    pub fn set_index_partition(&mut self, part: u32, parts: u32) {
        self.partition = (parts > 1 && part < parts).then_some(Partition { part, parts });
    }

    /// The next initiation from a peer this partition does not hold (see
    /// [`Device::set_index_partition`]).
    pub fn poll_foreign(&mut self) -> Option<ForeignInitiation> {
        self.foreign.pop_front()
    }

    /// Queues an initiation that another partition received and whose MACs (and, under load,
    /// cookie) it already checked; it is consumed at the next [`Device::handle_timeout`]. If
    /// this partition does not hold the initiator either, it is dropped as from an unknown
    /// peer, never handed out again. Returns `false` if the handshake queue is full (counted)
    /// or it is not an initiation.
    pub fn accept_forwarded(&mut self, from: Endpoint, datagram: Vec<u8>) -> bool {
        if !matches!(Message::parse(&datagram), Ok(Message::Initiation(_))) {
            self.stats.count_rx(RxDrop::Malformed);
            return false;
        }
        if self.queue.len() >= MAX_QUEUED_HANDSHAKES {
            self.stats.count_rx(RxDrop::HandshakeQueueFull);
            return false;
        }
        self.queue.push_back(QueuedHandshake {
            from,
            bytes: datagram,
            forwarded: true,
        });
        true
    }

    /// Removes the route for exactly `addr/cidr`, whichever peer holds it (a sharded shell
    /// keeps allowed IPs unique across partitions with this). Returns whether one existed.
    pub fn unroute(&mut self, addr: IpAddr, cidr: u8) -> bool {
        self.allowed.remove(addr, cidr).is_some()
    }

    /// Tells a partition which prefixes the *other* partitions route, replacing what it was
    /// told before. They take part in longest-prefix matching like this partition's own
    /// allowed IPs, but lead to no peer: a packet to such a prefix is not sent (`NoRoute`), and
    /// a decrypted packet whose source falls under one is dropped (`SourceNotAllowed`) even if
    /// a shorter prefix of its own peer covers it — so a sharded device checks sources exactly
    /// as one device holding every peer would. A prefix this partition routes itself is left
    /// to its peer.
    pub fn set_routes_elsewhere(&mut self, prefixes: impl IntoIterator<Item = (IpAddr, u8)>) {
        self.allowed.remove_by_value(&ELSEWHERE);
        for (addr, cidr) in prefixes {
            match self.allowed.remove(addr, cidr) {
                Some(own) => {
                    let _ = self.allowed.insert(addr, cidr, own);
                }
                None => {
                    let _ = self.allowed.insert(addr, cidr, ELSEWHERE);
                }
            }
        }
    }

    /// This partition's own routes: every allowed IP of every peer, with the peer.
    pub fn routes(&self) -> impl Iterator<Item = (IpAddr, u8, PeerId)> + '_ {
        self.allowed
            .iter()
            .filter(|&(_, _, id)| *id != ELSEWHERE)
            .map(|(addr, cidr, id)| (addr, cidr, *id))
    }

    fn unix_time(&self, at: Instant) -> Duration {
        let (base, unix) = self.clock_base;
        match at.checked_duration_since(base) {
            Some(d) => unix + d,
            None => unix.saturating_sub(base.saturating_duration_since(at)),
        }
    }

    /// Sets the tunnel MTU, which bounds padding.
    pub fn set_mtu(&mut self, mtu: usize) {
        self.mtu = mtu;
    }

    /// The counters of dropped and processed messages.
    pub fn stats(&self) -> &DeviceStats {
        &self.stats
    }

    /// The private key, if one is set.
    pub fn private_key(&self) -> Option<&PrivateKey> {
        self.identity.as_ref().map(|i| &i.private)
    }

    /// The public key, if a private key is set.
    pub fn public_key(&self) -> Option<PublicKey> {
        self.identity.as_ref().map(|i| i.public)
    }

    /// Sets or clears the private key. A new key invalidates every session (the static-static
    /// secrets change), and a peer whose public key equals our new one is removed, as
    /// wireguard-go does.
    pub fn set_private_key(&mut self, key: Option<PrivateKey>) {
        let key = key.filter(|k| !k.is_zero());
        match (&self.identity, &key) {
            (Some(cur), Some(new)) if cur.private.ct_eq(new) => return,
            (None, None) => return,
            _ => {}
        }
        self.identity = key.map(StaticIdentity::new);
        self.checker = self
            .identity
            .as_ref()
            .map(|i| CookieChecker::new(&i.public));
        if let Some(own) = self.public_key() {
            if let Some(&id) = self.by_key.get(&own) {
                self.remove_peer(id);
            }
        }
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            peer.static_static = self
                .identity
                .as_ref()
                .and_then(|i| i.static_static(&peer.public));
            let freed = peer.clear_sessions();
            free_indices(&mut self.indices, freed);
            // The sessions are gone: a packet must be able to start a handshake with the new
            // key at once, not wait out REKEY_TIMEOUT since the last initiation (the kernel's
            // and wireguard-go's expire_current_peer_keypairs reset it too).
            peer.last_initiation_sent = None;
        }
    }

    /// Adds a peer, or returns the existing one with this key.
    pub fn add_peer(&mut self, public: PublicKey) -> PeerId {
        if let Some(&id) = self.by_key.get(&public) {
            return id;
        }
        let id = PeerId(self.next_peer_id);
        // Wraps past ELSEWHERE's number (after four billion peers), never onto it.
        self.next_peer_id = self.next_peer_id.wrapping_add(1) % ELSEWHERE.0;
        let ss = self
            .identity
            .as_ref()
            .and_then(|i| i.static_static(&public));
        self.peers.insert(id, Peer::new(public, ss));
        self.by_key.insert(public, id);
        id
    }

    /// The peer with this public key.
    pub fn peer_id(&self, public: &PublicKey) -> Option<PeerId> {
        self.by_key.get(public).copied()
    }

    /// All peers, in a stable order.
    pub fn peer_ids(&self) -> Vec<PeerId> {
        self.peers.keys().copied().collect()
    }

    /// Removes a peer with its sessions, queued packets and allowed IPs.
    pub fn remove_peer(&mut self, id: PeerId) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        free_indices(&mut self.indices, peer.clear_sessions());
        self.by_key.remove(&peer.public);
        self.allowed.remove_by_value(&id);
    }

    /// Removes every peer.
    pub fn remove_all_peers(&mut self) {
        for id in self.peer_ids() {
            self.remove_peer(id);
        }
    }

    /// Sets a peer's preshared key (all zeros for none).
    pub fn set_preshared_key(&mut self, id: PeerId, psk: PresharedKey) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.psk = psk;
        }
    }

    /// Sets a peer's endpoint. It also changes on its own when authenticated packets arrive
    /// from elsewhere (roaming).
    pub fn set_endpoint(&mut self, id: PeerId, endpoint: Option<Endpoint>) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.endpoint = endpoint;
        }
    }

    /// Sets the persistent keepalive interval in seconds (zero turns it off). Turning it on
    /// sends a keepalive at once, which starts a handshake if there is no session — so a peer
    /// behind NAT becomes reachable without waiting for traffic, as in wireguard-go.
    pub fn set_persistent_keepalive(&mut self, id: PeerId, secs: u16, now: Instant) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let was = p.timers.persistent_interval;
        p.timers.persistent_interval = secs;
        if secs == 0 {
            p.timers.persistent_keepalive = None;
        } else if was == 0 {
            self.send_keepalive(id, now);
        }
    }

    /// Routes `addr/cidr` to a peer (moving it from another peer if needed).
    ///
    /// # Errors
    /// [`AllowedIpsError::PrefixTooLong`] when `cidr` exceeds the address length.
    pub fn add_allowed_ip(
        &mut self,
        id: PeerId,
        addr: IpAddr,
        cidr: u8,
    ) -> Result<(), AllowedIpsError> {
        if !self.peers.contains_key(&id) {
            return Ok(());
        }
        self.allowed.insert(addr, cidr, id)
    }

    /// Removes `addr/cidr` if this peer owns it (the UAPI's `allowed_ip=-…`).
    pub fn remove_allowed_ip(&mut self, id: PeerId, addr: IpAddr, cidr: u8) {
        if let Some(owner) = self.allowed.remove(addr, cidr) {
            if owner != id {
                // Someone else's prefix: put it back untouched.
                let _ = self.allowed.insert(addr, cidr, owner);
            }
        }
    }

    /// Removes every allowed IP of a peer.
    pub fn clear_allowed_ips(&mut self, id: PeerId) {
        self.allowed.remove_by_value(&id);
    }

    /// The peer that `addr` routes to.
    pub fn route(&self, addr: IpAddr) -> Option<PeerId> {
        self.allowed
            .lookup(addr)
            .copied()
            .filter(|&id| id != ELSEWHERE)
    }

    /// What the UAPI reports about a peer.
    pub fn peer_info(&self, id: PeerId) -> Option<PeerInfo> {
        let p = self.peers.get(&id)?;
        Some(PeerInfo {
            public_key: p.public,
            preshared_key: p.psk.clone(),
            endpoint: p.endpoint,
            last_handshake: p.last_handshake.map(|t| self.unix_time(t)),
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            persistent_keepalive: p.timers.persistent_interval,
            allowed_ips: self.allowed.prefixes_of(&id),
        })
    }

    /// Whether the device is in the under-load mode that demands cookies.
    pub fn is_under_load(&self, now: Instant) -> bool {
        self.queue.len() >= UNDER_LOAD_QUEUE_LEN || self.under_load_until.is_some_and(|t| now < t)
    }

    /// Encrypts an IP packet read from the TUN.
    ///
    /// `buf[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + len]` holds the packet; the buffer must
    /// have room behind it for padding and the tag ([`crate::buffer_len_for`]). On
    /// [`Encapsulated::Send`], the message is `buf[..len]`.
    pub fn encapsulate(&mut self, now: Instant, buf: &mut [u8], len: usize) -> Encapsulated {
        let Some(packet) = buf.get(TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + len) else {
            return self.tx_drop(TxDrop::Malformed);
        };
        let Some(dst) = ip::destination(packet) else {
            return self.tx_drop(TxDrop::Malformed);
        };
        let Some(id) = self.route(dst) else {
            return self.tx_drop(TxDrop::NoRoute);
        };
        let mtu = self.mtu;
        let Some(peer) = self.peers.get_mut(&id) else {
            return self.tx_drop(TxDrop::NoRoute);
        };
        let Some(endpoint) = peer.endpoint else {
            return self.tx_drop(TxDrop::NoEndpoint);
        };
        if !peer.can_send(now) || !peer.staged.is_empty() {
            // Behind earlier staged packets (order matters), or waiting for a session.
            let copy = packet.to_vec();
            if peer.stage(copy) {
                self.stats.tx_staged_overflow += 1;
            }
            if peer.can_send(now) {
                self.flush_staged(id, now);
            } else {
                self.send_initiation(id, now, false);
            }
            return Encapsulated::Staged(id);
        }
        let Some(session) = peer.current.as_mut() else {
            return self.tx_drop(TxDrop::NoSession);
        };
        let Some(n) = session.seal(buf, len, mtu) else {
            return self.tx_drop(TxDrop::BufferTooSmall);
        };
        let rekey = session.wants_rekey_on_send(now);
        let j = jitter(&mut self.rng);
        peer.tx_bytes += n as u64;
        if len > 0 {
            peer.timers.data_sent(now, j);
        }
        peer.timers.authenticated_sent();
        peer.timers.authenticated_traversal(now);
        if rekey {
            self.send_initiation(id, now, false);
        }
        Encapsulated::Send {
            peer: id,
            endpoint,
            len: n,
        }
    }

    fn tx_drop(&mut self, why: TxDrop) -> Encapsulated {
        self.stats.count_tx(why);
        Encapsulated::Dropped(why)
    }

    fn rx_drop(&mut self, why: RxDrop) -> Decapsulated {
        self.stats.count_rx(why);
        Decapsulated::Dropped(why)
    }

    /// Processes a datagram read from the network (already known to be WireGuard, see
    /// [`crate::demux`]). Transport data is decrypted in place.
    pub fn decapsulate(
        &mut self,
        now: Instant,
        from: Endpoint,
        datagram: &mut [u8],
    ) -> Decapsulated {
        let (receiver, counter) = match Message::parse(datagram) {
            Err(_) => return self.rx_drop(RxDrop::Malformed),
            Ok(Message::Initiation(_)) | Ok(Message::Response(_)) => {
                return self.accept_handshake(now, from, datagram);
            }
            Ok(Message::CookieReply(reply)) => {
                let consumed = self
                    .indices
                    .get(&reply.receiver())
                    .and_then(|id| self.peers.get_mut(id))
                    .is_some_and(|p| p.cookie.consume_reply(&reply, now));
                if !consumed {
                    return self.rx_drop(RxDrop::BadCookieReply);
                }
                self.stats.rx_cookie_replies += 1;
                return Decapsulated::Handshake;
            }
            Ok(Message::Transport(t)) => (t.receiver(), t.counter()),
        };
        let total = datagram.len();
        let Some(&id) = self.indices.get(&receiver) else {
            return self.rx_drop(RxDrop::UnknownIndex);
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return self.rx_drop(RxDrop::UnknownIndex);
        };
        let Some((slot, session)) = peer.session_mut(receiver) else {
            return self.rx_drop(RxDrop::UnknownIndex);
        };
        if !session.can_receive(now) {
            return self.rx_drop(RxDrop::Expired);
        }
        let Some(payload) = datagram.get_mut(TRANSPORT_HEADER_LEN..) else {
            return self.rx_drop(RxDrop::Malformed);
        };
        let n = match session.open(counter, payload) {
            Ok(n) => n,
            Err(OpenError::Replay) => return self.rx_drop(RxDrop::Replay),
            Err(OpenError::Auth) => return self.rx_drop(RxDrop::DecryptFailed),
        };
        peer.rx_bytes += total as u64;
        peer.endpoint = Some(from);
        peer.timers.authenticated_received();
        peer.timers.authenticated_traversal(now);
        let mut confirmed = false;
        if slot == Slot::Next {
            let freed = peer.confirm_next();
            free_indices(&mut self.indices, freed);
            peer.timers.handshake_complete();
            peer.last_handshake = Some(now);
            confirmed = true;
        }
        let rekey = !peer.sent_lastminute_handshake
            && peer.current.as_ref().is_some_and(|s| {
                s.initiator && now.saturating_duration_since(s.created) >= REKEY_ON_RECEIVE_AGE
            });
        if rekey {
            peer.sent_lastminute_handshake = true;
        }
        let verdict = if n == 0 {
            Decapsulated::Keepalive(id)
        } else {
            let inner = datagram
                .get(TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + n)
                .and_then(ip::length_and_source);
            match inner {
                None => {
                    self.stats.count_rx(RxDrop::BadInnerPacket);
                    Decapsulated::Dropped(RxDrop::BadInnerPacket)
                }
                Some((_, src)) if self.allowed.lookup(src) != Some(&id) => {
                    self.stats.count_rx(RxDrop::SourceNotAllowed);
                    Decapsulated::Dropped(RxDrop::SourceNotAllowed)
                }
                Some((len, _)) => {
                    if let Some(p) = self.peers.get_mut(&id) {
                        p.timers.data_received(now);
                    }
                    Decapsulated::Packet {
                        peer: id,
                        start: TRANSPORT_HEADER_LEN,
                        len,
                    }
                }
            }
        };
        if confirmed {
            self.flush_staged(id, now);
        }
        if rekey {
            self.send_initiation(id, now, false);
        }
        verdict
    }

    /// The next time [`Device::handle_timeout`] has work: now, if handshakes are queued.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = self
            .peers
            .values()
            .filter_map(|p| p.timers.next_deadline())
            .min();
        if self.queue.is_empty() {
            timers
        } else {
            // Queued handshakes are due at once; the earliest possible instant says so.
            Some(timers.map_or(self.clock_base.0, |t| t.min(self.clock_base.0)))
        }
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }
}
