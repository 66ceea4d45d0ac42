//! The running device: a TUN with one queue per shard, one UDP socket per shard in a
//! `SO_REUSEPORT` group, a UAPI server, and one thread per shard driving its partition of the
//! sans-IO [`weft_wg::Device`].
//!
//! # Threads
//! * **shard** threads (shard 0 is the caller of [`Engine::run`], the others are spawned by it)
//!   each wait in `ppoll` on their TUN queue, their socket and their waker, and run turns of
//!   [`Shard::turn`](crate::shard): TUN frames through the transmit path, datagrams through the
//!   receive path, timers. Each shard owns the peers of its partition; a frame read for a peer
//!   of another shard is handed over through a ring (`shard::links`), an initiation for such a
//!   peer through the owner's lock after this shard released its own;
//! * the **UAPI** threads (one accept thread, one per connection) take every shard's lock in
//!   shard order, apply `set` to the partitions (a peer to its owner, device-wide settings to
//!   all) and answer `get` from all of them, then wake the shards.
//!
//! A shard's lock is taken once per turn (a batch of packets) and is contended only by the UAPI:
//! no lock is shared between shards on the data path. With one shard this is exactly the simple
//! event loop of the foundation; `docs/ARCHITECTURE.md` has the steering design.
//!
//! Datagrams on the shared port that are STUN or disco (see [`weft_wg::demux`]) go to a
//! [`ControlHook`] instead of WireGuard; the default hook counts and drops them until the mesh
//! agent installs its own.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use weft_sys::{Offloads, SysError, Tun, TunOptions, UdpFeatures, Waker};
use weft_wg::allowedips::AllowedIps;
use weft_wg::demux::PacketKind;
use weft_wg::{Device, ForeignInitiation};

use crate::apply;
use crate::shard::{Backend, Links, Shard, ShardIo, ShardState, SysIo, UringIo};
use crate::socket::SocketGroup;
use crate::uapi::{Request, UapiError, UapiHandle, UapiServer, UapiServerError};

/// A shard waits at most this long even with nothing to do (a safety net for lost wakeups).
const MAX_WAIT: Duration = Duration::from_secs(1);
/// Most shards (TUN queues, sockets, threads) one device runs.
pub const MAX_SHARDS: usize = 16;

/// Whether [`EngineConfig::new`] asks for io_uring: the backend that measured faster in
/// `perf/` on this project's reference machine (perf/RESULTS.md).
pub const DEFAULT_IO_URING: bool = false;

