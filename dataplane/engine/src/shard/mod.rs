//! One shard's loop body, written once over an I/O seam so that the same code runs on the
//! kernel ([`SysIo`]: TUN, UDP socket, `ppoll`) and in memory ([`mem::MemIo`]: the whole loop
//! under a counting allocator, a million packets, no sockets).
//!
//! Why a trait and not a struct of descriptors: the loop's correctness and its "no allocation
//! per packet" property must be checked without a kernel, and the io_uring driver is a second
//! kernel backend behind the same seam. The trait is readiness-shaped (wait, then pull until
//! empty) because that is what the fast paths need: a TUN frame is read into the transmit
//! path's own buffer, and a receive batch lands in the receive path's preallocated
//! [`RecvBatch`], where it is decrypted in place.

mod links;
pub(crate) mod mem;
mod sys;
mod uring;

use std::time::{Duration, Instant};

use weft_sys::{RecvBatch, SysError, Transmit, WriteOutcome};
use weft_wg::allowedips::AllowedIps;
use weft_wg::{Device, Endpoint, ForeignInitiation};

use crate::engine::ControlHook;
use crate::fastpath::{PathStats, RxPath, TxPath};

pub(crate) use links::{LinkStats, Links};
pub(crate) use sys::SysIo;
pub(crate) use uring::{UringIo, UringIoStats};

/// TUN frames read per turn before looking at the other sources.
const TUN_BATCH: usize = 64;
/// Receive batches (of up to 64 messages) per turn: 256 datagrams or more, much more than the
/// core's handshake budget, so that the socket is drained quickly under a flood (see
/// `weft_wg::device::HANDSHAKES_PER_TIMEOUT`).
const UDP_BATCHES: usize = 4;
/// Frames taken from other shards per turn.
const HANDOFF_BATCH: usize = 64;

/// Which sources have something to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ready {
    /// The TUN has frames.
    pub(crate) tun: bool,
    /// The UDP socket has datagrams.
    pub(crate) udp: bool,
    /// Someone (the UAPI, a stop request) woke the loop.
    pub(crate) woken: bool,
}

/// What a shard needs from the outside world. Every call is non-blocking except
/// [`ShardIo::wait`].
pub(crate) trait ShardIo {
    /// Waits until a source is readable or `timeout` passes.
    fn wait(&mut self, timeout: Duration) -> Result<Ready, SysError>;
    /// Reads one TUN frame into `buf`; `Ok(None)` when there is none.
    fn tun_read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, SysError>;
    /// Writes one frame to the TUN.
    fn tun_write(&mut self, frame: &[u8]) -> Result<WriteOutcome, SysError>;
    /// Receives a batch into `batch`; returns how many messages (0: nothing queued).
    fn udp_recv(&mut self, batch: &mut RecvBatch) -> Result<usize, SysError>;
    /// Sends `transmits` in order; returns how many went out (see `UdpBatch::send_batch`).
    fn udp_send(&mut self, transmits: &[Transmit<'_>]) -> Result<usize, SysError>;
}

/// The kernel backend a shard runs on, chosen at start (see [`uring`] for why there are two).
pub(crate) enum Backend {
    /// `ppoll`, `read`/`write` on the TUN, `recvmmsg`/`sendmmsg` on the socket.
    Sys(SysIo),
    /// One io_uring per shard.
    Uring(Box<UringIo>),
}

impl Backend {
    /// Switches to `sock` if it is not the one in use (the UAPI rebound the port).
    pub(crate) fn use_socket(
        &mut self,
        sock: std::sync::Arc<std::net::UdpSocket>,
    ) -> Result<(), SysError> {
        match self {
            Backend::Sys(io) => io.use_socket(sock),
            Backend::Uring(io) => io.use_socket(sock),
        }
    }

    /// Binds the backend to the calling thread (the shard's), where it needs that.
    pub(crate) fn enable(&mut self) -> Result<(), SysError> {
        match self {
            Backend::Sys(_) => Ok(()),
            Backend::Uring(io) => io.enable(),
        }
    }

    /// `"io_uring"` or `"recvmmsg"`, for logs and `weft` status.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Sys(_) => "recvmmsg",
            Backend::Uring(_) => "io_uring",
        }
    }

