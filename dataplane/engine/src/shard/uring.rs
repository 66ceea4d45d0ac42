//! The io_uring backend of a shard: one ring per shard receives UDP (multishot `RECVMSG` with
//! GRO) and reads the TUN queue (multishot `READ`) into kernel-filled buffer rings, watches the
//! engine's waker, and sends UDP (`SENDMSG` with GSO), all submitted by the one
//! `io_uring_enter` per turn that also waits. TUN writes stay plain `write`s: a TUN write is
//! one syscall either way and its completion carries nothing the loop needs.
//!
//! Why staging: the driver lends each buffer only for the length of a callback, while the
//! shard's receive path decrypts a whole batch in place and keeps it until GRO has written it
//! out. So completions are copied once into staging the shape the rest of the loop already
//! takes — a [`RecvBatch`] for UDP (handed over by swapping, no second copy) and a fixed ring
//! of TUN frames — and the driver is asked for no more completions than the staging has room
//! for ([`UringUdp::drain_up_to`]), so nothing is lost between the kernel and the loop. Sends
//! are copied into the driver's send slots. That is one copy more per packet than the
//! `recvmmsg`/`sendmmsg` backend ([`super::SysIo`]); `perf/` measures both side by side, and
//! the default follows the measurement (docs/ARCHITECTURE.md, "The sharded engine").

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use weft_sys::{
    RecvBatch, SysError, Transmit, Tun, UdpFeatures, UringConfig, UringEvent, UringUdp, Waker,
    WriteOutcome, VNET_HDR_LEN,
};

use super::{Ready, ShardIo};

/// UDP messages staged between two `udp_recv` calls (as many as the receive path's batch).
const UDP_STAGE: usize = 64;
/// Bytes per staged UDP message: a whole GRO run.
const UDP_STAGE_LEN: usize = 65536;
/// TUN frames staged between two `tun_read` calls.
const TUN_STAGE: usize = 64;
/// Bytes per staged TUN frame: a whole TSO super-packet with its virtio-net header.
const TUN_STAGE_LEN: usize = VNET_HDR_LEN + 65535;
/// Times `udp_send` waits for send slots to free up before it gives up on the rest.
const SEND_RETRIES: usize = 4;

/// Counters of what the backend itself dropped or saw fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UringIoStats {
    /// Sends the kernel failed (reported asynchronously).
    pub(crate) send_failed: u64,
    /// Transmits dropped because no send slot freed up in time.
    pub(crate) send_no_slot: u64,
    /// Receive operations that failed (each is re-armed).
    pub(crate) recv_failed: u64,
    /// Truncated UDP messages or oversized TUN frames (never expected with these sizes).
    pub(crate) oversized: u64,
}

/// A fixed ring of TUN frames, allocated once.
struct TunStage {
    buf: Vec<u8>,
    lens: [usize; TUN_STAGE],
    head: usize,
    count: usize,
}

impl TunStage {
    fn new() -> Self {
        Self {
            buf: vec![0; TUN_STAGE * TUN_STAGE_LEN],
            lens: [0; TUN_STAGE],
            head: 0,
            count: 0,
        }
    }

    fn room(&self) -> usize {
        TUN_STAGE - self.count
    }

    fn push(&mut self, frame: &[u8]) -> bool {
        if self.count == TUN_STAGE || frame.len() > TUN_STAGE_LEN {
            return false;
        }
        let slot = (self.head + self.count) % TUN_STAGE;
        let Some(dst) = self
            .buf
            .get_mut(slot * TUN_STAGE_LEN..)
            .and_then(|b| b.get_mut(..frame.len()))
        else {
            return false;
        };
        dst.copy_from_slice(frame);
        if let Some(l) = self.lens.get_mut(slot) {
            *l = frame.len();
        }
        self.count += 1;
        true
    }

    /// Copies the oldest frame into `out`; its length, or `None` when empty. A frame longer
    /// than `out` is cut (never happens: both are sized for a whole super-packet).
    fn pop_into(&mut self, out: &mut [u8]) -> Option<usize> {
        if self.count == 0 {
            return None;
        }
        let slot = self.head;
        self.head = (self.head + 1) % TUN_STAGE;
        self.count -= 1;
        let len = self.lens.get(slot).copied().unwrap_or(0).min(out.len());
        let src = self
            .buf
            .get(slot * TUN_STAGE_LEN..slot * TUN_STAGE_LEN + len)?;
        out.get_mut(..len)?.copy_from_slice(src);
        Some(len)
    }
}

