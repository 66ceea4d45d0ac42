//! The DERP server as a sans-IO state machine.
//!
//! The server owns every rule of `derp/derpserver` that does not need a socket: who is
//! connected under which key, which connection of a duplicated key gets the traffic, where a
//! packet goes (a local client, a mesh peer server, or nowhere — counted by reason), the bounded
//! per-client queues, PeerGone/PeerPresent bookkeeping, keep-alive timing and the privileged
//! frames of mesh peers. The shell (`weft-derper`: TLS, HTTP upgrade, WebSocket, one reader and
//! one writer per connection) does the handshake I/O, admission checks and timeouts, and carries
//! out what the server returns. Nothing here reads the clock or the OS: `now` is an argument and
//! randomness (nonces, keep-alive jitter) comes from a generator seeded in [`Server::new`].
//!
//! # Calling contract
//! 1. On a new connection write [`Server::write_server_key`], read until
//!    [`Server::read_client_info`] returns the client's key and info, run admission (mesh peers —
//!    [`Server::is_mesh_peer`] — skip it), then [`Server::accept`] to get a [`ConnId`].
//! 2. Feed bytes the client sends to [`Server::handle_input`] (or parsed frames to
//!    [`Server::handle_frame`]); on an error close the connection.
//! 3. After any `handle_*` call, drain [`Server::poll_event`]: [`Event::Wake`] means a connection
//!    has frames to write — call [`Server::poll_transmit`] for it until it reports nothing more;
//!    [`Event::Close`] asks the shell to close a connection; [`Event::Forward`] hands a packet to
//!    the shell's mesh client for another server of the region.
//! 4. Call [`Server::handle_timeout`] at [`Server::poll_timeout`] (keep-alives).
//! 5. When a connection ends for any reason, call [`Server::disconnect`].
//! 6. The shell's mesh clients (one [`crate::client::Client`] per other server, watching its
//!    connections) report [`Server::mesh_peer_present`], [`Server::mesh_peer_gone`] and
//!    [`Server::mesh_link_lost`].
//!
//! # Semantics (as upstream)
//! * Per-client queues hold 32 packets each, one for disco and one for everything else; when
//!   one is full the oldest packet is dropped (a slow client loses its own packets and never
//!   stalls the sender or anybody else).
//! * Duplicate connections for one key: "last writer is active". All stay open; packets go to
//!   the connection that most recently sent a frame, or the newest one until any sends.
//! * When a key leaves the region (its last local connection closes and no mesh peer has it),
//!   every client that received packets from it gets PeerGone(Disconnected).
//! * An undeliverable disco packet is answered with PeerGone(NotHere), at most 1/s (burst 3) per
//!   client. Forwarded packets are never forwarded again.
//! * Only connections whose ClientInfo carried this server's mesh key may send ForwardPacket,
//!   WatchConns and ClosePeer; anyone else sending them is disconnected.
//! * Frame types a client has no business sending are ignored, as upstream's server does.
//! * An optional per-client receive rate limit ([`RateLimit`]; mesh peers exempt) pauses
//!   reading rather than dropping, as upstream's does.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use weft_keys::{PrivateKey, PublicKey};

use crate::frame::{
    self, frame_type as ft, looks_like_disco, Frame, FrameError, PeerEndpoint, PeerGoneReason,
    PeerPresentFlags, MAX_CLIENT_INFO_LEN, SERVER_MAX_FRAME_LEN,
};
use crate::handshake::{self, ClientInfo, HandshakeError, MeshKey, ServerInfo};

mod ratelimit;
mod stats;
pub use ratelimit::RateLimit;
use ratelimit::TokenBucket;
pub use stats::{DropCount, DropReason, DropStats, ServerStats};

/// A connection the server accepted. Ids are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// The shell's mesh client link to another server of the region (the shell picks the ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MeshLinkId(pub u64);

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The server's node private key (its DERP identity).
    pub private_key: PrivateKey,
    /// The region's mesh key; `None` disables meshing (nobody is privileged).
    pub mesh_key: Option<MeshKey>,
    /// Packets each per-client queue holds (upstream: 32).
    pub send_queue_depth: usize,
    /// Keep-alive interval (upstream: 60 s) ...
    pub keep_alive: Duration,
    /// ... plus a per-connection random jitter below this (upstream: 5 s).
    pub keep_alive_jitter: Duration,
    /// Per-client receive limit (mesh peers exempt); `None` for no limit, the default.
    pub rate_limit: Option<RateLimit>,
}