    /// The io_uring backend's own counters (zero for the other).
    pub(crate) fn uring_stats(&self) -> UringIoStats {
        match self {
            Backend::Sys(_) => UringIoStats::default(),
            Backend::Uring(io) => io.stats,
        }
    }
}

impl ShardIo for Backend {
    fn wait(&mut self, timeout: Duration) -> Result<Ready, SysError> {
        match self {
            Backend::Sys(io) => io.wait(timeout),
            Backend::Uring(io) => io.wait(timeout),
        }
    }

    fn tun_read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, SysError> {
        match self {
            Backend::Sys(io) => io.tun_read(buf),
            Backend::Uring(io) => io.tun_read(buf),
        }
    }

    fn tun_write(&mut self, frame: &[u8]) -> Result<WriteOutcome, SysError> {
        match self {
            Backend::Sys(io) => io.tun_write(frame),
            Backend::Uring(io) => io.tun_write(frame),
        }
    }

    fn udp_recv(&mut self, batch: &mut RecvBatch) -> Result<usize, SysError> {
        match self {
            Backend::Sys(io) => io.udp_recv(batch),
            Backend::Uring(io) => io.udp_recv(batch),
        }
    }

    fn udp_send(&mut self, transmits: &[Transmit<'_>]) -> Result<usize, SysError> {
        match self {
            Backend::Sys(io) => io.udp_send(transmits),
            Backend::Uring(io) => io.udp_send(transmits),
        }
    }
}

/// What a shard's turn works on: its partition of the device and the table that says which
/// shard owns each route. Both live behind the shard's own lock, which the UAPI takes too.
pub(crate) struct ShardState {
    /// This shard's partition of the device.
    pub(crate) device: Device,
    /// Prefix → owning shard, for every route of every partition (empty with one shard).
    pub(crate) routes: AllowedIps<u16>,
    /// The tailnet packet filter applied to decrypted packets before they reach the TUN;
    /// `None`: everything the peers' allowed IPs admit is delivered (plain WireGuard).
    pub(crate) filter: Option<std::sync::Arc<weft_filter::Filter>>,
    /// The reverse-flow cache of the filter: UDP/SCTP flows this shard sent (it owns their
    /// peers, so it also receives the replies), whose replies the filter accepts without a
    /// rule. Recorded only while a filter is installed; kept across filter changes, as the
    /// official client shares it between filters. Allocated once.
    pub(crate) flows: weft_filter::FlowTable,
}

/// The per-shard state that is not the core: packet buffers, the control hook, the rings to
/// the other shards, counters.
pub(crate) struct Shard {
    tx: TxPath,
    rx: RxPath,
    hook: Box<dyn ControlHook>,
    links: Option<Links>,
    foreign: Vec<ForeignInitiation>,
    under_load: bool,
    name: String,
}

impl Shard {
    /// `vnet`: the TUN carries virtio-net headers; `uso`: it accepted UDP segmentation
    /// offload (so UDP flows may be coalesced on write).
    pub(crate) fn new(
        name: &str,
        vnet: bool,
        uso: bool,
        mtu: usize,
        hook: Box<dyn ControlHook>,
    ) -> Result<Self, SysError> {
        Ok(Self {
            tx: TxPath::new(vnet, mtu),
            rx: RxPath::new(vnet, uso)?,
            hook,
            links: None,
            foreign: Vec::new(),
            under_load: false,
            name: name.to_owned(),
        })
    }

    /// Connects the shard to the others (see [`Links::mesh`]).
    pub(crate) fn set_links(&mut self, links: Links) {
        self.links = Some(links);
    }

    /// Hand-off counters (zero with one shard).
    pub(crate) fn link_stats(&self) -> LinkStats {
        self.links.as_ref().map(|l| l.stats).unwrap_or_default()
    }

    /// Announces that the shard is about to block in [`ShardIo::wait`]; `false` if frames from
    /// other shards wait (then do not block). Call [`Shard::end_sleep`] after waking.
    pub(crate) fn prepare_sleep(&mut self) -> bool {
        self.links.as_mut().is_none_or(Links::prepare_sleep)
    }

    /// See [`Shard::prepare_sleep`].
    pub(crate) fn end_sleep(&mut self) {
        if let Some(l) = self.links.as_mut() {
            l.end_sleep();
        }
    }