/// Why the engine could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Creating or configuring the TUN interface failed.
    #[error("TUN interface: {0}")]
    Tun(#[source] SysError),
    /// Binding the UDP socket failed.
    #[error("UDP socket: {0}")]
    Socket(#[source] SysError),
    /// The UAPI socket could not be served.
    #[error("UAPI: {0}")]
    Uapi(#[source] UapiServerError),
    /// Waiting for I/O failed.
    #[error("event loop: {0}")]
    Poll(#[source] SysError),
    /// The operating system's random generator failed.
    #[error("random number generator: {0}")]
    Random(String),
    /// A shard thread could not be started or panicked.
    #[error("shard thread: {0}")]
    Thread(String),
}

/// Receives the datagrams on the WireGuard port that are not WireGuard (STUN, disco). Each
/// shard has its own (see [`Engine::set_control_hooks`]).
pub trait ControlHook: Send {
    /// Handles one datagram. Runs on a shard's loop while it holds its lock: must not block,
    /// and must not call back into the engine (a UAPI request would wait for that lock).
    fn on_datagram(&mut self, kind: PacketKind, from: SocketAddr, datagram: &[u8]);
}

/// The default hook: counts and drops.
#[derive(Debug, Default)]
pub struct DropHook {
    /// Datagrams seen.
    pub dropped: u64,
}

impl ControlHook for DropHook {
    fn on_datagram(&mut self, kind: PacketKind, from: SocketAddr, _datagram: &[u8]) {
        self.dropped += 1;
        tracing::trace!(?kind, %from, "non-WireGuard datagram with no control hook");
    }
}

/// Settings for [`Engine::start`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Interface name (at most 15 bytes).
    pub ifname: String,
    /// Tunnel MTU.
    pub mtu: u32,
    /// Serve the UAPI at `/var/run/wireguard/IFNAME.sock`.
    pub uapi: bool,
    /// Open the TUN with a virtio-net header and negotiate TSO/USO offloads, so that reads
    /// return super-packets and writes may carry coalesced ones.
    pub tun_offload: bool,
    /// Which UDP batching features to use (GSO sends, GRO receives, `sendmmsg`/`recvmmsg`).
    pub udp: UdpFeatures,
    /// Shard threads; 0 means one per available core (at most [`MAX_SHARDS`]).
    pub shards: usize,
    /// Drive each shard's TUN queue and socket through io_uring; when the kernel cannot, the
    /// engine says so once and uses `ppoll` + `recvmmsg`/`sendmmsg`.
    pub io_uring: bool,
}

impl EngineConfig {
    /// wireguard-go's defaults (MTU 1420, UAPI on), every offload on, one shard per core.
    pub fn new(ifname: impl Into<String>) -> Self {
        Self {
            ifname: ifname.into(),
            mtu: 1420,
            uapi: true,
            tun_offload: true,
            udp: UdpFeatures::default(),
            shards: 0,
            io_uring: DEFAULT_IO_URING,
        }
    }
}

/// One shard as the other threads see it.
struct ShardCell {
    state: Mutex<ShardState>,
    /// The socket the shard should use; replaced by the UAPI on a rebind.
    socket: Mutex<Arc<std::net::UdpSocket>>,
    waker: Arc<Waker>,
}

impl ShardCell {
    fn lock(&self) -> MutexGuard<'_, ShardState> {
        // A panic while holding the lock cannot leave the core half-updated in a way that
        // matters more than stopping would; keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn socket(&self) -> Arc<std::net::UdpSocket> {
        Arc::clone(&self.socket.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

struct Shared {
    cells: Vec<ShardCell>,
    /// Told about the listen port and the handshake load (see [`DeviceObserver`]).
    observer: std::sync::OnceLock<Arc<dyn DeviceObserver>>,
    /// Shards whose partition is under handshake load now. A mutex, not an atomic: the
    /// observer is told under it, so two shards crossing at once cannot tell it out of order.
    loaded: Mutex<usize>,
    /// Held by the UAPI across a whole request (it also serializes requests).
    sockets: Mutex<SocketGroup>,
    stop: AtomicBool,
}

impl Shared {
    fn stop_all(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for c in &self.cells {
            let _ = c.waker.wake();
        }
    }
}

/// What a kernel fast path in front of the device must follow: the port the device listens
/// on, and whether it is under handshake load (then the XDP program rate-limits initiations
/// per source). Called from UAPI and shard threads; keep it quick.
pub trait DeviceObserver: Send + Sync {
    /// The device now listens on `port` (also called once when the observer is set).
    fn listen_port_changed(&self, port: u16);
    /// The device went under handshake load (`true`) or back to normal (`false`): under load
    /// while any shard's partition is.
    fn load_changed(&self, under_load: bool);
}

/// Stops a running [`Engine`] from another thread (a signal handler thread, a test).
#[derive(Clone)]
pub struct Stopper(Arc<Shared>);

impl Stopper {
    /// Asks every shard to return.
    pub fn stop(&self) {
        self.0.stop_all();
    }
}

/// Installs the tailnet packet filter ([`weft_filter::Filter`]) that decrypted packets pass
/// before they reach the TUN. Cheap to clone; usable from any thread while the engine runs.
#[derive(Clone)]
pub struct PacketFilterControl(Arc<Shared>);

impl PacketFilterControl {
    /// Replaces the filter (`None`: deliver everything the peers' allowed IPs admit, as plain
    /// WireGuard does). Each shard switches between two of its batches, under its own lock:
    /// a packet is checked against the old filter or the new one, never against none.
    pub fn set(&self, filter: Option<weft_filter::Filter>) {
        let filter = filter.map(Arc::new);
        for cell in &self.0.cells {
            cell.lock().filter.clone_from(&filter);
        }
        tracing::info!(
            enforced = filter.is_some(),
            "packet filter installed (userspace matcher)"
        );
    }
}

/// One shard's thread-local half: its I/O and its loop state.
struct Worker {
    k: usize,
    io: Backend,
    shard: Shard,
}

/// A started device. [`Engine::run`] runs its shards.
pub struct Engine {
    shared: Arc<Shared>,
    workers: Vec<Worker>,
    ifname: String,
    ifindex: u32,
    uapi: Option<UapiHandle>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("tun", &self.ifname)
            .field("shards", &self.workers.len())
            .finish()
    }
}

#[allow(clippy::disallowed_methods)] // The shell is where time comes from.
fn clock() -> Instant {
    Instant::now()
}

#[allow(clippy::disallowed_methods)] // The shell is where time comes from.
fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// How many shards to run for `wanted` (0: one per core).
fn shard_count(wanted: usize) -> usize {
    let n = if wanted == 0 {
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    } else {
        wanted
    };
    n.clamp(1, MAX_SHARDS)
}

impl Engine {
    /// Creates the TUN interface (one queue per shard), binds the shards' UDP sockets on a
    /// random port (the UAPI sets the real one) and starts serving the UAPI.
    ///
    /// With more than one shard wanted, the sockets need the steering program; if the kernel
    /// refuses it, the device runs one shard and says so.
    ///
    /// # Errors
    /// When the interface, the sockets or the UAPI socket cannot be set up.
    pub fn start(config: &EngineConfig) -> Result<Self, EngineError> {
        let mut n = shard_count(config.shards);
        let sockets = match SocketGroup::bind(0, 0, n) {
            Ok(g) => g,
            Err(e) if n > 1 => {
                tracing::warn!(error = %e, shards = n, "receive steering unavailable; running one shard");
                n = 1;
                SocketGroup::bind(0, 0, 1).map_err(EngineError::Socket)?
            }
            Err(e) => return Err(EngineError::Socket(e)),
        };
        let (tuns, offloads) = if config.tun_offload || n > 1 {
            let options = TunOptions {
                vnet_hdr: config.tun_offload,
                multi_queue: n > 1,
                queues: n,
            };
            let q = Tun::create_with(&config.ifname, options).map_err(EngineError::Tun)?;
            (q.queues, q.offloads)
        } else {
            (
                vec![Tun::create(&config.ifname).map_err(EngineError::Tun)?],
                Offloads::NONE,
            )
        };
        if tuns.len() != n {
            return Err(EngineError::Tun(SysError::BadConfig {
                reason: "the kernel opened fewer TUN queues than asked",
            }));
        }
        let ifname = tuns
            .first()
            .map(|t| t.name().to_owned())
            .unwrap_or_default();
        let ifindex = match tuns.first() {
            Some(t) => t.ifindex().map_err(EngineError::Tun)?,
            None => 0,
        };
        if let Some(t) = tuns.first() {
            t.set_mtu(config.mtu).map_err(EngineError::Tun)?;
        }
        let vnet = !offloads.is_empty();
        let uso = offloads.contains(Offloads::USO4 | Offloads::USO6);
        let now = clock();
        let parts = u32::try_from(n).unwrap_or(1);
        let mut cells = Vec::with_capacity(n);
        let mut workers = Vec::with_capacity(n);
        let mut uring_failed = false;
        for (k, tun) in tuns.into_iter().enumerate() {
            let mut seed = [0u8; 32];
            getrandom::getrandom(&mut seed).map_err(|e| EngineError::Random(e.to_string()))?;
            let mut device = Device::new(seed, now, unix_now());
            device.set_mtu(config.mtu as usize);
            device.set_index_partition(u32::try_from(k).unwrap_or(0), parts);
            let socket = sockets
                .socket(k)
                .ok_or(EngineError::Socket(SysError::BadConfig {
                    reason: "fewer sockets than shards",
                }))?;
            let waker = Arc::new(Waker::new().map_err(EngineError::Poll)?);
            let io = backend(
                k,
                tun,
                &socket,
                config.udp,
                &waker,
                config.io_uring && !uring_failed,
            )?;
            if config.io_uring && matches!(io, Backend::Sys(_)) {
                uring_failed = true;
            }
            let shard = Shard::new(
                &ifname,
                vnet,
                uso,
                config.mtu as usize,
                Box::new(DropHook::default()),
            )
            .map_err(EngineError::Socket)?;
            cells.push(ShardCell {
                state: Mutex::new(ShardState {
                    device,
                    routes: AllowedIps::new(),
                    filter: None,
                    flows: weft_filter::FlowTable::new(),
                }),
                socket: Mutex::new(socket),
                waker,
            });
            workers.push(Worker { k, io, shard });
        }
        if n > 1 {
            let wakers: Vec<Arc<Waker>> = cells.iter().map(|c| Arc::clone(&c.waker)).collect();
            for (w, links) in workers.iter_mut().zip(Links::mesh(&wakers)) {
                w.shard.set_links(links);
            }
        }
        let shared = Arc::new(Shared {
            cells,
            observer: std::sync::OnceLock::new(),
            loaded: Mutex::new(0),
            sockets: Mutex::new(sockets),
            stop: AtomicBool::new(false),
        });
        let uapi = if config.uapi {
            let server = UapiServer::bind(&ifname).map_err(EngineError::Uapi)?;
            let handler_shared = Arc::clone(&shared);
            Some(
                server
                    .spawn(move |req| handle_uapi(&handler_shared, req))
                    .map_err(EngineError::Uapi)?,
            )
        } else {
            None
        };
        tracing::info!(
            interface = ifname,
            mtu = config.mtu,
            shards = n,
            ?offloads,
            udp = ?config.udp,
            io = workers.first().map_or("none", |w: &Worker| w.io.name()),
            "device created"
        );
        Ok(Self {
            shared,
            workers,
            ifname,
            ifindex,
            uapi,
        })
    }

    /// The interface name the kernel gave the TUN.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The TUN's interface index (for attaching programs to it).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// How many shards run.
    pub fn shards(&self) -> usize {
        self.workers.len()
    }

    /// A handle that stops [`Engine::run`].
    pub fn stopper(&self) -> Stopper {
        Stopper(Arc::clone(&self.shared))
    }

    /// Sets the observer of the listen port and the handshake load (once; later calls are
    /// ignored) and tells it the current port.
    pub fn set_observer(&self, observer: Arc<dyn DeviceObserver>) {
        let port = self
            .shared
            .sockets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .port();
        if self.shared.observer.set(Arc::clone(&observer)).is_ok() {
            observer.listen_port_changed(port);
        }
    }

    /// A handle that installs the tailnet packet filter while the engine runs.
    pub fn packet_filter(&self) -> PacketFilterControl {
        PacketFilterControl(Arc::clone(&self.shared))
    }

    /// Replaces the handlers of STUN and disco datagrams: `make(k)` builds shard `k`'s.
    pub fn set_control_hooks(&mut self, mut make: impl FnMut(usize) -> Box<dyn ControlHook>) {
        for w in &mut self.workers {
            w.shard.set_hook(make(w.k));
        }
    }

    /// Applies a UAPI request directly (what a UAPI client would send), for embedding.
    ///
    /// # Errors
    /// As the UAPI would report them.
    pub fn request(&self, req: Request) -> Result<Option<crate::uapi::DeviceSnapshot>, UapiError> {
        handle_uapi(&self.shared, req)
    }

    /// Runs the shards until [`Stopper::stop`], until the interface is deleted, or until one
    /// fails; then stops the others and the UAPI.
    ///
    /// # Errors
    /// The first shard's error: waiting for I/O failed, or the TUN failed in a way other than
    /// disappearing.
    pub fn run(mut self) -> Result<(), EngineError> {
        let mut workers = std::mem::take(&mut self.workers).into_iter();
        let first = workers.next();
        let mut threads = Vec::new();
        let mut result = Ok(());
        for w in workers {
            let shared = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name(format!("shard-{}", w.k))
                .spawn(move || run_shard(&shared, w));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    result = Err(EngineError::Thread(e.to_string()));
                    self.shared.stop_all();
                    break;
                }
            }
        }
        if let Some(w) = first.filter(|_| result.is_ok()) {
            result = run_shard(&self.shared, w);
        }
        self.shared.stop_all();
        for t in threads {
            let joined = t
                .join()
                .unwrap_or_else(|_| Err(EngineError::Thread("a shard panicked".into())));
            if result.is_ok() {
                result = joined;
            }
        }
        if let Some(uapi) = self.uapi.take() {
            uapi.shutdown();
        }
        result
    }
}

/// Stops every shard when dropped: when a shard's loop returns, and also when it unwinds from
/// a panic, so that one dead shard never leaves the others serving a part of the device.
struct StopOnExit<'a>(&'a Shared);