impl ServerConfig {
    /// Upstream's defaults for `private_key`, without a mesh key.
    pub fn new(private_key: PrivateKey) -> Self {
        Self {
            private_key,
            mesh_key: None,
            send_queue_depth: 32,
            keep_alive: Duration::from_secs(60),
            keep_alive_jitter: Duration::from_secs(5),
            rate_limit: None,
        }
    }
}

/// What the shell knows about a connection besides its handshake.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnOptions {
    /// The client's address, reported to mesh watchers.
    pub remote: Option<SocketAddr>,
    /// The client sent an `Ideal-Node` header: this is not its region's first node.
    pub not_ideal: bool,
}

/// Something the shell must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The connection has frames to write: call [`Server::poll_transmit`].
    Wake(ConnId),
    /// Close this connection (ClosePeer from a mesh peer), then call [`Server::disconnect`].
    Close(ConnId),
    /// Send this packet to another server of the region as a ForwardPacket frame.
    Forward {
        /// The mesh link that reaches `dst`.
        link: MeshLinkId,
        /// Original sender.
        src: PublicKey,
        /// Destination.
        dst: PublicKey,
        /// The packet.
        packet: Vec<u8>,
    },
}

/// Why the server refused input on a connection. The shell closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A malformed or oversize frame.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The handshake frame did not open or parse.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// The first frame was not ClientInfo.
    #[error("expected ClientInfo, got frame type {0:#04x}")]
    NotClientInfo(u8),
    /// A privileged frame from a connection without the mesh key.
    #[error("frame type {0:#04x} needs the mesh key")]
    NotPermitted(u8),
    /// The connection id is not (or no longer) known.
    #[error("unknown connection")]
    UnknownConn,
}

#[derive(Debug)]
struct Queued {
    src: PublicKey,
    data: Vec<u8>,
}

/// One PeerPresent/PeerGone owed to a watcher.
#[derive(Debug, Clone, Copy)]
struct PeerChange {
    peer: PublicKey,
    present: Option<PeerEndpoint>,
}

#[derive(Debug)]
struct Conn {
    key: PublicKey,
    can_mesh: bool,
    flags: PeerPresentFlags,
    remote: Option<SocketAddr>,
    preferred: bool,
    /// Pre-encoded frames written first (the ServerInfo).
    pre: Vec<u8>,
    packets: VecDeque<Queued>,
    disco: VecDeque<Queued>,
    pong: Option<[u8; 8]>,
    peer_gone: VecDeque<(PublicKey, PeerGoneReason)>,
    mesh_updates: VecDeque<PeerChange>,
    keep_alive_due: bool,
    health: Option<Vec<u8>>,
    restarting: Option<(u32, u32)>,
    keep_alive_period: Duration,
    next_keep_alive: Instant,
    /// Keys this connection received packets from (to tell it when they leave).
    saw_src: BTreeSet<PublicKey>,
    /// PeerGone(NotHere) token bucket: milli-tokens and last refill.
    not_here_tokens: u64,
    not_here_at: Instant,
    woken: bool,
    /// Receive limit, and when reading may resume after it ran dry.
    bucket: Option<TokenBucket>,
    paused_until: Option<Instant>,
}

impl Conn {
    fn has_output(&self) -> bool {
        !self.pre.is_empty()
            || !self.packets.is_empty()
            || !self.disco.is_empty()
            || self.pong.is_some()
            || !self.peer_gone.is_empty()
            || !self.mesh_updates.is_empty()
            || self.keep_alive_due
            || self.health.is_some()
            || self.restarting.is_some()
    }

    fn endpoint(&self) -> PeerEndpoint {
        PeerEndpoint {
            addr: self
                .remote
                .unwrap_or_else(|| SocketAddr::from(([0u16; 8], 0))),
            flags: Some(self.flags),
        }
    }
}

/// The connections of one key.
#[derive(Debug, Default)]
struct ClientSet {
    /// Every open connection, oldest first.
    conns: Vec<ConnId>,
    /// The connection packets go to.
    active: Option<ConnId>,
    /// Duplicates only: the most recent to register or send.
    last: Option<ConnId>,
    /// Duplicates only: which connections sent, adjacent repeats removed.
    send_history: Vec<ConnId>,
}