/// A TUN queue and the UDP socket driven through one io_uring.
pub(crate) struct UringIo {
    uring: UringUdp,
    tun: Tun,
    sock: Arc<UdpSocket>,
    features: UdpFeatures,
    waker: Arc<Waker>,
    udp_stage: RecvBatch,
    tun_stage: TunStage,
    woken: bool,
    pub(crate) stats: UringIoStats,
}

impl UringIo {
    /// Sets up the ring for `sock` and attaches the TUN queue and the waker. On failure the
    /// TUN queue is handed back, so that the caller can fall back to [`super::SysIo`].
    ///
    /// # Errors
    /// [`SysError::UringUnavailable`] / [`SysError::UringOpUnsupported`] when the kernel cannot
    /// do what this backend needs; others as [`UringUdp::new`].
    pub(crate) fn new(
        tun: Tun,
        sock: Arc<UdpSocket>,
        features: UdpFeatures,
        waker: Arc<Waker>,
    ) -> Result<Self, (Tun, SysError)> {
        let uring = match Self::ring(&tun, &sock, features, &waker) {
            Ok(u) => u,
            Err(e) => return Err((tun, e)),
        };
        let udp_stage = match RecvBatch::new(UDP_STAGE, UDP_STAGE_LEN) {
            Ok(b) => b,
            Err(e) => return Err((tun, e)),
        };
        Ok(Self {
            uring,
            tun,
            sock,
            features,
            waker,
            udp_stage,
            tun_stage: TunStage::new(),
            woken: false,
            stats: UringIoStats::default(),
        })
    }

    fn ring(
        tun: &Tun,
        sock: &UdpSocket,
        features: UdpFeatures,
        waker: &Waker,
    ) -> Result<UringUdp, SysError> {
        let config = UringConfig {
            features,
            // A turn queues one GSO run per TUN frame (64) plus handshakes and keepalives.
            send_slots: 128,
            single_issuer: true,
            ..UringConfig::default()
        };
        let mut uring = UringUdp::new(sock, &config)?;
        uring.attach_tun(tun)?;
        uring.attach_waker(waker)?;
        Ok(uring)
    }

    /// Makes the calling thread the ring's one submitter: call once, on the shard's thread,
    /// before the first [`ShardIo::wait`].
    pub(crate) fn enable(&mut self) -> Result<(), SysError> {
        self.uring.enable()
    }

    /// Switches to `sock` if it is not the one in use (the UAPI rebound the port): a new ring,
    /// because the ring holds its own duplicate of the socket. Staged datagrams from the old
    /// socket are still delivered.
    pub(crate) fn use_socket(&mut self, sock: Arc<UdpSocket>) -> Result<(), SysError> {
        if Arc::ptr_eq(&sock, &self.sock) {
            return Ok(());
        }
        // Frames the old ring already read from the TUN must not be lost with it.
        self.pump_all()?;
        let mut uring = Self::ring(&self.tun, &sock, self.features, &self.waker)?;
        // Built on the shard's own thread, which drives it from now on.
        uring.enable()?;
        self.uring = uring;
        self.sock = sock;
        Ok(())
    }

    /// Completions the staging has room for.
    fn room(&self) -> usize {
        self.tun_stage
            .room()
            .min(self.udp_stage.capacity() - self.udp_stage.len())
    }

    /// Copies ready completions into the staging, as many as it has room for.
    fn pump(&mut self) -> Result<(), SysError> {
        let room = self.room();
        if room == 0 {
            return Ok(());
        }
        let Self {
            uring,
            udp_stage,
            tun_stage,
            woken,
            stats,
            ..
        } = self;
        uring.drain_up_to(room, |event| {
            stage(event, udp_stage, tun_stage, woken, stats);
        })?;
        Ok(())
    }

    /// Drains the whole completion queue, growing nothing: used only before the ring is
    /// replaced, when what does not fit the staging would be lost anyway (counted).
    fn pump_all(&mut self) -> Result<(), SysError> {
        self.pump()?;
        let stats = &mut self.stats;
        self.uring.drain(|event| {
            if matches!(event, UringEvent::Udp { .. } | UringEvent::Tun { .. }) {
                stats.oversized += 1;
            }
        })?;
        Ok(())
    }

