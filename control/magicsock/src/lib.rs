//! The I/O shell around [`weft_nat::node::Node`]: one UDP socket shared by WireGuard, disco and
//! STUN, extra sockets for birthday probing, a reconnecting link to the home DERP relay and
//! links to the other regions peers call home ([`derp`]).
//!
//! Every decision is the core's; this crate moves bytes and reads the clock. [`MagicSock::recv`]
//! waits for whatever comes first — a datagram, a relayed packet, a timer of the core — hands
//! it to the core, sends what the core wants sent, and returns only what is WireGuard's.
//! [`MagicSock::send`] asks the core where a peer's packet goes now (direct, relay, or both
//! while a direct path is not yet trusted) and sends it there without waiting: a full socket
//! or relay queue drops the packet, counted, as a congested network would.
//!
//! Readers are small tasks that forward datagrams through bounded channels, so `recv` is
//! cancel-safe and can sit in a caller's `select!`. This shell copies each datagram once; it is
//! the control-plane side of the node (disco, STUN, relayed packets) and the lab's data path.
//! The io_uring data plane will feed the same core from its own receive batches.

mod derp;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use weft_keys::{PrivateKey, PublicKey};
use weft_nat::birthday::Plan;
use weft_nat::disco::DiscoPrivate;
use weft_nat::node::{Node, PeerConfig, Received, RegionId, Transmit, Via};

use derp::{DerpIn, Links};
pub use derp::{DerpRegion, HELD_MAX_AGE, HELD_WHILE_DIALLING, IDLE_CLOSE};

/// Datagrams buffered between the UDP readers and [`MagicSock::recv`]; beyond it they are
/// dropped and counted (a flood on the UDP port must not stall the relay link).
const RX_QUEUE: usize = 1024;
/// Relayed packets buffered between the DERP link and [`MagicSock::recv`]; the link waits when
/// it is full (TCP pushes back on the relay, nothing is lost).
const DERP_RX_QUEUE: usize = 1024;
/// The largest datagram read.
const MAX_DATAGRAM: usize = 65535;
/// How often the birthday sockets no longer needed are looked for and closed, while a
/// birthday plan is listening, and otherwise (a ping-learned endpoint on a birthday socket
/// expires after 45 s).
const PRUNE_INTERVAL: Duration = Duration::from_secs(1);
const PRUNE_INTERVAL_IDLE: Duration = Duration::from_secs(30);
/// Transmits sent per [`MagicSock`] call; the rest go out on the next turn of
/// [`MagicSock::recv`], which does not wait for them.
const FLUSH_BATCH: usize = 4096;

/// How to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node key (WireGuard and DERP address).
    pub node_key: PrivateKey,
    /// The disco key (fresh per start).
    pub disco_key: DiscoPrivate,
    /// The shared UDP socket's address.
    pub listen: SocketAddr,
    /// Local addresses to offer as endpoints (port 0 = the shared socket's port); empty = the
    /// addresses of every interface that is up, except loopback and IPv6 link-local.
    pub local_addrs: Vec<SocketAddr>,
    /// STUN servers.
    pub stun: Vec<SocketAddr>,
    /// The home relay.
    pub derp: Option<DerpRegion>,
    /// The rest of the DERP map: relays of other regions, dialled when a peer's home is there.
    pub derp_regions: Vec<DerpRegion>,
}

/// Why the shell could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket could not be bound.
    #[error("binding UDP {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The OS has no randomness.
    #[error("no OS randomness: {0}")]
    Random(getrandom::Error),
}

/// Where a WireGuard datagram came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Directly, from this address, on this local socket.
    Udp {
        /// Local socket index.
        socket: u16,
        /// Remote address.
        addr: SocketAddr,
    },
    /// Through the relay, from this node key.
    Derp(PublicKey),
}

/// Counters of the shell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShellStats {
    /// WireGuard datagrams sent directly.
    pub udp_out: u64,
    /// WireGuard datagrams sent through a relay (or held while its link connects).
    pub derp_out: u64,
    /// Datagrams dropped because a socket would block or failed.
    pub udp_send_errors: u64,
    /// Packets for a relay dropped: its queue full, its hold full while it connects, held too
    /// long or when the link closed, or for a region the map does not have.
    pub derp_send_drops: u64,
    /// Relay (re)connections.
    pub derp_connects: u64,
    /// Received datagrams dropped because [`MagicSock::recv`] was behind.
    pub udp_rx_dropped: u64,
    /// Receive errors on the UDP sockets (ICMP errors surface here).
    pub udp_rx_errors: u64,
    /// Packets for a region the DERP map does not have.
    pub derp_unknown_region: u64,
    /// Links opened to regions other than home.
    pub derp_links_opened: u64,
    /// Links to other regions closed after [`IDLE_CLOSE`] without sends.
    pub derp_links_closed_idle: u64,
    /// Datagrams read by a socket that has been closed (or its index reused) since: dropped.
    pub udp_rx_stale: u64,
}