enum Dest {
    Local(ConnId),
    Mesh(MeshLinkId),
    Nowhere { dup: bool },
}

const NOT_HERE_BURST: u64 = 3000; // milli-tokens: burst of 3, one per second

/// The DERP server state machine. See the module documentation for the calling contract.
pub struct Server {
    config: ServerConfig,
    public_key: PublicKey,
    rng: rand_chacha::ChaCha20Rng,
    next_conn: u64,
    conns: BTreeMap<ConnId, Conn>,
    clients: BTreeMap<PublicKey, ClientSet>,
    /// Mesh links that have each key, first-registered preferred.
    forwarders: BTreeMap<PublicKey, Vec<MeshLinkId>>,
    /// For each key, the connections that received packets from it.
    peer_gone_watchers: BTreeMap<PublicKey, BTreeSet<ConnId>>,
    watchers: BTreeSet<ConnId>,
    timers: BTreeSet<(Instant, ConnId)>,
    events: VecDeque<Event>,
    stats: ServerStats,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("public_key", &self.public_key)
            .field("conns", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Makes a server. `seed` seeds the generator for ServerInfo nonces and keep-alive jitter;
    /// the shell passes 32 bytes from the OS.
    pub fn new(config: ServerConfig, seed: [u8; 32]) -> Self {
        Self {
            public_key: config.private_key.public_key(),
            config,
            rng: rand_chacha::ChaCha20Rng::from_seed(seed),
            next_conn: 1,
            conns: BTreeMap::new(),
            clients: BTreeMap::new(),
            forwarders: BTreeMap::new(),
            peer_gone_watchers: BTreeMap::new(),
            watchers: BTreeSet::new(),
            timers: BTreeSet::new(),
            events: VecDeque::new(),
            stats: ServerStats::default(),
        }
    }

    // --- getters -------------------------------------------------------------------------

    /// The server's public key (sent in ServerKey and in the HTTP upgrade response).
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Whether `key` has at least one local connection.
    pub fn is_connected(&self, key: &PublicKey) -> bool {
        self.clients.contains_key(key)
    }

    /// The connection packets for `key` currently go to.
    pub fn active_conn(&self, key: &PublicKey) -> Option<ConnId> {
        self.clients.get(key).and_then(|s| s.active)
    }

    /// Whether the client presented this region's mesh key (and so skips admission checks).
    pub fn is_mesh_peer(&self, info: &ClientInfo) -> bool {
        match (&self.config.mesh_key, &info.mesh_key) {
            (Some(ours), Some(theirs)) => ours.ct_eq(theirs),
            _ => false,
        }
    }

    // --- handshake -----------------------------------------------------------------------

    /// Appends the ServerKey frame, the first thing written on every connection.
    pub fn write_server_key(&self, out: &mut Vec<u8>) {
        // A ServerKey frame has a fixed small size; encoding cannot fail.
        let _ = Frame::ServerKey {
            key: self.public_key,
        }
        .encode_to_vec(out);
    }

    /// Reads the client's first frame from `buf`: `Ok(None)` until it is complete, then the
    /// client's key, its opened ClientInfo and the bytes consumed.
    ///
    /// # Errors
    /// [`ServerError::NotClientInfo`] for another frame type, [`ServerError::Frame`] for a frame
    /// above 256 KiB or shorter than key + nonce, [`ServerError::Handshake`] when the box does
    /// not open with the announced key or the JSON is bad.
    pub fn read_client_info(
        &self,
        buf: &[u8],
    ) -> Result<Option<(PublicKey, ClientInfo, usize)>, ServerError> {
        parse_client_info(&self.config.private_key, buf)
    }

    /// Registers an admitted client and queues its ServerInfo frame.
    pub fn accept(
        &mut self,
        now: Instant,
        key: PublicKey,
        info: &ClientInfo,
        opts: ConnOptions,
    ) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let can_mesh = self.is_mesh_peer(info);
        let mut flags = 0;
        if info.is_prober {
            flags |= PeerPresentFlags::IS_PROBER;
        }
        if can_mesh {
            flags |= PeerPresentFlags::IS_MESH_PEER;
        }
        if opts.not_ideal {
            flags |= PeerPresentFlags::NOT_IDEAL;
        }
        if flags == 0 {
            flags = PeerPresentFlags::IS_REGULAR;
        }
        let mut nonce = [0u8; frame::NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        let mut pre = Vec::new();
        // Sealing a few bytes of JSON cannot fail; a client without ServerInfo still works.
        let _ = handshake::write_server_info(
            &self.config.private_key,
            &key,
            &ServerInfo::current(),
            nonce,
            &mut pre,
        );
        let jitter_ms = u64::try_from(self.config.keep_alive_jitter.as_millis()).unwrap_or(0);
        let jitter = Duration::from_millis(self.rng.next_u64() % jitter_ms.max(1));
        let period = self.config.keep_alive + jitter;
        let conn = Conn {
            key,
            can_mesh,
            flags: PeerPresentFlags(flags),
            remote: opts.remote,
            preferred: false,
            pre,
            packets: VecDeque::new(),
            disco: VecDeque::new(),
            pong: None,
            peer_gone: VecDeque::new(),
            mesh_updates: VecDeque::new(),
            keep_alive_due: false,
            health: None,
            restarting: None,
            keep_alive_period: period,
            next_keep_alive: now + period,
            saw_src: BTreeSet::new(),
            not_here_tokens: NOT_HERE_BURST,
            not_here_at: now,
            woken: false,
            bucket: self
                .config
                .rate_limit
                .filter(|l| !can_mesh && l.bytes_per_second > 0)
                .map(|l| TokenBucket::new(l, now)),
            paused_until: None,
        };
        let endpoint = conn.endpoint();
        self.timers.insert((conn.next_keep_alive, id));
        self.conns.insert(id, conn);
        self.wake(id);

        let set = self.clients.entry(key).or_default();
        match set.conns.as_slice() {
            [] => {}
            [was] => {
                set.send_history = vec![*was];
                self.stats.duplicate_client_keys += 1;
                self.stats.duplicate_client_conns += 2;
            }
            _ => {
                set.send_history.push(id);
                self.stats.duplicate_client_conns += 1;
            }
        }
        set.conns.push(id);
        if set.conns.len() > 1 {
            set.last = Some(id);
        }
        set.active = Some(id);
        self.stats.accepts += 1;
        self.stats.current_clients += 1;
        self.broadcast(key, Some(endpoint));
        id
    }

    // --- input ---------------------------------------------------------------------------

    /// Handles every complete frame at the front of `buf` and returns how many bytes it used
    /// (keep the rest for the next call).
    ///
    /// With a [`RateLimit`], it stops before a frame the client's bucket cannot pay for: the
    /// unused bytes stay with the shell, which stops reading from the socket until
    /// [`Server::paused_until`] and then calls again.
    ///
    /// # Errors
    /// Any [`ServerError`]: close the connection and call [`Server::disconnect`].
    pub fn handle_input(
        &mut self,
        conn: ConnId,
        now: Instant,
        buf: &[u8],
    ) -> Result<usize, ServerError> {
        let mut used = 0;
        while let Some((raw, n)) =
            frame::next_frame(buf.get(used..).unwrap_or_default(), SERVER_MAX_FRAME_LEN)?
        {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.paused_until = None;
                if let Some(bucket) = c.bucket.as_mut() {
                    if let Err(resume) = bucket.take(now, raw.payload.len()) {
                        c.paused_until = Some(resume);
                        self.stats.rate_limit_pauses += 1;
                        break;
                    }
                }
            }
            self.handle_raw(conn, now, raw)?;
            used += n;
        }
        Ok(used)
    }

