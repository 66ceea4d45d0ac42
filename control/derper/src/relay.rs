//! The DERP byte stream of one connection, carried between a socket and the shared core.
//!
//! Every rule of the relay is in `weft_derp::server::Server`; this module only moves bytes.
//! One [`weft_derp::server::Server`] serves all connections behind one mutex (correctness
//! first: every call is short and does no I/O; lock contention under many busy clients is a
//! known follow-up). Per connection a reader task feeds [`Server::handle_input`] and a writer
//! task, woken through a [`Notify`] when the core raises `Event::Wake`, drains
//! [`Server::poll_transmit`] into a local buffer and writes it outside the lock, with a write
//! timeout (2 s, 30 s for mesh peers, as upstream), so a slow client only ever stalls itself:
//! the core drops the oldest packets of its own bounded queues. A timer task drives the
//! keep-alives. The lock is a std mutex and is never held across an `.await`.
//!
//! Fairness between a busy sender and its receivers: after each read it passed to the core, the
//! reader yields to the runtime. Without that, a reader that always finds data keeps its worker
//! thread, and the writer it just woke waits in that worker's (unstealable) LIFO slot until the
//! task budget runs out — by then the reader has overwritten the receiver's 32-packet queue many
//! times. Measured with `weft-perf relay` (1280-byte packets, unpaced sender, 2 cores): TLS
//! goodput 1.1 → 6.5 Gb/s, the share of received packets relayed 7 % → 97 %. Nothing waits on a
//! receiver: the queues and their oldest-first drops are the core's, unchanged.
//!
//! Mesh links ([`crate::mesh`]) register their `weft_derphttp::DerpSender` here; the core's
//! `Event::Forward` is carried out under the lock with the sender's non-waiting
//! `try_forward_packet` (the link's own mutex is only ever taken inside this one, never the
//! other way round, so the two cannot deadlock). When the link is full, the reader whose input
//! produced the packet sends it after releasing the lock, waiting for room: the sending client
//! is then not read, and TCP pushes back on it, as upstream's blocking ForwardPacket does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Notify};
use weft_derp::server::{ConnId, ConnOptions, Event, MeshLinkId, Server};
use weft_derphttp::{DerpSender, SendError};
use weft_keys::PublicKey;

use crate::verify::Verifier;

/// How long a client has to send its ClientInfo (upstream: 10 s).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Write timeout for regular clients (upstream's TCP write timeout).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Write timeout for mesh peers.
pub const MESH_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes drained from the core per write.
const WRITE_CHUNK: usize = 256 << 10;
/// Bytes read from the socket per read: at most ~24 packets of 1280 bytes, fewer than a
/// receiver's 32-packet queue holds, so when the reader yields after each read (see the module
/// documentation) a woken writer can take all of it before the next read overwrites any.
const READ_CHUNK: usize = 32 << 10;
/// The most the handshake may buffer (the ClientInfo frame limit plus a header).
const MAX_HANDSHAKE_BYTES: usize = (256 << 10) + 5;