/// A datagram, the index of the socket that read it and that socket's generation.
struct UdpIn(u16, u64, SocketAddr, Vec<u8>);

/// One open socket: the send half, and the task reading it.
struct Sock {
    /// A plain non-blocking socket, so a send is one syscall and fails only when the socket
    /// buffer is full (tokio's `try_send_to` also fails before the reactor has seen the socket
    /// writable once).
    send: std::net::UdpSocket,
    reader: tokio::task::JoinHandle<()>,
    /// Told apart from earlier sockets at the same index, whose datagrams may still be queued.
    generation: u64,
}

impl Drop for Sock {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The shell. See the crate documentation.
pub struct MagicSock {
    node: Node,
    /// By the core's socket index; socket 0 (the shared one) is always open, birthday
    /// sockets are closed (`None`) once the core no longer needs them.
    sockets: Vec<Option<Sock>>,
    /// When to next look for birthday sockets to close.
    next_prune: Instant,
    /// The generation of the next socket opened.
    next_generation: u64,
    rx: mpsc::Receiver<UdpIn>,
    tx: mpsc::Sender<UdpIn>,
    derp_rx: mpsc::Receiver<DerpIn>,
    derp_open: bool,
    derp: Links,
    /// The core still had transmits queued when the last flush stopped.
    backlog: bool,
    stats: Arc<Mutex<ShellStats>>,
}

impl std::fmt::Debug for MagicSock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MagicSock")
            .field("sockets", &self.open_sockets())
            .finish_non_exhaustive()
    }
}

/// The clock: read only in this shell.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

impl MagicSock {
    /// Binds the shared socket, starts the relay link and the first STUN round.
    ///
    /// # Errors
    /// [`Error::Bind`] or [`Error::Random`].
    pub async fn start(opts: Options) -> Result<Self, Error> {
        let sock = bind(opts.listen)?;
        let port = sock.local_addr().map(|a| a.port()).unwrap_or(0);
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(Error::Random)?;
        let t = now();
        let mut node = Node::new(
            opts.disco_key,
            opts.node_key.public_key(),
            opts.stun,
            seed,
            t,
        );
        let given = if opts.local_addrs.is_empty() {
            interface_endpoints(opts.listen)
        } else {
            opts.local_addrs
        };
        let locals = given
            .iter()
            .map(|a| {
                if a.port() == 0 {
                    SocketAddr::new(a.ip(), port)
                } else {
                    *a
                }
            })
            .collect();
        node.set_local_addrs(locals, t);
        let (tx, rx) = mpsc::channel(RX_QUEUE);
        let (derp_tx, derp_rx) = mpsc::channel(DERP_RX_QUEUE);
        let stats = Arc::new(Mutex::new(ShellStats::default()));
        let derp = Links::new(
            opts.derp,
            opts.derp_regions,
            opts.node_key,
            derp_tx,
            stats.clone(),
            t,
        );
        let mut me = Self {
            node,
            sockets: Vec::new(),
            next_prune: t,
            next_generation: 0,
            rx,
            tx,
            derp_rx,
            derp_open: true,
            derp,
            backlog: false,
            stats,
        };
        me.open_socket(0, sock)?;
        me.flush();
        Ok(me)
    }