impl Drop for StopOnExit<'_> {
    fn drop(&mut self) {
        self.0.stop_all();
    }
}

/// Shard `k`'s kernel backend: io_uring when asked and possible, else `ppoll` + `recvmmsg`.
/// A kernel without what io_uring needs is said once, clearly, by the first shard.
fn backend(
    k: usize,
    tun: Tun,
    socket: &Arc<std::net::UdpSocket>,
    udp: UdpFeatures,
    waker: &Arc<Waker>,
    io_uring: bool,
) -> Result<Backend, EngineError> {
    let tun = if io_uring {
        match UringIo::new(tun, Arc::clone(socket), udp, Arc::clone(waker)) {
            Ok(io) => return Ok(Backend::Uring(Box::new(io))),
            Err((tun, e)) => {
                tracing::warn!(
                    shard = k,
                    error = %e,
                    "io_uring is not usable here; using recvmmsg/sendmmsg instead"
                );
                tun
            }
        }
    } else {
        tun
    };
    SysIo::new(tun, Arc::clone(socket), udp, Arc::clone(waker))
        .map(Backend::Sys)
        .map_err(EngineError::Socket)
}

/// Counts shards under load and tells the observer when the device as a whole changes.
fn load_changed(shared: &Shared, loaded: bool) {
    let mut count = shared.loaded.lock().unwrap_or_else(PoisonError::into_inner);
    let before = *count > 0;
    *count = if loaded {
        count.saturating_add(1)
    } else {
        count.saturating_sub(1)
    };
    let now = *count > 0;
    if before != now {
        if let Some(o) = shared.observer.get() {
            o.load_changed(now);
        }
    }
}