/// The clock, read only here and in the other shell modules.
#[allow(clippy::disallowed_methods)]
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// Counters of the shell itself (the core counts the relaying).
#[derive(Debug, Default)]
pub struct ShellCounters {
    /// Clients admitted by the verify URL.
    pub verify_allowed: AtomicU64,
    /// Clients the verify URL refused.
    pub verify_denied: AtomicU64,
    /// Clients refused because the verify URL failed (timeout, bad status, bad body).
    pub verify_errors: AtomicU64,
    /// Connections that ended in the handshake (bad ClientInfo, timeout, EOF).
    pub handshake_failures: AtomicU64,
    /// TLS handshakes that failed.
    pub tls_failures: AtomicU64,
    /// TLS ClientHellos dropped on a plain-HTTP listener.
    pub tls_probes_dropped: AtomicU64,
    /// Connections closed for a write timeout or error.
    pub write_failures: AtomicU64,
    /// Connections closed because the client sent bytes the core refused.
    pub input_errors: AtomicU64,
    /// HTTP requests served (every path).
    pub http_requests: AtomicU64,
    /// STUN binding requests answered.
    pub stun_answered: AtomicU64,
    /// UDP datagrams on the STUN port that were not a valid Tailscale binding request.
    pub stun_ignored: AtomicU64,
    /// Mesh links up now (a gauge).
    pub mesh_links_up: AtomicU64,
    /// Mesh links established (each reconnect counts).
    pub mesh_connects: AtomicU64,
    /// Mesh dials that failed, and established links that broke.
    pub mesh_failures: AtomicU64,
    /// Packets for a mesh peer's client dropped because the link was full or down.
    pub mesh_forward_dropped: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct ConnSignals {
    wake: Notify,
    close: watch::Sender<bool>,
}

struct Shared {
    server: Server,
    conns: BTreeMap<ConnId, Arc<ConnSignals>>,
    /// The mesh links that are up, by the id the core knows them by.
    mesh_links: BTreeMap<MeshLinkId, DerpSender>,
    /// Forwards a full link could not take, for the reader whose input made them to send
    /// once it has room (see the module documentation).
    deferred: Vec<DeferredForward>,
}

/// A packet for a mesh link that was full when the core routed it.
struct DeferredForward {
    link: DerpSender,
    src: PublicKey,
    dst: PublicKey,
    packet: Vec<u8>,
}

impl Shared {
    /// Carries out the core's events; called with the lock held, after every core call.
    fn dispatch(&mut self, counters: &ShellCounters) {
        while let Some(ev) = self.server.poll_event() {
            match ev {
                Event::Wake(id) => {
                    if let Some(s) = self.conns.get(&id) {
                        s.wake.notify_one();
                    }
                }
                Event::Close(id) => {
                    if let Some(s) = self.conns.get(&id) {
                        let _ = s.close.send(true);
                    }
                }
                Event::Forward {
                    link,
                    src,
                    dst,
                    packet,
                } => {
                    // Never waits here (the relay's lock is held). A full link defers the
                    // packet to the reader that caused it, which waits for room outside the
                    // lock; once one packet is deferred, the rest of this input follows it,
                    // so the sender's order holds. A link that is gone drops (counted).
                    let Some(tx) = self.mesh_links.get(&link) else {
                        bump(&counters.mesh_forward_dropped);
                        continue;
                    };
                    let r = if self.deferred.is_empty() {
                        tx.try_forward_packet(src, dst, &packet)
                    } else {
                        Err(SendError::Full)
                    };
                    match r {
                        Ok(()) => {}
                        Err(SendError::Full) => self.deferred.push(DeferredForward {
                            link: tx.clone(),
                            src,
                            dst,
                            packet,
                        }),
                        Err(_) => bump(&counters.mesh_forward_dropped),
                    }
                }
                _ => {}
            }
        }
    }
}

/// The shared relay: the core, the connections' wakers, admission and counters.
pub struct Relay {
    shared: Mutex<Shared>,
    /// The relay's key, to open ClientInfo boxes without holding `shared`.
    private_key: weft_keys::PrivateKey,
    timer: Notify,
    verifier: Option<Verifier>,
    /// Shell counters, for `/metrics`.
    pub counters: ShellCounters,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish_non_exhaustive()
    }
}