    fn staged(&self) -> Ready {
        Ready {
            tun: self.tun_stage.count > 0,
            udp: !self.udp_stage.is_empty(),
            woken: self.woken,
        }
    }
}

/// Puts one completion where the loop will find it (the caller made sure there is room).
fn stage(
    event: UringEvent<'_>,
    udp_stage: &mut RecvBatch,
    tun_stage: &mut TunStage,
    woken: &mut bool,
    stats: &mut UringIoStats,
) {
    match event {
        UringEvent::Udp { meta, payload } => {
            let staged = !meta.truncated && udp_stage.push(meta.addr, meta.stride, payload);
            stats.oversized += u64::from(!staged);
        }
        UringEvent::Tun { packet } => {
            stats.oversized += u64::from(!tun_stage.push(packet));
        }
        UringEvent::Woken => *woken = true,
        UringEvent::SendFailed { dst, error } => {
            stats.send_failed += 1;
            tracing::trace!(%dst, %error, "send failed");
        }
        UringEvent::RecvFailed { source, error } => {
            stats.recv_failed += 1;
            tracing::debug!(?source, %error, "io_uring receive failed; re-arming");
        }
        _ => {}
    }
}

impl ShardIo for UringIo {
    fn wait(&mut self, timeout: Duration) -> Result<Ready, SysError> {
        self.woken = false;
        // Queued sends and re-armed receives go to the kernel here; block only when nothing
        // is staged or already completed.
        self.pump()?;
        let staged = self.staged();
        let block = !(staged.tun || staged.udp || staged.woken);
        let min = usize::from(block);
        self.uring.submit_and_wait(min, Some(timeout))?;
        self.pump()?;
        // Sources are read until empty by the turn, so "maybe ready" costs one empty pump.
        Ok(Ready {
            tun: true,
            udp: true,
            woken: self.woken,
        })
    }

    fn tun_read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, SysError> {
        if let Some(n) = self.tun_stage.pop_into(buf) {
            return Ok(Some(n));
        }
        // Nothing staged: take completions one at a time until a TUN frame comes, copying it
        // straight into `buf` (one copy, as a `read` would make); what comes before it is
        // staged as usual. Bounded by the staging room.
        let mut got = None;
        for _ in 0..self.room() {
            let Self {
                uring,
                udp_stage,
                tun_stage,
                woken,
                stats,
                ..
            } = self;
            let handled = uring.drain_up_to(1, |event| match event {
                UringEvent::Tun { packet } => match buf.get_mut(..packet.len()) {
                    Some(dst) => {
                        dst.copy_from_slice(packet);
                        got = Some(packet.len());
                    }
                    None => stats.oversized += 1,
                },
                other => stage(other, udp_stage, tun_stage, woken, stats),
            })?;
            if handled == 0 || got.is_some() {
                break;
            }
        }
        Ok(got)
    }

    fn tun_write(&mut self, frame: &[u8]) -> Result<WriteOutcome, SysError> {
        self.tun.write(frame)
    }

    fn udp_recv(&mut self, batch: &mut RecvBatch) -> Result<usize, SysError> {
        if self.udp_stage.is_empty() {
            self.pump()?;
        }
        // The caller's batch was processed: it becomes the next staging, cleared.
        std::mem::swap(batch, &mut self.udp_stage);
        self.udp_stage.clear();
        Ok(batch.len())
    }

    fn udp_send(&mut self, transmits: &[Transmit<'_>]) -> Result<usize, SysError> {
        let mut sent = 0;
        for _ in 0..=SEND_RETRIES {
            let rest = transmits.get(sent..).unwrap_or_default();
            if rest.is_empty() {
                break;
            }
            match self.uring.send_batch(rest) {
                Ok(n) => sent += n,
                Err(e) if sent == 0 => return Err(e),
                Err(_) => break,
            }
            if sent == transmits.len() {
                break;
            }
            // Out of send slots: submit, wait briefly for completions, reap them. Receive
            // completions reaped on the way are staged; if the staging is full the sends
            // wait for the next turn instead.
            self.uring
                .submit_and_wait(1, Some(Duration::from_millis(1)))?;
            self.pump()?;
        }
        self.stats.send_no_slot += (transmits.len() - sent) as u64;
        Ok(sent)
    }
}