/// One shard's loop. Returns when the engine stops, and stops the engine when it returns or
/// panics.
fn run_shard(shared: &Shared, mut w: Worker) -> Result<(), EngineError> {
    let stop = StopOnExit(shared);
    let result = shard_loop(shared, &mut w);
    drop(stop);
    let (tx, rx) = w.shard.stats();
    let links = w.shard.link_stats();
    let foreign_initiations = shared
        .cells
        .get(w.k)
        .map_or(0, |c| c.lock().device.stats().rx_foreign_initiations);
    tracing::info!(
        shard = w.k,
        io = w.io.name(),
        uring = ?w.io.uring_stats(),
        ?tx,
        ?rx,
        handed_off = links.handed_off,
        handoff_drops = links.dropped,
        taken_over = links.taken,
        foreign_initiations,
        "shard stopped"
    );
    result
}

fn shard_loop(shared: &Shared, w: &mut Worker) -> Result<(), EngineError> {
    let Some(cell) = shared.cells.get(w.k) else {
        return Ok(());
    };
    tracing::debug!(shard = w.k, io = w.io.name(), "shard running");
    w.io.enable().map_err(EngineError::Poll)?;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        w.io.use_socket(cell.socket())
            .map_err(EngineError::Socket)?;
        let deadline = cell.lock().device.poll_timeout();
        let wait = deadline
            .map(|t| t.saturating_duration_since(clock()))
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT);
        let ready = if w.shard.prepare_sleep() {
            let ready = w.io.wait(wait).map_err(EngineError::Poll)?;
            w.shard.end_sleep();
            ready
        } else {
            w.io.wait(Duration::ZERO).map_err(EngineError::Poll)?
        };
        let now = clock();
        let was_loaded = w.shard.under_load();
        let turn = {
            let mut st = cell.lock();
            w.shard.turn(&mut w.io, &mut st, now, ready)
        };
        if w.shard.under_load() != was_loaded {
            load_changed(shared, w.shard.under_load());
        }
        match turn {
            Ok(()) => {}
            Err(SysError::InterfaceGone { .. }) => {
                tracing::info!(shard = w.k, "interface removed; stopping");
                return Ok(());
            }
            Err(e) => return Err(EngineError::Tun(e)),
        }
        let foreign = w.shard.take_foreign();
        if !foreign.is_empty() {
            forward(shared, foreign);
        }
    }
}