impl Relay {
    /// Wraps a core server.
    pub(crate) fn new(
        server: Server,
        private_key: weft_keys::PrivateKey,
        verifier: Option<Verifier>,
    ) -> Self {
        Self {
            private_key,
            shared: Mutex::new(Shared {
                server,
                conns: BTreeMap::new(),
                mesh_links: BTreeMap::new(),
                deferred: Vec::new(),
            }),
            timer: Notify::new(),
            verifier,
            counters: ShellCounters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock cannot leave the core half-updated in a way that
        // matters more than stopping the relay would; keep serving.
        match self.shared.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Runs `f` on the core (for `/metrics` and the server key).
    pub fn with_server<T>(&self, f: impl FnOnce(&Server) -> T) -> T {
        f(&self.lock().server)
    }

    /// Queues Restarting frames to every client (SIGTERM); the writers flush them.
    pub fn shutdown(&self, reconnect_in: Duration, try_for: Duration) {
        let mut g = self.lock();
        g.server.shutdown(reconnect_in, try_for);
        g.dispatch(&self.counters);
    }

    /// Closes every connection (after [`Relay::shutdown`] had its grace period).
    pub fn close_all(&self) {
        let g = self.lock();
        for s in g.conns.values() {
            let _ = s.close.send(true);
        }
    }

    /// A mesh link to another server of the region is up; packets for the keys it reports
    /// go out through `sender`.
    pub(crate) fn mesh_link_up(&self, link: MeshLinkId, sender: DerpSender) {
        self.lock().mesh_links.insert(link, sender);
        self.counters.mesh_links_up.fetch_add(1, Ordering::Relaxed);
        bump(&self.counters.mesh_connects);
    }

    /// The peer server behind `link` reported `key` connected.
    pub(crate) fn mesh_peer_present(&self, link: MeshLinkId, key: PublicKey) {
        let mut g = self.lock();
        g.server.mesh_peer_present(link, key);
        g.dispatch(&self.counters);
    }

    /// The peer server behind `link` reported `key` gone.
    pub(crate) fn mesh_peer_gone(&self, link: MeshLinkId, key: PublicKey) {
        let mut g = self.lock();
        g.server.mesh_peer_gone(link, key);
        g.dispatch(&self.counters);
    }

    /// The link broke: everything learnt through it is forgotten (clients that received from
    /// its keys hear PeerGone).
    pub(crate) fn mesh_link_down(&self, link: MeshLinkId) {
        let mut g = self.lock();
        if g.mesh_links.remove(&link).is_some() {
            self.counters.mesh_links_up.fetch_sub(1, Ordering::Relaxed);
        }
        g.server.mesh_link_lost(link);
        g.dispatch(&self.counters);
    }

    /// How many mesh links are up.
    pub fn mesh_links_up(&self) -> usize {
        self.lock().mesh_links.len()
    }

    /// Drives keep-alives forever.
    pub(crate) async fn run_timers(self: Arc<Self>) {
        loop {
            let next = self.lock().server.poll_timeout();
            let sleep = match next {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)),
                None => tokio::time::sleep(Duration::from_secs(3600)),
            };
            tokio::select! {
                () = sleep => {}
                () = self.timer.notified() => continue,
            }
            let mut g = self.lock();
            g.server.handle_timeout(now());
            g.dispatch(&self.counters);
        }
    }

