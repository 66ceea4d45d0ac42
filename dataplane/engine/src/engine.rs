//! The running device: a TUN, a UDP socket, a UAPI server and one event-loop thread driving
//! the sans-IO [`weft_wg::Device`].
//!
//! # Threads
//! * the **event loop** (the caller of [`Engine::run`]) waits in `ppoll` on the TUN, the UDP
//!   socket and a waker; it reads batches from each, feeds them to the core, writes what the
//!   core returns, and runs the core's timers;
//! * the **UAPI** threads (one accept thread, one per connection) apply `set` and answer `get`
//!   under the same lock, then wake the loop so it sees new timers or a new socket.
//!
//! The core sits behind one `Mutex`, taken once per loop iteration (a batch of packets), so the
//! per-packet cost is the syscalls and the crypto. This is the simple shell the foundation
//! needs; the sharded io_uring engine replaces the loop, not the core or the UAPI.
//!
//! Datagrams on the shared port that are STUN or disco (see [`weft_wg::demux`]) go to a
//! [`ControlHook`] instead of WireGuard; the default hook counts and drops them until the mesh
//! agent installs its own.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use weft_sys::{Offloads, SysError, Tun, TunOptions, UdpFeatures, Waker};
use weft_wg::demux::PacketKind;
use weft_wg::Device;

use crate::apply;
use crate::shard::{Shard, ShardIo, SysIo};
use crate::socket::WgSocket;
use crate::uapi::{Request, UapiError, UapiHandle, UapiServer, UapiServerError};

/// The loop wakes at least this often even with nothing to do (a safety net for lost wakeups).
const MAX_WAIT: Duration = Duration::from_secs(1);

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
}

/// Receives the datagrams on the WireGuard port that are not WireGuard (STUN, disco).
pub trait ControlHook: Send {
    /// Handles one datagram. Runs on the event loop: must not block.
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
}

impl EngineConfig {
    /// wireguard-go's defaults: MTU 1420, UAPI on.
    pub fn new(ifname: impl Into<String>) -> Self {
        Self {
            ifname: ifname.into(),
            mtu: 1420,
            uapi: true,
            tun_offload: true,
            udp: UdpFeatures::default(),
        }
    }
}

struct State {
    device: Device,
    socket: WgSocket,
    /// Bumped when the socket is replaced.
    generation: u64,
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    waker: Arc<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the core half-updated in a way that
        // matters more than stopping would; keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Stops a running [`Engine`] from another thread (a signal handler thread, a test).
#[derive(Clone)]
pub struct Stopper(Arc<Shared>);

impl Stopper {
    /// Asks the event loop to return.
    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::SeqCst);
        let _ = self.0.waker.wake();
    }
}

