//! Attaching sources, sending, submitting, and handling completions.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types};

use super::{
    register, Rx, UringEvent, UringSource, UringStats, UringUdp, WakeRx, MAX_FAIL_STREAK,
    TAG_CANCEL, TAG_MASK, TAG_SEND, TAG_TUN_READ, TAG_UDP_RECV, TAG_WAKE, TUN_BGID, UDP_BGID,
};
use crate::cmsg;
use crate::sockaddr::{self, RawAddr};
use crate::udp_batch::{plan, Plan, RecvMeta, Transmit};
use crate::{SysError, Waker};

/// Completions handled per [`UringUdp::drain`] call at most (64 rounds of 64), so one busy
/// source cannot keep the loop from its timers.
const DRAIN_ROUNDS: usize = 64;
const DRAIN_BATCH: usize = 64;

impl UringUdp {
    /// Adds the TUN queue `tun` (a duplicate of the descriptor is kept): a multishot `READ`
    /// (Linux 6.7) into a buffer ring of `config.tun_buffers` buffers, armed at the next submit.
    /// Its packets arrive as [`UringEvent::Tun`]. An `O_NONBLOCK` TUN is fine: io_uring polls
    /// it internally (machine-facts 1j).
    ///
    /// # Errors
    ///
    /// [`SysError::UringOpUnsupported`] without `IORING_OP_READ_MULTISHOT`;
    /// [`SysError::BadConfig`] if a TUN is already attached; [`SysError::UringUnavailable`] if
    /// the buffer ring cannot be registered; [`SysError::Io`] if the descriptor cannot be
    /// duplicated or memory mapped.
    pub fn attach_tun(&mut self, tun: impl AsFd) -> Result<(), SysError> {
        if !self.probe.is_supported(opcode::ReadMulti::CODE) {
            return Err(SysError::UringOpUnsupported {
                op: "IORING_OP_READ_MULTISHOT",
            });
        }
        if self.tun.is_some() {
            return Err(SysError::BadConfig {
                reason: "a TUN is already attached",
            });
        }
        let (count, len) = self.tun_config;
        let ring = super::BufRing::new(count, len as usize, TUN_BGID)
            .map_err(|e| SysError::io("mmap buffer ring", e))?;
        register(&self.ring, &ring)?;
        let fd = tun
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| SysError::io("dup TUN", e))?;
        self.tun = Some(Rx {
            fd,
            ring,
            armed: false,
            fail_streak: 0,
        });
        Ok(())
    }

    /// Adds `waker`: each wake completes as one [`UringEvent::Woken`] (wakes in between
    /// coalesce), so the ring replaces `ppoll` on the waker too.
    ///
    /// # Errors
    ///
    /// [`SysError::BadConfig`] if a waker is already attached; [`SysError::Io`] if the
    /// descriptor cannot be duplicated.
    pub fn attach_waker(&mut self, waker: &Waker) -> Result<(), SysError> {
        if self.wake.is_some() {
            return Err(SysError::BadConfig {
                reason: "a waker is already attached",
            });
        }
        let fd = waker
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| SysError::io("dup eventfd", e))?;
        self.wake = Some(WakeRx {
            fd,
            buf: Box::new([0; 8]),
            armed: false,
        });
        Ok(())
    }

    /// Queues `transmits` as `SENDMSG`s (copied into send slots; GSO runs as one send with
    /// `UDP_SEGMENT` while GSO is on, else split into one send per datagram) and returns how
    /// many were queued: fewer than `transmits.len()` when the send slots run out (reap
    /// completions with [`UringUdp::drain`], then queue the rest). They go to the kernel at the
    /// next [`UringUdp::submit_and_wait`]. A send that fails is reported as
    /// [`UringEvent::SendFailed`]; a GSO send answered with `EIO` turns GSO off and is resent
    /// split, as with [`UdpBatch`](crate::UdpBatch).
    ///
    /// # Errors
    ///
    /// [`SysError::BadTransmit`] if `transmits[0]` is invalid (as for `UdpBatch`, or larger than
    /// a send slot); nothing was queued. [`SysError::Io`] if the submission queue is full and
    /// cannot be flushed.
    pub fn send_batch(&mut self, transmits: &[Transmit<'_>]) -> Result<usize, SysError> {
        let mut queued = 0;
        for t in transmits {
            let checked = plan(t, self.gso).and_then(|p| {
                if RawAddr::zeroed().encode(t.dst, self.family).is_none() {
                    return Err("IPv6 destination on an IPv4 socket");
                }
                let one = match p {
                    Plan::Single | Plan::Gso(_) => t.contents.len(),
                    Plan::Split(seg) => usize::from(seg),
                };
                if one > self.sends.slot_len() {
                    return Err("larger than a send slot");
                }
                Ok(p)
            });
            let p = match checked {
                Ok(p) => p,
                Err(reason) if queued == 0 => return Err(SysError::BadTransmit { reason }),
                Err(_) => break,
            };
            let (chunk, seg) = match p {
                Plan::Single => (t.contents.len().max(1), None),
                Plan::Gso(seg) => (t.contents.len().max(1), Some(seg)),
                Plan::Split(seg) => (usize::from(seg), None),
            };
            let pieces = t.contents.len().div_ceil(chunk).max(1);
            if self.sends.free_slots() < pieces {
                break;
            }
            let mut chunks = t.contents.chunks(chunk);
            for _ in 0..pieces {
                let piece = chunks.next().unwrap_or(&[]);
                let Some((slot, msg)) = self.sends.fill(piece, t.dst, self.family, seg) else {
                    break;
                };
                let user_data = TAG_SEND | u64::from(slot);
                let entry = if seg.is_some() && self.inject_eio {
                    // Stand in for a send the kernel refuses with EIO: complete without sending.
                    self.inject_eio = false;
                    self.sends.mark_fake_eio(slot);
                    opcode::Nop::new().build().user_data(user_data)
                } else {
                    let fd = types::Fd(self.udp.fd.as_raw_fd());
                    opcode::SendMsg::new(fd, msg).build().user_data(user_data)
                };
                self.push(&entry)?;
            }
            queued += 1;
        }
        Ok(queued)
    }

    /// For tests of the fallback: the next GSO send completes as if the kernel had answered
    /// `EIO` (it is not sent), which turns GSO off and resends the run split, exactly as a real
    /// `EIO` does. See [`UdpBatch::inject_gso_eio`](crate::UdpBatch::inject_gso_eio).
    pub fn inject_gso_eio(&mut self) {
        self.inject_eio = true;
    }

    /// Enables a ring set up with [`UringConfig::single_issuer`]; from now on only the calling
    /// thread may submit. The kernel refuses a second enable.
    ///
    /// # Errors
    ///
    /// [`SysError::UringUnavailable`] if the kernel refuses (the ring was not disabled, or is
    /// already enabled).
    pub fn enable(&mut self) -> Result<(), SysError> {
        self.ring
            .submitter()
            .register_enable_rings()
            .map_err(|source| SysError::UringUnavailable {
                op: "IORING_REGISTER_ENABLE_RINGS",
                source,
            })
    }

    /// Re-arms every receive source at the next submit, including those that stopped after
    /// repeated errors.
    pub fn rearm(&mut self) {
        self.udp.fail_streak = 0;
        if let Some(tun) = &mut self.tun {
            tun.fail_streak = 0;
        }
    }

    /// Submits everything queued (sends, re-armed receives) and waits until at least `min`
    /// completions are ready or `timeout` passes (`None`: no limit; `min == 0`: no wait). This
    /// is meant to be the event loop's only blocking point. Returns how many submissions the
    /// kernel took. A timeout or a signal is not an error.
    ///
    /// # Errors
    ///
    /// [`SysError::Io`] if `io_uring_enter` fails otherwise.
    pub fn submit_and_wait(
        &mut self,
        min: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, SysError> {
        self.arm_pending()?;
        self.enter(min, timeout)
    }

    /// Hands each ready completion to `f`, in order, and returns how many there were (at most
    /// 4096 per call). Buffers borrowed by an event go back to their ring when `f` returns.
    ///
    /// # Errors
    ///
    /// [`SysError::Io`] if flushing the submission queue fails while handling a GSO fallback.
    pub fn drain(&mut self, f: impl FnMut(UringEvent<'_>)) -> Result<usize, SysError> {
        self.drain_up_to(DRAIN_ROUNDS * DRAIN_BATCH, f)
    }

    /// [`UringUdp::drain`], handling at most `max` completions; the rest stay in the completion
    /// queue for the next call. For a caller that copies events into bounded staging: it asks
    /// for no more than it has room for, so nothing is dropped between the kernel and it.
    ///
    /// # Errors
    ///
    /// As [`UringUdp::drain`].
    pub fn drain_up_to(
        &mut self,
        max: usize,
        mut f: impl FnMut(UringEvent<'_>),
    ) -> Result<usize, SysError> {
        let mut handled = 0;
        for _ in 0..DRAIN_ROUNDS {
            let room = max.saturating_sub(handled).min(DRAIN_BATCH);
            if room == 0 {
                break;
            }
            let mut batch = [(0u64, 0i32, 0u32); DRAIN_BATCH];
            let mut n = 0;
            {
                let mut cq = self.ring.completion();
                cq.sync();
                for (slot, cqe) in batch.iter_mut().take(room).zip(&mut cq) {
                    *slot = (cqe.user_data(), cqe.result(), cqe.flags());
                    n += 1;
                }
            }
            if n == 0 {
                break;
            }
            for &(user_data, res, flags) in batch.iter().take(n) {
                self.complete(user_data, res, flags, &mut f);
            }
            handled += n;
        }
        Ok(handled)
    }

    /// The counters.
    pub fn stats(&self) -> UringStats {
        self.stats
    }

    /// Whether GSO is in use (false once a GSO send got `EIO`).
    pub fn gso_enabled(&self) -> bool {
        self.gso
    }

    /// Whether GRO was turned on for the socket.
    pub fn gro_enabled(&self) -> bool {
        self.gro
    }

    /// Buffers in the UDP ring now: all of them whenever no completion is being handled.
    pub fn udp_buffers_available(&self) -> usize {
        self.udp.ring.available()
    }

    /// Buffers in the TUN ring now (0 without a TUN).
    pub fn tun_buffers_available(&self) -> usize {
        self.tun.as_ref().map_or(0, |t| t.ring.available())
    }

    /// Send slots free now.
    pub fn send_slots_free(&self) -> usize {
        self.sends.free_slots()
    }

    /// Pushes `entry`, flushing the submission queue once if it is full.
    fn push(&mut self, entry: &squeue::Entry) -> Result<(), SysError> {
        for _ in 0..2 {
            // SAFETY: every entry this driver builds refers only to memory the driver owns and
            // keeps valid until the entry's final completion: the buffer rings (by group id),
            // the receive msghdr template, a busy send slot, or the waker's 8-byte buffer; and
            // to descriptors the driver owns (duplicates).
            let pushed = unsafe { self.ring.submission().push(entry) };
            if pushed.is_ok() {
                return Ok(());
            }
            self.ring
                .submit()
                .map_err(|e| SysError::io("io_uring_enter", e))?;
        }
        Err(SysError::io(
            "io_uring submission queue",
            io::Error::from(io::ErrorKind::WouldBlock),
        ))
    }

    /// Queues the multishot receives and the waker read that are not armed.
    fn arm_pending(&mut self) -> Result<(), SysError> {
        if !self.udp.armed && self.udp.fail_streak < MAX_FAIL_STREAK {
            let fd = types::Fd(self.udp.fd.as_raw_fd());
            let msg = std::ptr::from_ref::<libc::msghdr>(&self.msg.0);
            let entry = opcode::RecvMsgMulti::new(fd, msg, UDP_BGID)
                .build()
                .user_data(TAG_UDP_RECV);
            self.push(&entry)?;
            self.udp.armed = true;
            self.stats.rearmed += 1;
        }
        let tun_entry = match &self.tun {
            Some(tun) if !tun.armed && tun.fail_streak < MAX_FAIL_STREAK => Some(
                opcode::ReadMulti::new(types::Fd(tun.fd.as_raw_fd()), 0, TUN_BGID)
                    .build()
                    .user_data(TAG_TUN_READ),
            ),
            _ => None,
        };
        if let Some(entry) = tun_entry {
            self.push(&entry)?;
            if let Some(tun) = &mut self.tun {
                tun.armed = true;
            }
            self.stats.rearmed += 1;
        }
        let wake_entry = match &mut self.wake {
            Some(w) if !w.armed => Some(
                opcode::Read::new(types::Fd(w.fd.as_raw_fd()), w.buf.as_mut_ptr(), 8)
                    .build()
                    .user_data(TAG_WAKE),
            ),
            _ => None,
        };
        if let Some(entry) = wake_entry {
            self.push(&entry)?;
            if let Some(w) = &mut self.wake {
                w.armed = true;
            }
        }
        Ok(())
    }

    /// `io_uring_enter` with an optional timeout; timeouts and signals are not errors.
    fn enter(&mut self, min: usize, timeout: Option<Duration>) -> Result<usize, SysError> {
        let result = match timeout {
            Some(t) if min > 0 => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(min, &args)
            }
            _ => self.ring.submitter().submit_and_wait(min),
        };
        match result {
            Ok(n) => Ok(n),
            Err(e) => match e.raw_os_error() {
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => Ok(0),
                _ => Err(SysError::io("io_uring_enter", e)),
            },
        }
    }

    fn complete(
        &mut self,
        user_data: u64,
        res: i32,
        flags: u32,
        f: &mut impl FnMut(UringEvent<'_>),
    ) {
        match user_data & TAG_MASK {
            TAG_UDP_RECV => self.complete_udp(res, flags, f),
            TAG_TUN_READ => self.complete_tun(res, flags, f),
            TAG_WAKE => {
                if let Some(w) = &mut self.wake {
                    w.armed = false;
                }
                if res >= 0 {
                    f(UringEvent::Woken);
                } else if res != -libc::ECANCELED {
                    f(UringEvent::RecvFailed {
                        source: UringSource::Wake,
                        error: io::Error::from_raw_os_error(-res),
                    });
                }
            }
            TAG_SEND => {
                // The slot number is the low 16 bits by construction.
                #[allow(clippy::cast_possible_truncation)]
                let slot = (user_data & 0xffff) as u16;
                self.complete_send(slot, res, f);
            }
            // TAG_CANCEL and anything unknown: nothing to do.
            _ => {}
        }
    }

    fn complete_udp(&mut self, res: i32, flags: u32, f: &mut impl FnMut(UringEvent<'_>)) {
        if !cqueue::more(flags) {
            self.udp.armed = false;
        }
        let bid = cqueue::buffer_select(flags);
        if bid.is_some() {
            self.udp.ring.taken();
        }
        if res < 0 {
            if let Some(bid) = bid {
                self.udp.ring.push(bid);
            }
            recv_error(&mut self.udp, &mut self.stats, UringSource::Udp, res, f);
            return;
        }
        self.udp.fail_streak = 0;
        let Some(bid) = bid else {
            return;
        };
        let len = usize::try_from(res)
            .unwrap_or(0)
            .min(self.udp.ring.buf_len());
        let parsed = self
            .udp
            .ring
            .buf(bid, len)
            .and_then(|buf| types::RecvMsgOut::parse(buf, &self.msg.0).ok());
        match parsed {
            Some(out) => match sockaddr::decode(out.name_data()) {
                Some(addr) => {
                    let payload = out.payload_data();
                    let gro = cmsg::parse_recv(out.control_data()).gro_size;
                    let meta = RecvMeta {
                        addr,
                        len: payload.len(),
                        stride: gro.unwrap_or(payload.len()),
                        truncated: out.is_payload_truncated(),
                    };
                    self.stats.udp_received += 1;
                    f(UringEvent::Udp { meta, payload });
                }
                None => self.stats.malformed += 1,
            },
            None => self.stats.malformed += 1,
        }
        self.udp.ring.push(bid);
    }

    fn complete_tun(&mut self, res: i32, flags: u32, f: &mut impl FnMut(UringEvent<'_>)) {
        let Some(tun) = &mut self.tun else {
            return;
        };
        if !cqueue::more(flags) {
            tun.armed = false;
        }
        let bid = cqueue::buffer_select(flags);
        if bid.is_some() {
            tun.ring.taken();
        }
        if res < 0 {
            if let Some(bid) = bid {
                tun.ring.push(bid);
            }
            recv_error(tun, &mut self.stats, UringSource::Tun, res, f);
            return;
        }
        tun.fail_streak = 0;
        let Some(bid) = bid else {
            return;
        };
        let len = usize::try_from(res).unwrap_or(0);
        if let Some(packet) = tun.ring.buf(bid, len) {
            self.stats.tun_received += 1;
            f(UringEvent::Tun { packet });
        }
        tun.ring.push(bid);
    }

    fn complete_send(&mut self, slot: u16, res: i32, f: &mut impl FnMut(UringEvent<'_>)) {
        let Some(done) = self.sends.done(slot) else {
            return;
        };
        let res = if done.fake_eio { -libc::EIO } else { res };
        if res >= 0 {
            self.stats.sent += 1;
        } else if res == -libc::EIO && done.gso.is_some() {
            self.gso = false;
            self.stats.gso_eio += 1;
            self.resend_split(slot, done.dst, done.gso, f);
        } else if res == -libc::EMSGSIZE && done.gso.is_some() {
            // The run's datagrams do not fit the path MTU and need IP fragmentation, which a
            // GSO send cannot do: send them one by one (GSO stays on for other runs).
            self.stats.gso_emsgsize += 1;
            self.resend_split(slot, done.dst, done.gso, f);
        } else {
            f(UringEvent::SendFailed {
                dst: done.dst,
                error: io::Error::from_raw_os_error(-res),
            });
        }
        self.sends.release(slot);
    }

    /// Sends a GSO run the kernel refused as plain datagrams, synchronously (`sendto`, not
    /// blocking), from the slot it is still in: once per socket after `EIO`, and for every run
    /// that needs IP fragmentation (`EMSGSIZE`).
    fn resend_split(
        &mut self,
        slot: u16,
        dst: std::net::SocketAddr,
        gso: Option<u16>,
        f: &mut impl FnMut(UringEvent<'_>),
    ) {
        let (Some(data), Some(seg), Some(to)) = (
            self.sends.data(slot),
            gso,
            sockaddr::for_family(dst, self.family),
        ) else {
            return;
        };
        let sock = socket2::SockRef::from(&self.udp.fd);
        let to = socket2::SockAddr::from(to);
        for chunk in data.chunks(usize::from(seg).max(1)) {
            match sock.send_to(chunk, &to) {
                Ok(_) => self.stats.sent += 1,
                Err(error) => {
                    f(UringEvent::SendFailed { dst, error });
                    break;
                }
            }
        }
    }

    /// Whether any operation may still use the driver's memory.
    fn busy(&self) -> bool {
        self.udp.armed
            || self.tun.as_ref().is_some_and(|t| t.armed)
            || self.wake.as_ref().is_some_and(|w| w.armed)
            || self.sends.in_flight() > 0
    }

    /// Cancels the receives and waits (at most about a second) until nothing is in flight.
    fn quiesce(&mut self) -> bool {
        let mut targets = [None; 3];
        if self.udp.armed {
            targets[0] = Some(TAG_UDP_RECV);
        }
        if self.tun.as_ref().is_some_and(|t| t.armed) {
            targets[1] = Some(TAG_TUN_READ);
        }
        if self.wake.as_ref().is_some_and(|w| w.armed) {
            targets[2] = Some(TAG_WAKE);
        }
        for target in targets.into_iter().flatten() {
            let entry = opcode::AsyncCancel::new(target)
                .build()
                .user_data(TAG_CANCEL);
            if self.push(&entry).is_err() {
                return false;
            }
        }
        for _ in 0..100 {
            if !self.busy() {
                return true;
            }
            if self.enter(1, Some(Duration::from_millis(10))).is_err() {
                return false;
            }
            let _ = self.drain(|_| {});
        }
        !self.busy()
    }
}

/// Handles a failed multishot receive: `ENOBUFS` (the ring ran dry) is counted and re-armed at
/// the next submit; cancellation is silent; anything else is reported and counts toward the
/// failure streak.
fn recv_error(
    rx: &mut Rx,
    stats: &mut UringStats,
    source: UringSource,
    res: i32,
    f: &mut impl FnMut(UringEvent<'_>),
) {
    match -res {
        libc::ENOBUFS => stats.out_of_buffers += 1,
        libc::ECANCELED => {}
        errno => {
            rx.fail_streak += 1;
            f(UringEvent::RecvFailed {
                source,
                error: io::Error::from_raw_os_error(errno),
            });
        }
    }
}

impl Drop for UringUdp {
    fn drop(&mut self) {
        if !self.quiesce() {
            // Something may still write into our memory: never unmap it.
            self.udp.ring.leak();
            if let Some(tun) = &mut self.tun {
                tun.ring.leak();
            }
            self.sends.leak();
            if let Some(w) = self.wake.take() {
                std::mem::forget(w.buf);
            }
        }
    }
}