    /// Serves one DERP connection after the HTTP upgrade (the 101, if any, is already written):
    /// greeting, ClientInfo, admission, then relaying until either side ends it. `pending` holds
    /// bytes already read past the HTTP request.
    pub(crate) async fn serve<S>(
        self: Arc<Self>,
        stream: S,
        remote: Option<SocketAddr>,
        opts: ConnOptions,
        mut pending: Vec<u8>,
    ) where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut hello = Vec::new();
        self.lock().server.write_server_key(&mut hello);
        let greet = async {
            wr.write_all(&hello).await?;
            wr.flush().await
        };
        if !matches!(
            tokio::time::timeout(HANDSHAKE_TIMEOUT, greet).await,
            Ok(Ok(()))
        ) {
            bump(&self.counters.handshake_failures);
            return;
        }
        let handshake = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            self.read_client_info(&mut rd, &mut pending),
        )
        .await;
        let Ok(Some((key, info))) = handshake else {
            bump(&self.counters.handshake_failures);
            return;
        };
        let mesh = self.lock().server.is_mesh_peer(&info);
        if !mesh && !self.admit(&key, remote).await {
            return;
        }
        let (close_tx, close_rx) = watch::channel(false);
        let signals = Arc::new(ConnSignals {
            wake: Notify::new(),
            close: close_tx,
        });
        let id = {
            let mut g = self.lock();
            let id = g.server.accept(now(), key, &info, opts);
            g.conns.insert(id, signals.clone());
            g.dispatch(&self.counters);
            id
        };
        self.timer.notify_one();
        tracing::debug!(conn = id.0, ?remote, mesh, "client connected");

        let write_timeout = if mesh {
            MESH_WRITE_TIMEOUT
        } else {
            WRITE_TIMEOUT
        };
        let writer = tokio::spawn(self.clone().write_loop(
            id,
            wr,
            signals.clone(),
            close_rx.clone(),
            write_timeout,
        ));
        self.read_loop(id, &mut rd, pending, close_rx).await;

        {
            let mut g = self.lock();
            g.server.disconnect(id);
            g.conns.remove(&id);
            g.dispatch(&self.counters);
        }
        let _ = signals.close.send(true);
        // Let the writer finish what it is writing (bounded by its timeout), then drop it.
        let _ = tokio::time::timeout(write_timeout, writer).await;
        tracing::debug!(conn = id.0, "client disconnected");
    }

    async fn read_client_info<R: AsyncRead + Unpin>(
        &self,
        rd: &mut R,
        pending: &mut Vec<u8>,
    ) -> Option<(weft_keys::PublicKey, weft_derp::handshake::ClientInfo)> {
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            // Outside the lock: an unadmitted client's box costs an X25519 and a pass over up
            // to the frame limit, which must not stall the relaying of everyone else.
            match weft_derp::server::parse_client_info(&self.private_key, pending) {
                Ok(Some((key, info, used))) => {
                    pending.drain(..used.min(pending.len()));
                    return Some((key, info));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!("handshake refused: {e}");
                    return None;
                }
            }
            if pending.len() > MAX_HANDSHAKE_BYTES {
                return None;
            }
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => pending.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            }
        }
    }

    /// Admission through the verify URL; failures deny and are counted.
    async fn admit(&self, key: &weft_keys::PublicKey, remote: Option<SocketAddr>) -> bool {
        let Some(v) = &self.verifier else {
            return true;
        };
        match v.admit(key, remote.map(|a| a.ip())).await {
            Ok(true) => {
                bump(&self.counters.verify_allowed);
                true
            }
            Ok(false) => {
                bump(&self.counters.verify_denied);
                tracing::info!(?remote, "client refused by the verify URL");
                false
            }
            Err(e) => {
                bump(&self.counters.verify_errors);
                tracing::warn!(?remote, "verify URL failed, client refused: {e}");
                false
            }
        }
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        id: ConnId,
        rd: &mut R,
        mut pending: Vec<u8>,
        mut close: watch::Receiver<bool>,
    ) {
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            if !pending.is_empty() {
                let (r, paused, deferred) = {
                    let mut g = self.lock();
                    let r = g.server.handle_input(id, now(), &pending);
                    let paused = g.server.paused_until(id);
                    g.dispatch(&self.counters);
                    (r, paused, std::mem::take(&mut g.deferred))
                };
                // A mesh link was full: this client waits, unread, until the link has room
                // (upstream's ForwardPacket is a blocking write, with the same effect); the
                // link's write timeout bounds the wait.
                for d in deferred {
                    tokio::select! {
                        r = d.link.forward_packet(d.src, d.dst, &d.packet) => if r.is_err() {
                            bump(&self.counters.mesh_forward_dropped);
                        },
                        _ = close.changed() => return,
                    }
                }
                match r {
                    Ok(used) => {
                        pending.drain(..used.min(pending.len()));
                        if used > 0 {
                            // Let the writers this input woke run before reading more (see
                            // the module documentation: fairness to the receivers).
                            tokio::task::yield_now().await;
                        }
                    }
                    Err(e) => {
                        bump(&self.counters.input_errors);
                        tracing::debug!(conn = id.0, "closing: {e}");
                        return;
                    }
                }
                if let Some(t) = paused {
                    // Rate limited: stop reading until the bucket refills.
                    tokio::select! {
                        () = tokio::time::sleep_until(tokio::time::Instant::from_std(t)) => continue,
                        _ = close.changed() => return,
                    }
                }
            }
            if *close.borrow() {
                return;
            }
            tokio::select! {
                r = rd.read(&mut chunk) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => pending.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                },
                _ = close.changed() => return,
            }
        }
    }

    async fn write_loop<W: AsyncWrite + Unpin>(
        self: Arc<Self>,
        id: ConnId,
        mut wr: W,
        signals: Arc<ConnSignals>,
        mut close: watch::Receiver<bool>,
        write_timeout: Duration,
    ) {
        let mut buf = Vec::with_capacity(WRITE_CHUNK);
        loop {
            loop {
                buf.clear();
                let more = self.lock().server.poll_transmit(id, &mut buf, WRITE_CHUNK);
                if !buf.is_empty() {
                    let written = tokio::time::timeout(write_timeout, async {
                        wr.write_all(&buf).await?;
                        wr.flush().await
                    })
                    .await;
                    if !matches!(written, Ok(Ok(()))) {
                        bump(&self.counters.write_failures);
                        let _ = signals.close.send(true);
                        return;
                    }
                }
                if !more {
                    break;
                }
            }
            if *close.borrow() {
                let _ = wr.shutdown().await;
                return;
            }
            tokio::select! {
                () = signals.wake.notified() => {}
                _ = close.changed() => {
                    let _ = tokio::time::timeout(write_timeout, wr.shutdown()).await;
                    return;
                }
            }
        }
    }
}