/// Hands initiations for peers of other shards to their owners (after the sender released its
/// own lock, so two shards forwarding to each other cannot deadlock).
fn forward(shared: &Shared, foreign: Vec<ForeignInitiation>) {
    let n = shared.cells.len();
    for f in foreign {
        // When the owner is the shard that handed it out, the key is unknown to the whole
        // device: queued as forwarded, it is dropped and counted as an unknown peer.
        let owner = apply::owner_of(&f.initiator, n);
        let Some(cell) = shared.cells.get(owner) else {
            continue;
        };
        let accepted = cell.lock().device.accept_forwarded(f.from, f.datagram);
        if accepted {
            let _ = cell.waker.wake();
        }
    }
}

fn handle_uapi(
    shared: &Shared,
    req: Request,
) -> Result<Option<crate::uapi::DeviceSnapshot>, UapiError> {
    let mut sockets = shared
        .sockets
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    // Every shard's lock, in shard order (shards only ever hold their own).
    let mut guards: Vec<MutexGuard<'_, ShardState>> =
        shared.cells.iter().map(ShardCell::lock).collect();
    let result = {
        let mut parts: Vec<&mut Device> = guards.iter_mut().map(|g| &mut g.device).collect();
        match req {
            Request::Get => Ok(Some(apply::snapshot(&parts, &sockets))),
            Request::Set(set) => {
                let applied = apply::apply_set(&mut parts, &mut sockets, set, clock());
                // Even a failed request may have changed peers or replaced the sockets before
                // failing: republish both either way.
                let routes = if parts.len() > 1 {
                    let table = apply::routes(&parts);
                    apply::share_routes(&mut parts, &table);
                    table
                } else {
                    AllowedIps::new()
                };
                drop(parts);
                for g in &mut guards {
                    g.routes = routes.clone();
                }
                for (k, cell) in shared.cells.iter().enumerate() {
                    if let Some(s) = sockets.socket(k) {
                        *cell.socket.lock().unwrap_or_else(PoisonError::into_inner) = s;
                    }
                }
                applied.map(|_| None)
            }
        }
    };
    drop(guards);
    let port = sockets.port();
    drop(sockets);
    if let Some(o) = shared.observer.get() {
        o.listen_port_changed(port);
    }
    for c in &shared.cells {
        let _ = c.waker.wake();
    }
    result
}