    /// When reading from a rate-limited connection may resume (after [`Server::handle_input`]
    /// left bytes unused for that reason); `None` when it is not paused.
    pub fn paused_until(&self, conn: ConnId) -> Option<Instant> {
        self.conns.get(&conn).and_then(|c| c.paused_until)
    }

    /// Handles one frame from a client.
    ///
    /// # Errors
    /// As [`Server::handle_input`].
    pub fn handle_frame(
        &mut self,
        conn: ConnId,
        now: Instant,
        frame: &Frame<'_>,
    ) -> Result<(), ServerError> {
        let Some(c) = self.conns.get(&conn) else {
            return Err(ServerError::UnknownConn);
        };
        let (key, can_mesh) = (c.key, c.can_mesh);
        self.note_activity(conn, key);
        match *frame {
            Frame::NotePreferred { preferred } => self.set_preferred(conn, preferred),
            Frame::SendPacket { dst, packet } => self.send_packet(conn, now, key, dst, packet),
            Frame::ForwardPacket { src, dst, packet } => {
                if !can_mesh {
                    return Err(ServerError::NotPermitted(ft::FORWARD_PACKET));
                }
                self.forwarded_packet(conn, now, src, dst, packet);
            }
            Frame::WatchConns => {
                if !can_mesh {
                    return Err(ServerError::NotPermitted(ft::WATCH_CONNS));
                }
                self.add_watcher(conn, key);
            }
            Frame::ClosePeer { peer } => {
                if !can_mesh {
                    return Err(ServerError::NotPermitted(ft::CLOSE_PEER));
                }
                if let Some(set) = self.clients.get(&peer) {
                    self.events
                        .extend(set.conns.iter().map(|c| Event::Close(*c)));
                }
            }
            Frame::Ping(data) => {
                self.stats.pings_received += 1;
                if let Some(c) = self.conns.get_mut(&conn) {
                    if c.pong.is_none() {
                        c.pong = Some(data);
                        self.wake(conn);
                    } else {
                        // Pinging faster than we write pongs: ignore, as upstream.
                        self.stats.pings_ignored += 1;
                    }
                }
            }
            _ => self.stats.unknown_frames += 1,
        }
        Ok(())
    }