/// A started device. [`Engine::run`] runs its event loop.
pub struct Engine {
    shared: Arc<Shared>,
    io: SysIo,
    shard: Shard,
    ifname: String,
    uapi: Option<UapiHandle>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("tun", &self.ifname).finish()
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

impl Engine {
    /// Creates the TUN interface, binds a UDP socket on a random port (the UAPI sets the real
    /// one) and starts serving the UAPI.
    ///
    /// # Errors
    /// When the interface, the socket or the UAPI socket cannot be set up.
    pub fn start(config: &EngineConfig) -> Result<Self, EngineError> {
        let (tun, offloads) = if config.tun_offload {
            let options = TunOptions {
                vnet_hdr: true,
                multi_queue: false,
                queues: 1,
            };
            let mut q = Tun::create_with(&config.ifname, options).map_err(EngineError::Tun)?;
            let tun = q.queues.pop().ok_or(EngineError::Tun(SysError::BadConfig {
                reason: "no TUN queue opened",
            }))?;
            (tun, q.offloads)
        } else {
            (
                Tun::create(&config.ifname).map_err(EngineError::Tun)?,
                Offloads::NONE,
            )
        };
        tun.set_mtu(config.mtu).map_err(EngineError::Tun)?;
        let socket = WgSocket::bind(0, 0).map_err(EngineError::Socket)?;
        let waker = Arc::new(Waker::new().map_err(EngineError::Poll)?);
        let ifname = tun.name().to_owned();
        let vnet = !offloads.is_empty();
        let uso = offloads.contains(Offloads::USO4 | Offloads::USO6);
        let shard = Shard::new(
            &ifname,
            vnet,
            uso,
            config.mtu as usize,
            Box::new(DropHook::default()),
        )
        .map_err(EngineError::Socket)?;
        let io = SysIo::new(tun, socket.shared(), config.udp, Arc::clone(&waker))
            .map_err(EngineError::Socket)?;
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| EngineError::Random(e.to_string()))?;
        let mut device = Device::new(seed, clock(), unix_now());
        device.set_mtu(config.mtu as usize);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                device,
                socket,
                generation: 0,
            }),
            stop: AtomicBool::new(false),
            waker,
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
            ?offloads,
            udp = ?config.udp,
            "device created"
        );
        Ok(Self {
            shared,
            io,
            shard,
            ifname,
            uapi,
        })
    }

    /// The interface name the kernel gave the TUN.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// A handle that stops [`Engine::run`].
    pub fn stopper(&self) -> Stopper {
        Stopper(Arc::clone(&self.shared))
    }

    /// Replaces the handler of STUN and disco datagrams.
    pub fn set_control_hook(&mut self, hook: Box<dyn ControlHook>) {
        self.shard.set_hook(hook);
    }

    /// Applies a UAPI request directly (what a UAPI client would send), for embedding.
    ///
    /// # Errors
    /// As the UAPI would report them.
    pub fn request(&self, req: Request) -> Result<Option<crate::uapi::DeviceSnapshot>, UapiError> {
        handle_uapi(&self.shared, req)
    }

    /// Runs the event loop until [`Stopper::stop`] or until the interface is deleted.
    ///
    /// # Errors
    /// When waiting for I/O fails, or the TUN fails in a way other than disappearing.
    pub fn run(mut self) -> Result<(), EngineError> {
        let result = self.event_loop();
        if let Some(uapi) = self.uapi.take() {
            uapi.shutdown();
        }
        result
    }

    fn event_loop(&mut self) -> Result<(), EngineError> {
        let mut generation = self.shared.lock().generation;
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                let (tx, rx) = self.shard.stats();
                tracing::info!(interface = self.ifname, ?tx, ?rx, "stopping");
                return Ok(());
            }
            let deadline = {
                let st = self.shared.lock();
                if st.generation != generation {
                    generation = st.generation;
                    self.io
                        .use_socket(st.socket.shared())
                        .map_err(EngineError::Socket)?;
                }
                st.device.poll_timeout()
            };
            let wait = deadline
                .map(|t| t.saturating_duration_since(clock()))
                .unwrap_or(MAX_WAIT)
                .min(MAX_WAIT);
            let ready = self.io.wait(wait).map_err(EngineError::Poll)?;
            let now = clock();
            let shared = Arc::clone(&self.shared);
            let mut st = shared.lock();
            match self.shard.turn(&mut self.io, &mut st.device, now, ready) {
                Ok(()) => {}
                Err(SysError::InterfaceGone { .. }) => {
                    tracing::info!(interface = self.ifname, "interface removed; stopping");
                    return Ok(());
                }
                Err(e) => return Err(EngineError::Tun(e)),
            }
        }
    }
}

fn handle_uapi(
    shared: &Shared,
    req: Request,
) -> Result<Option<crate::uapi::DeviceSnapshot>, UapiError> {
    let mut st = shared.lock();
    let result = match req {
        Request::Get => Ok(Some(apply::snapshot(&st.device, &st.socket))),
        Request::Set(set) => {
            let State { device, socket, .. } = &mut *st;
            let applied = apply::apply_set(device, socket, set, clock());
            // Even a failed request may have replaced the socket before failing; the loop
            // re-reads it after every `set`.
            st.generation += 1;
            applied.map(|_| None)
        }
    };
    drop(st);
    let _ = shared.waker.wake();
    result
}