    /// The shared socket's local address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket(0).and_then(|s| s.local_addr().ok())
    }

    /// How many sockets are open (the shared one and birthday sockets still in use).
    pub fn open_sockets(&self) -> usize {
        self.sockets.iter().flatten().count()
    }

    /// The core, for status.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Shell counters.
    pub fn stats(&self) -> ShellStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// True while the home relay link is up.
    pub fn derp_connected(&self) -> bool {
        self.derp.home_connected()
    }

    /// The regions with a relay link (home, and others in use), and whether each is up.
    pub fn derp_links(&self) -> Vec<(RegionId, bool)> {
        self.derp.linked()
    }

    /// Adds or updates a peer.
    pub fn upsert_peer(&mut self, peer: PeerConfig) {
        self.node.upsert_peer(peer, now());
        self.flush();
    }

    /// Makes sure sockets `0..plan.sockets` are open (socket 0 is the shared one; others may
    /// be open from an earlier plan) and starts birthday probing towards `peer`. The extra
    /// sockets close again a few seconds after the plan is over, except those a path uses.
    ///
    /// # Errors
    /// [`Error::Bind`] when a socket cannot be opened.
    pub async fn start_birthday(&mut self, peer: &PublicKey, plan: Plan) -> Result<(), Error> {
        let ip = self
            .local_addr()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        for index in 1..plan.sockets {
            if self.socket(index).is_none() {
                self.open_socket(index, bind(SocketAddr::new(ip, 0))?)?;
            }
        }
        let t = now();
        self.node.start_birthday(peer, plan, t);
        self.next_prune = t + PRUNE_INTERVAL;
        self.flush();
        Ok(())
    }

    /// Sends a WireGuard datagram to `peer` wherever the core says. Never waits.
    pub fn send(&mut self, peer: &PublicKey, datagram: &[u8]) {
        let Some(dest) = self.node.send_to(peer, now()) else {
            return;
        };
        if let Some((socket, to)) = dest.udp {
            let ok = self
                .socket(socket)
                .is_some_and(|s| s.send_to(datagram, to).is_ok());
            self.count(|s| {
                if ok {
                    s.udp_out += 1
                } else {
                    s.udp_send_errors += 1
                }
            });
        }
        if let Some(region) = dest.derp {
            let ok = self.derp.send(region, *peer, datagram, now());
            self.count(|s| {
                if ok {
                    s.derp_out += 1
                } else {
                    s.derp_send_drops += 1
                }
            });
        }
        self.flush();
    }

    /// Waits for the next WireGuard datagram, handling disco, STUN and timers meanwhile.
    /// Cancel-safe. `None` when the shell's readers are gone.
    pub async fn recv(&mut self) -> Option<(Source, Vec<u8>)> {
        loop {
            // Trailing closed slots are popped, so a second slot means an extra socket is open
            // (and this check is O(1) on every packet).
            let prune = (self.sockets.len() > 1).then_some(self.next_prune);
            let deadline = [self.node.poll_timeout(), self.derp.poll_timeout(), prune]
                .into_iter()
                .flatten()
                .min();
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // What the last flush left goes out now even if nothing else happens (every
                // other branch flushes too).
                () = std::future::ready(()), if self.backlog => {
                    self.flush();
                }
                msg = self.derp_rx.recv(), if self.derp_open => {
                    let Some(DerpIn { region, src, bytes }) = msg else {
                        // Only once the links (which hold a sender) are gone: UDP only then.
                        self.derp_open = false;
                        continue;
                    };
                    let out = match self.node.handle_derp(region, src, &bytes, now()) {
                        Received::WireGuard => Some((Source::Derp(src), bytes)),
                        _ => None,
                    };
                    self.flush();
                    if out.is_some() {
                        return out;
                    }
                }
                msg = self.rx.recv() => {
                    let UdpIn(socket, generation, from, bytes) = msg?;
                    if !self.is_current(socket, generation) {
                        self.count(|s| s.udp_rx_stale += 1);
                        continue;
                    }
                    let out = match self.node.handle_udp(socket, from, &bytes, now()) {
                        Received::WireGuard => Some((Source::Udp { socket, addr: from }, bytes)),
                        _ => None,
                    };
                    self.flush();
                    if out.is_some() {
                        return out;
                    }
                }
                () = sleep => {
                    // Early calls are harmless: the core and the links act only on what is due.
                    let t = now();
                    self.node.handle_timeout(t);
                    self.derp.handle_timeout(t);
                    if t >= self.next_prune {
                        self.close_unused_sockets(t);
                        let listening = self.node.birthday_listening(t);
                        self.next_prune =
                            t + if listening { PRUNE_INTERVAL } else { PRUNE_INTERVAL_IDLE };
                    }
                    self.flush();
                }
            }
        }
    }

    /// Sends what the core has queued (disco, STUN, birthday probes), at most [`FLUSH_BATCH`]
    /// at a time so that one call never runs long; [`Self::recv`] comes back for the rest.
    fn flush(&mut self) {
        let t = now();
        self.backlog = true;
        for _ in 0..FLUSH_BATCH {
            let Some(Transmit { via, bytes }) = self.node.poll_transmit(t) else {
                self.backlog = false;
                return;
            };
            match via {
                Via::Udp { socket, to } => {
                    let ok = self
                        .socket(socket)
                        .is_some_and(|s| s.send_to(&bytes, to).is_ok());
                    if !ok {
                        self.count(|s| s.udp_send_errors += 1);
                    }
                }
                Via::Derp { region, dst } => {
                    if !self.derp.send(region, dst, &bytes, t) {
                        self.count(|s| s.derp_send_drops += 1);
                    }
                }
            }
        }
    }

    fn count(&self, f: impl FnOnce(&mut ShellStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    fn socket(&self, index: u16) -> Option<&std::net::UdpSocket> {
        self.sockets
            .get(usize::from(index))
            .and_then(Option::as_ref)
            .map(|s| &s.send)
    }

    /// True when socket `index` is open and is the one of `generation`.
    fn is_current(&self, index: u16, generation: u64) -> bool {
        self.sockets
            .get(usize::from(index))
            .and_then(Option::as_ref)
            .is_some_and(|s| s.generation == generation)
    }

    /// Closes the birthday sockets the core no longer needs (a plan over, a path gone).
    fn close_unused_sockets(&mut self, now: Instant) {
        let used = self.node.sockets_in_use(now);
        for (index, slot) in self.sockets.iter_mut().enumerate().skip(1) {
            let needed = u16::try_from(index).is_ok_and(|i| used.contains(&i));
            if !needed && slot.take().is_some() {
                tracing::debug!("birthday socket {index} closed");
            }
        }
        while self.sockets.len() > 1 && self.sockets.last().is_some_and(Option::is_none) {
            self.sockets.pop();
        }
    }

    /// Opens socket `index` (its reader tagging datagrams with that index).
    fn open_socket(&mut self, index: u16, sock: std::net::UdpSocket) -> Result<(), Error> {
        let addr = sock
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let bind_err = |source| Error::Bind { addr, source };
        let reader = sock.try_clone().map_err(bind_err)?;
        let reader = UdpSocket::from_std(reader).map_err(bind_err)?;
        let slot = usize::from(index);
        if self.sockets.len() <= slot {
            self.sockets.resize_with(slot + 1, || None);
        }
        let send = sock;
        let sock = reader;
        let tx = self.tx.clone();
        let stats = self.stats.clone();
        let generation = self.next_generation;
        self.next_generation += 1;
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                match sock.recv_from(&mut buf).await {
                    Ok((n, from)) => {
                        let bytes = buf.get(..n).unwrap_or_default().to_vec();
                        match tx.try_send(UdpIn(index, generation, from, bytes)) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                if let Ok(mut s) = stats.lock() {
                                    s.udp_rx_dropped += 1;
                                }
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                        }
                    }
                    // ICMP errors surface as receive errors on Linux; they are not fatal.
                    Err(_) => {
                        if let Ok(mut s) = stats.lock() {
                            s.udp_rx_errors += 1;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        });
        if let Some(s) = self.sockets.get_mut(slot) {
            *s = Some(Sock {
                send,
                reader,
                generation,
            });
        }
        Ok(())
    }
}

/// The host's usable interface addresses (port 0) for a socket bound to `listen`: up, not
/// loopback, not IPv6 link-local (it needs a scope a peer cannot know), and of a family the
/// socket can send from. Empty if the interfaces cannot be listed (STUN still finds endpoints).
pub fn interface_endpoints(listen: SocketAddr) -> Vec<SocketAddr> {
    let Ok(addrs) = weft_sys::interface_addrs() else {
        return Vec::new();
    };
    addrs
        .into_iter()
        .filter(|a| a.up && !a.loopback)
        .filter(|a| match (a.addr, listen.ip()) {
            (IpAddr::V6(v6), _) if v6.segments()[0] & 0xffc0 == 0xfe80 => false,
            (IpAddr::V6(_), IpAddr::V4(_)) => false,
            (IpAddr::V4(_), IpAddr::V6(l)) => l.is_unspecified(),
            _ => listen.ip().is_unspecified() || a.addr == listen.ip(),
        })
        .map(|a| SocketAddr::new(a.addr, 0))
        .collect()
}

/// A non-blocking UDP socket bound to `addr`.
fn bind(addr: SocketAddr) -> Result<std::net::UdpSocket, Error> {
    let err = |source| Error::Bind { addr, source };
    let s = std::net::UdpSocket::bind(addr).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    Ok(s)
}