    /// Initiations from peers that other shards hold, collected during the last turns; the
    /// caller hands them over once it no longer holds this shard's lock.
    pub(crate) fn take_foreign(&mut self) -> Vec<ForeignInitiation> {
        std::mem::take(&mut self.foreign)
    }

    /// Replaces the handler of STUN and disco datagrams.
    pub(crate) fn set_hook(&mut self, hook: Box<dyn ControlHook>) {
        self.hook = hook;
    }

    /// Whether this shard's partition demands cookies (its handshake queue is backed up).
    pub(crate) fn under_load(&self) -> bool {
        self.under_load
    }

    /// Counters of the transmit and receive paths.
    pub(crate) fn stats(&self) -> (PathStats, PathStats) {
        (self.tx.stats, self.rx.stats)
    }

    /// One turn of the loop after [`ShardIo::wait`] said `ready`: drains the TUN (up to
    /// [`TUN_BATCH`] frames) and the socket (up to [`UDP_BATCHES`] batches) through the core,
    /// runs due timers and sends what the core queued.
    ///
    /// # Errors
    /// A TUN error (`SysError::InterfaceGone` when the interface was deleted).
    pub(crate) fn turn(
        &mut self,
        io: &mut impl ShardIo,
        state: &mut ShardState,
        now: Instant,
        ready: Ready,
    ) -> Result<(), SysError> {
        let ShardState {
            device,
            routes,
            filter,
            flows,
        } = state;
        // Frames other shards read for this shard's peers first: when the TUN driver moves a
        // flow to this shard's queue, its older frames are still in a ring.
        if let Some(links) = self.links.as_mut() {
            let tx = &mut self.tx;
            links.drain(HANDOFF_BATCH, |frame| {
                let record = filter.as_deref().map(|f| (f, &mut *flows));
                tx.send_foreign_frame(device, now, frame, io, record);
            });
        }
        if ready.tun {
            for _ in 0..TUN_BATCH {
                let Some(n) = self.tx.read(io)? else { break };
                if let Some(links) = self.links.as_mut() {
                    let owner = self
                        .tx
                        .destination(self.tx.frame(n))
                        .and_then(|dst| routes.lookup(dst))
                        .map(|&k| usize::from(k));
                    if let Some(owner) = owner.filter(|&k| k != links.me()) {
                        links.hand_off(owner, self.tx.frame(n));
                        continue;
                    }
                }
                let record = filter.as_deref().map(|f| (f, &mut *flows));
                self.tx.send_frame(device, now, n, io, record);
            }
        }
        if let Some(links) = self.links.as_mut() {
            links.flush();
        }
        if ready.udp {
            for _ in 0..UDP_BATCHES {
                let check = filter.as_deref().map(|f| (f, &mut *flows));
                if self.rx.receive(device, now, io, &mut *self.hook, check)? == 0 {
                    break;
                }
            }
        }
        if device.poll_timeout().is_some_and(|t| t <= now) {
            device.handle_timeout(now);
        }
        while let Some(f) = device.poll_foreign() {
            self.foreign.push(f);
        }
        self.log_load_change(device, now);
        // Handshakes, cookie replies, keepalives and flushed packets: the same batched sender
        // as the data path (it maps IPv4 destinations on a dual-stack socket).
        while let Some(t) = device.poll_transmit() {
            if let Endpoint::Udp(dst) = t.endpoint {
                let one = [Transmit {
                    dst,
                    contents: &t.payload,
                    segment_size: None,
                }];
                if let Err(e) = io.udp_send(&one) {
                    tracing::debug!(error = %e, "send failed");
                }
            }
        }
        Ok(())
    }

    fn log_load_change(&mut self, device: &Device, now: Instant) {
        let loaded = device.is_under_load(now);
        if loaded == self.under_load {
            return;
        }
        self.under_load = loaded;
        let stats = device.stats();
        if loaded {
            tracing::warn!(
                interface = self.name,
                "handshake queue backed up: under load, demanding cookies"
            );
        } else {
            tracing::info!(
                interface = self.name,
                cookie_replies = stats.tx_cookie_replies,
                rate_limited = stats.rx_rate_limited,
                queue_full = stats.rx_handshake_queue_full,
                "handshake load back to normal"
            );
        }
    }
}