    fn handle_raw(
        &mut self,
        conn: ConnId,
        now: Instant,
        raw: frame::RawFrame<'_>,
    ) -> Result<(), ServerError> {
        match raw.frame_type {
            ft::NOTE_PREFERRED
            | ft::SEND_PACKET
            | ft::FORWARD_PACKET
            | ft::WATCH_CONNS
            | ft::CLOSE_PEER
            | ft::PING => self.handle_frame(conn, now, &raw.parse()?),
            other => {
                // Not a client→server frame: skipped unparsed, as upstream's server does.
                self.handle_frame(
                    conn,
                    now,
                    &Frame::Unknown {
                        frame_type: other,
                        payload: raw.payload,
                    },
                )
            }
        }
    }

    fn note_activity(&mut self, conn: ConnId, key: PublicKey) {
        let Some(set) = self.clients.get_mut(&key) else {
            return;
        };
        if set.conns.len() < 2 {
            return;
        }
        set.last = Some(conn);
        set.active = Some(conn);
        if set.send_history.last() != Some(&conn) {
            set.send_history.push(conn);
        }
    }

    fn set_preferred(&mut self, conn: ConnId, preferred: bool) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.preferred != preferred {
                c.preferred = preferred;
                if preferred {
                    self.stats.current_home_clients += 1;
                } else {
                    self.stats.current_home_clients -= 1;
                }
            }
        }
    }

    fn lookup(&self, dst: &PublicKey, may_forward: bool) -> Dest {
        match self.clients.get(dst) {
            Some(set) => match set.active {
                Some(c) => Dest::Local(c),
                None => Dest::Nowhere {
                    dup: set.conns.len() > 1,
                },
            },
            None => match self.forwarders.get(dst).and_then(|l| l.first()) {
                Some(link) if may_forward => Dest::Mesh(*link),
                _ => Dest::Nowhere { dup: false },
            },
        }
    }

    fn send_packet(
        &mut self,
        from: ConnId,
        now: Instant,
        src: PublicKey,
        dst: PublicKey,
        p: &[u8],
    ) {
        self.stats.packets_received += 1;
        self.stats.bytes_received += p.len() as u64;
        match self.lookup(&dst, true) {
            Dest::Local(to) => self.enqueue(to, src, p),
            Dest::Mesh(link) => {
                self.stats.packets_forwarded_out += 1;
                self.events.push_back(Event::Forward {
                    link,
                    src,
                    dst,
                    packet: p.to_vec(),
                });
            }
            Dest::Nowhere { dup } => {
                let reason = if dup {
                    DropReason::DuplicateClient
                } else {
                    self.peer_gone_not_here(from, now, dst, p);
                    DropReason::UnknownDest
                };
                self.stats.drops.record(reason, p);
            }
        }
    }

    fn forwarded_packet(
        &mut self,
        from: ConnId,
        now: Instant,
        src: PublicKey,
        dst: PublicKey,
        p: &[u8],
    ) {
        self.stats.packets_forwarded_in += 1;
        match self.lookup(&dst, false) {
            Dest::Local(to) => self.enqueue(to, src, p),
            Dest::Mesh(_) | Dest::Nowhere { dup: false } => {
                self.peer_gone_not_here(from, now, dst, p);
                self.stats.drops.record(DropReason::UnknownDestOnForward, p);
            }
            Dest::Nowhere { dup: true } => self.stats.drops.record(DropReason::DuplicateClient, p),
        }
    }

    /// Queues a packet for `to`; a full queue loses its oldest packet.
    fn enqueue(&mut self, to: ConnId, src: PublicKey, p: &[u8]) {
        let depth = self.config.send_queue_depth.max(1);
        let Some(c) = self.conns.get_mut(&to) else {
            self.stats.drops.record(DropReason::GoneDisconnected, p);
            return;
        };
        let queue = if looks_like_disco(p) {
            &mut c.disco
        } else {
            &mut c.packets
        };
        // A full queue: the dropped head's buffer carries the new packet (no allocation for a
        // client that is falling behind, the case where the relay is busiest).
        let mut spare = None;
        while queue.len() >= depth {
            if let Some(old) = queue.pop_front() {
                self.stats.drops.record(DropReason::QueueHead, &old.data);
                spare = Some(old.data);
            }
        }
        let data = match spare {
            Some(mut buf) => {
                buf.clear();
                buf.extend_from_slice(p);
                buf
            }
            None => p.to_vec(),
        };
        queue.push_back(Queued { src, data });
        if c.saw_src.insert(src) {
            self.peer_gone_watchers.entry(src).or_default().insert(to);
        }
        self.wake(to);
    }

    /// PeerGone(NotHere) for an undeliverable disco packet, rate-limited per connection.
    fn peer_gone_not_here(&mut self, conn: ConnId, now: Instant, dst: PublicKey, p: &[u8]) {
        if !looks_like_disco(p) {
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let elapsed = u64::try_from(now.saturating_duration_since(c.not_here_at).as_millis())
            .unwrap_or(u64::MAX);
        c.not_here_tokens = c
            .not_here_tokens
            .saturating_add(elapsed)
            .min(NOT_HERE_BURST);
        c.not_here_at = now.max(c.not_here_at);
        if c.not_here_tokens < 1000 {
            return;
        }
        c.not_here_tokens -= 1000;
        c.peer_gone.push_back((dst, PeerGoneReason::NotHere));
        self.wake(conn);
    }

    fn add_watcher(&mut self, conn: ConnId, key: PublicKey) {
        if key == self.public_key {
            return; // our own mesh client dialled us
        }
        let present: Vec<PeerChange> = self
            .clients
            .iter()
            .filter_map(|(k, set)| {
                let c = self.conns.get(&set.active?)?;
                Some(PeerChange {
                    peer: *k,
                    present: Some(c.endpoint()),
                })
            })
            .collect();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.mesh_updates.extend(present);
        }
        self.watchers.insert(conn);
        self.wake(conn);
    }

    fn broadcast(&mut self, peer: PublicKey, present: Option<PeerEndpoint>) {
        let watchers: Vec<ConnId> = self.watchers.iter().copied().collect();
        for w in watchers {
            if let Some(c) = self.conns.get_mut(&w) {
                c.mesh_updates.push_back(PeerChange { peer, present });
                self.wake(w);
            }
        }
    }

    fn wake(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.woken {
                c.woken = true;
                self.events.push_back(Event::Wake(conn));
            }
        }
    }
}

mod lifecycle;
mod output;

/// [`Server::read_client_info`] without the server: what a shell calls outside the lock that
/// guards its [`Server`], because opening the box costs an X25519 and a pass over up to the
/// frame limit, for a client not yet admitted.
///
/// # Errors
/// As [`Server::read_client_info`].
pub fn parse_client_info(
    private_key: &PrivateKey,
    buf: &[u8],
) -> Result<Option<(PublicKey, ClientInfo, usize)>, ServerError> {
    let Some((raw, used)) = frame::next_frame(buf, MAX_CLIENT_INFO_LEN as u32)? else {
        return Ok(None);
    };
    if raw.frame_type != ft::CLIENT_INFO {
        return Err(ServerError::NotClientInfo(raw.frame_type));
    }
    let Frame::ClientInfo { key, sealed } = raw.parse()? else {
        return Err(ServerError::NotClientInfo(raw.frame_type));
    };
    let info = handshake::open_client_info(private_key, &key, sealed)?;
    Ok(Some((key, info, used)))
}

#[cfg(test)]
mod tests;
