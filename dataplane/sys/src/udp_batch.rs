//! Batched UDP I/O with `recvmmsg`/`sendmmsg`, UDP GRO (`UDP_GRO`) and UDP GSO (`UDP_SEGMENT`):
//! the portable fast path, the fallback when io_uring is unavailable, and the reference the
//! io_uring path ([`UringUdp`](crate::UringUdp)) must agree with.
//!
//! Receive: [`UdpBatch::recv_batch`] fills a preallocated [`RecvBatch`] with up to
//! [`MAX_BATCH`] datagrams per call. With GRO on, one "datagram" may be a coalesced run of
//! same-sized segments from one sender; [`RecvMeta::stride`] is the segment size (the last
//! segment may be shorter), as in quinn-udp's `RecvMeta`.
//!
//! Send: [`UdpBatch::send_batch`] sends a slice of [`Transmit`]s, each either one datagram or
//! (with `segment_size`) a run of up to [`MAX_GSO_SEGMENTS`] datagrams that the kernel cuts
//! from one buffer. Without GSO (turned off, unsupported, or given up after an `EIO`), such a
//! transmit is sent as separate datagrams from the same buffer, so callers never need to know.

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cmsg::{self, CmsgBuf, RECV_SPACE, SEGMENT_SPACE};
use crate::sockaddr::{self, Family, RawAddr, ADDR_SPACE};
use crate::socket::{getsockopt_int, setsockopt_int};
use crate::SysError;

/// Most datagrams one `recvmmsg`/`sendmmsg` call moves. The per-call message headers live on
/// the stack (about 9 KiB for a send), so a batch never allocates.
pub const MAX_BATCH: usize = 64;

/// Most segments the kernel accepts in one GSO send (`UDP_MAX_SEGMENTS`); one more fails with
/// `EINVAL`.
pub const MAX_GSO_SEGMENTS: usize = 64;

/// Which batching features a [`UdpBatch`] may use. Turning one off forces its fallback, for
/// tests and for users who need to rule a feature out. [`UdpFeatures::default`] turns all on;
/// each is still used only where the kernel supports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFeatures {
    /// Send runs of same-sized datagrams with one `UDP_SEGMENT` send. Off: split in userspace.
    pub gso: bool,
    /// Ask the kernel to coalesce received runs (`UDP_GRO`). Off: one datagram per message.
    pub gro: bool,
    /// Use `recvmmsg`/`sendmmsg`. Off: one `recvmsg`/`sendmsg` per datagram (same results).
    pub mmsg: bool,
}

impl Default for UdpFeatures {
    fn default() -> Self {
        UdpFeatures {
            gso: true,
            gro: true,
            mmsg: true,
        }
    }
}

impl UdpFeatures {
    /// Every fallback: no GSO, no GRO, one system call per datagram.
    pub const NONE: UdpFeatures = UdpFeatures {
        gso: false,
        gro: false,
        mmsg: false,
    };
}

/// One outgoing datagram, or a run of them.
#[derive(Debug, Clone, Copy)]
pub struct Transmit<'a> {
    /// Where to send. On a dual-stack IPv6 socket an IPv4 address is sent v4-mapped; on an IPv4
    /// socket a v4-mapped IPv6 address is sent as IPv4.
    pub dst: SocketAddr,
    /// The payload: one datagram, or with `segment_size` the concatenated segments.
    pub contents: &'a [u8],
    /// `Some(size)`: `contents` is a run of datagrams of `size` bytes each (the last may be
    /// shorter), at most [`MAX_GSO_SEGMENTS`] of them. The caller picks `size` so that one
    /// segment plus the IP and UDP headers (28 bytes for IPv4, 48 for IPv6) fits the path MTU:
    /// the kernel answers `EMSGSIZE` otherwise, it does not fragment a GSO send. `None`, or a
    /// `size` not smaller than `contents`: one datagram.
    pub segment_size: Option<u16>,
}

/// What [`UdpBatch::recv_batch`] learned about one received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// The sender, as the kernel reports it (an IPv4 peer of a dual-stack socket appears
    /// v4-mapped, as with `std`'s `recv_from`).
    pub addr: SocketAddr,
    /// Bytes in the payload.
    pub len: usize,
    /// The segment size: with GRO, the payload is `len / stride` datagrams of `stride` bytes
    /// plus a shorter last one if `len % stride != 0`. Without coalescing, `stride == len`.
    pub stride: usize,
    /// The message did not fit its buffer (`MSG_TRUNC`); the payload is cut at the buffer
    /// length and should be dropped.
    pub truncated: bool,
}

impl RecvMeta {
    /// How many datagrams the payload holds (1 unless the kernel coalesced it).
    pub fn segments(&self) -> usize {
        if self.stride == 0 {
            return 1;
        }
        self.len.div_ceil(self.stride).max(1)
    }
}

/// Preallocated receive buffers for [`UdpBatch::recv_batch`] (and the results of the last call).
///
/// Holds `slots` buffers of `buf_len` bytes each, with their address and control areas; a
/// receive call writes into them and allocates nothing.
pub struct RecvBatch {
    buf_len: usize,
    bufs: Vec<u8>,
    names: Vec<RawAddr>,
    controls: Vec<CmsgBuf<RECV_SPACE>>,
    /// `(slot, meta)` of each message of the last call, in arrival order.
    received: Vec<(usize, RecvMeta)>,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("capacity", &self.capacity())
            .field("buf_len", &self.buf_len)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// `slots` buffers (1 to [`MAX_BATCH`]) of `buf_len` bytes (1 to 16 MiB) each. With GRO a
    /// coalesced message can be up to 64 KiB: pass at least 65535 to never truncate one.
    ///
    /// # Errors
    ///
    /// [`SysError::BadConfig`] if either count is out of range.
    pub fn new(slots: usize, buf_len: usize) -> Result<RecvBatch, SysError> {
        if slots == 0 || slots > MAX_BATCH {
            return Err(SysError::BadConfig {
                reason: "receive batch slots must be 1..=64",
            });
        }
        if buf_len == 0 || buf_len > 16 << 20 {
            return Err(SysError::BadConfig {
                reason: "receive buffer length must be 1..=16 MiB",
            });
        }
        Ok(RecvBatch {
            buf_len,
            bufs: vec![0; slots * buf_len],
            names: vec![RawAddr::zeroed(); slots],
            controls: vec![CmsgBuf::zeroed(); slots],
            received: Vec::with_capacity(slots),
        })
    }

    /// How many messages one call can receive.
    pub fn capacity(&self) -> usize {
        self.names.len()
    }

    /// The length of each buffer.
    pub fn buf_len(&self) -> usize {
        self.buf_len
    }

    /// How many messages the last receive call delivered.
    pub fn len(&self) -> usize {
        self.received.len()
    }

    /// Whether the last receive call delivered nothing.
    pub fn is_empty(&self) -> bool {
        self.received.is_empty()
    }

    /// The `i`-th message of the last call.
    pub fn get(&self, i: usize) -> Option<(&RecvMeta, &[u8])> {
        let (slot, meta) = self.received.get(i)?;
        let start = slot * self.buf_len;
        let payload = self.bufs.get(start..start + meta.len)?;
        Some((meta, payload))
    }

    /// The `i`-th message of the last call, with its payload writable (to decrypt in place).
    pub fn get_mut(&mut self, i: usize) -> Option<(&RecvMeta, &mut [u8])> {
        let (slot, meta) = self.received.get(i)?;
        let start = slot * self.buf_len;
        let payload = self.bufs.get_mut(start..start + meta.len)?;
        Some((meta, payload))
    }

    /// The messages of the last call, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&RecvMeta, &[u8])> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// Forgets the messages of the last call; the next [`RecvBatch::push`] fills slot 0.
    pub fn clear(&mut self) {
        self.received.clear();
    }

    /// Appends a message as if the kernel had delivered it, for in-memory I/O (simulations,
    /// tests of a whole event loop without sockets): copies `payload` into the next free slot.
    /// `stride` is the GRO segment size (`payload.len()` for a single datagram). Returns
    /// `false`, changing nothing, when every slot is taken or `payload` is longer than a buffer.
    pub fn push(&mut self, addr: SocketAddr, stride: usize, payload: &[u8]) -> bool {
        let slot = self.received.len();
        if slot >= self.capacity() || payload.len() > self.buf_len {
            return false;
        }
        let start = slot * self.buf_len;
        let Some(buf) = self.bufs.get_mut(start..start + payload.len()) else {
            return false;
        };
        buf.copy_from_slice(payload);
        self.received.push((
            slot,
            RecvMeta {
                addr,
                len: payload.len(),
                stride,
                truncated: false,
            },
        ));
        true
    }
}

/// Batched UDP send and receive on one socket, remembering what the kernel supports.
///
/// Create one per socket ([`UdpBatch::new`] probes GSO and turns GRO on). It is `Send + Sync`:
/// the only state that changes is "GSO was given up after `EIO`", an atomic.
#[derive(Debug)]
pub struct UdpBatch {
    family: Family,
    gso: AtomicBool,
    gro: bool,
    mmsg: bool,
    /// Set by [`UdpBatch::inject_gso_eio`]: fail the next GSO send as if with `EIO`.
    inject_eio: AtomicBool,
}

/// Whether the kernel supports UDP GSO on `sock`: `getsockopt(SOL_UDP, UDP_SEGMENT)` succeeds
/// (Linux 4.18 and later), as wireguard-go probes it. The device may still lack checksum
/// offload, which shows only when a send fails with `EIO`; [`UdpBatch`] handles that.
pub fn supports_gso(sock: impl AsFd) -> bool {
    getsockopt_int(sock.as_fd(), libc::SOL_UDP, libc::UDP_SEGMENT).is_ok()
}

/// Turns UDP GRO on for `sock` (`setsockopt(SOL_UDP, UDP_GRO, 1)`, Linux 5.0 and later): the
/// kernel may then deliver a run of same-sized datagrams from one sender as one message with a
/// `UDP_GRO` control message giving the segment size. Read such messages with
/// [`UdpBatch::recv_batch`] or [`UringUdp`](crate::UringUdp), never with plain `recv`, which
/// would see the run as one datagram.
///
/// # Errors
///
/// [`SysError::Io`] if the option is refused (`ENOPROTOOPT` on kernels without UDP GRO).
pub fn enable_gro(sock: impl AsFd) -> Result<(), SysError> {
    setsockopt_int(sock.as_fd(), libc::SOL_UDP, libc::UDP_GRO, 1)
        .map_err(|e| SysError::io("setsockopt UDP_GRO", e))
}

/// Whether GRO is on for `sock` (`getsockopt(SOL_UDP, UDP_GRO)`).
pub fn gro_enabled(sock: impl AsFd) -> bool {
    getsockopt_int(sock.as_fd(), libc::SOL_UDP, libc::UDP_GRO).is_ok_and(|v| v != 0)
}

impl UdpBatch {
    /// Prepares batched I/O on the bound UDP socket `sock` with the wanted `features`: GSO is
    /// used if wanted and [`supports_gso`]; GRO is turned on if wanted ([`enable_gro`]; a
    /// refusal just leaves it off). The socket should be non-blocking; calls never block
    /// either way (`MSG_DONTWAIT`).
    ///
    /// # Errors
    ///
    /// [`SysError::Io`] if `sock` is not a bound IPv4/IPv6 socket (`getsockname`).
    pub fn new(sock: impl AsFd, features: UdpFeatures) -> Result<UdpBatch, SysError> {
        let fd = sock.as_fd();
        let family = sockaddr::socket_family(fd)?;
        let gso = features.gso && supports_gso(fd);
        let gro = features.gro && enable_gro(fd).is_ok();
        Ok(UdpBatch {
            family,
            gso: AtomicBool::new(gso),
            gro,
            mmsg: features.mmsg,
            inject_eio: AtomicBool::new(false),
        })
    }

    /// For tests of the fallback: the next GSO send on this socket fails as if the kernel had
    /// answered `EIO`, which turns GSO off for good exactly as a real `EIO` does. (A real one
    /// needs an egress path that cannot checksum, e.g. an IPsec transform; this kernel falls
    /// back to software checksums on a veth with `tx off`, so no cheap setup produces it.)
    pub fn inject_gso_eio(&self) {
        self.inject_eio.store(true, Ordering::Relaxed);
    }

    /// The features in use now. `gso` turns false for good after the kernel rejects a GSO send
    /// with `EIO`.
    pub fn features(&self) -> UdpFeatures {
        UdpFeatures {
            gso: self.gso.load(Ordering::Relaxed),
            gro: self.gro,
            mmsg: self.mmsg,
        }
    }

    /// Receives up to `batch.capacity()` messages without blocking and returns how many (also
    /// `batch.len()`); 0 means nothing was queued. Read them with [`RecvBatch::get`] /
    /// [`RecvBatch::iter`].
    ///
    /// # Errors
    ///
    /// [`SysError::Io`] if the first receive fails for a reason other than "nothing queued"
    /// or a signal (an error after some messages ends the batch early instead; the next call
    /// reports it).
    pub fn recv_batch(&self, sock: impl AsFd, batch: &mut RecvBatch) -> Result<usize, SysError> {
        batch.received.clear();
        let fd = sock.as_fd();
        let slots = batch.capacity().min(MAX_BATCH);
        let mut iovs = [EMPTY_IOV; MAX_BATCH];
        let mut hdrs = [zeroed_mmsghdr(); MAX_BATCH];
        let buf_len = batch.buf_len;
        let parts = batch
            .bufs
            .chunks_mut(buf_len)
            .zip(batch.names.iter_mut())
            .zip(batch.controls.iter_mut());
        for ((iov, hdr), ((buf, name), control)) in iovs.iter_mut().zip(hdrs.iter_mut()).zip(parts)
        {
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = buf.len();
            hdr.msg_hdr.msg_name = name.0.as_mut_ptr().cast();
            hdr.msg_hdr.msg_namelen = socklen(ADDR_SPACE);
            hdr.msg_hdr.msg_iov = ptr::from_mut(iov);
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = control.0.as_mut_ptr().cast();
            hdr.msg_hdr.msg_controllen = RECV_SPACE as _;
        }
        let hdrs = hdrs.get_mut(..slots).unwrap_or_default();
        let got = if self.mmsg {
            recvmmsg(fd, hdrs)?
        } else {
            recvmsg_each(fd, hdrs)?
        };
        for (slot, hdr) in hdrs.iter().enumerate().take(got) {
            let len = usize::try_from(hdr.msg_len).unwrap_or(0).min(buf_len);
            let namelen = usize::try_from(hdr.msg_hdr.msg_namelen).unwrap_or(0);
            // `msg_controllen` is `size_t` on glibc but `socklen_t` on musl.
            #[allow(clippy::useless_conversion)]
            let controllen = usize::try_from(hdr.msg_hdr.msg_controllen).unwrap_or(0);
            let name = batch.names.get(slot).map_or(&[][..], |n| &n.0[..]);
            let Some(addr) = sockaddr::decode(name.get(..namelen.min(ADDR_SPACE)).unwrap_or(&[]))
            else {
                continue;
            };
            let control = batch.controls.get(slot).map_or(&[][..], |c| &c.0[..]);
            let cmsgs = cmsg::parse_recv(control.get(..controllen.min(RECV_SPACE)).unwrap_or(&[]));
            let meta = RecvMeta {
                addr,
                len,
                stride: cmsgs.gro_size.unwrap_or(len),
                truncated: hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            };
            batch.received.push((slot, meta));
        }
        Ok(batch.received.len())
    }

    /// Sends `transmits` in order without blocking and returns how many were handed to the
    /// kernel. Fewer than `transmits.len()` means the socket buffer is full (try the rest when
    /// the socket is writable) or a later transmit fails: calling again with the rest reports
    /// that failure as an error for the first transmit of the new slice. An `Err` always
    /// concerns `transmits[0]`; nothing was sent. The caller drops it and goes on with the rest.
    ///
    /// A transmit with `segment_size` goes out as one GSO send while GSO is on. When the kernel
    /// answers a GSO send with `EIO` (the egress device cannot checksum, so it cannot segment),
    /// GSO is turned off for this socket for good, as wireguard-go does, and the same
    /// transmits are sent again as plain datagrams. Without GSO a run is split into
    /// datagrams; if the socket buffer fills midway through a run, the run counts as sent and
    /// its remaining datagrams are dropped, like a full queue would drop them.
    ///
    /// # Errors
    ///
    /// [`SysError::BadTransmit`] if `transmits[0]` is invalid (segment size 0, more than
    /// [`MAX_GSO_SEGMENTS`] segments, an IPv6 destination on an IPv4 socket);
    /// [`SysError::Io`] if sending `transmits[0]` fails (`EMSGSIZE`: a datagram or GSO segment
    /// too big for the path; `ENETUNREACH`; `EPERM` from a firewall; ...).
    pub fn send_batch(
        &self,
        sock: impl AsFd,
        transmits: &[Transmit<'_>],
    ) -> Result<usize, SysError> {
        let fd = sock.as_fd();
        let mut done = 0;
        // Each round sends at least one transmit, returns, or turns GSO off (once), so this
        // bound is never reached; it keeps the loop obviously finite.
        for _ in 0..=transmits.len() + 1 {
            let Some(rest) = transmits.get(done..).filter(|r| !r.is_empty()) else {
                break;
            };
            let round = match self.send_round(fd, rest) {
                Ok(round) => round,
                // The error concerns `rest[0]`; report it when it is first in the slice.
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            };
            match round {
                Round::Sent(n) if n > 0 => done += n,
                Round::Sent(_) | Round::Blocked => break,
                Round::GsoRejected => {
                    self.gso.store(false, Ordering::Relaxed);
                }
                Round::Failed(op, err) => {
                    if done == 0 {
                        return Err(SysError::io(op, err));
                    }
                    break;
                }
            }
        }
        Ok(done)
    }

    /// One `sendmmsg` (or a `sendmsg` loop) over as many of `transmits` as fit [`MAX_BATCH`]
    /// messages. An error concerns `transmits[0]`.
    fn send_round(
        &self,
        fd: BorrowedFd<'_>,
        transmits: &[Transmit<'_>],
    ) -> Result<Round, SysError> {
        let gso = self.gso.load(Ordering::Relaxed);
        // First pass: what each message is. Second pass: the headers pointing at it.
        let mut names = [RawAddr::zeroed(); MAX_BATCH];
        let mut namelens = [0usize; MAX_BATCH];
        let mut pieces: [&[u8]; MAX_BATCH] = [&[]; MAX_BATCH];
        let mut segs: [Option<u16>; MAX_BATCH] = [None; MAX_BATCH];
        // For each message, the transmit it belongs to (relative to `transmits`).
        let mut owner = [0usize; MAX_BATCH];
        let mut count = 0;

        for (t, transmit) in transmits.iter().enumerate() {
            let plan = match plan(transmit, gso) {
                Ok(plan) => plan,
                Err(reason) if t == 0 => return Err(SysError::BadTransmit { reason }),
                Err(_) => break,
            };
            let mut name = RawAddr::zeroed();
            let Some(namelen) = name.encode(transmit.dst, self.family) else {
                if t == 0 {
                    return Err(SysError::BadTransmit {
                        reason: "IPv6 destination on an IPv4 socket",
                    });
                }
                break;
            };
            let (chunk, seg) = match plan {
                Plan::Single => (transmit.contents.len().max(1), None),
                Plan::Gso(seg) => (transmit.contents.len().max(1), Some(seg)),
                Plan::Split(seg) => (usize::from(seg), None),
            };
            let messages = transmit.contents.len().div_ceil(chunk).max(1);
            if count + messages > MAX_BATCH {
                break;
            }
            let mut chunks = transmit.contents.chunks(chunk);
            for i in count..count + messages {
                if let (Some(n), Some(l), Some(p), Some(s), Some(o)) = (
                    names.get_mut(i),
                    namelens.get_mut(i),
                    pieces.get_mut(i),
                    segs.get_mut(i),
                    owner.get_mut(i),
                ) {
                    *n = name;
                    *l = namelen;
                    *p = chunks.next().unwrap_or(&[]);
                    *s = seg;
                    *o = t;
                }
            }
            count += messages;
        }

        let mut iovs = [EMPTY_IOV; MAX_BATCH];
        let mut hdrs = [zeroed_mmsghdr(); MAX_BATCH];
        let mut controls = [CmsgBuf::<SEGMENT_SPACE>::zeroed(); MAX_BATCH];
        let per_message = iovs
            .iter_mut()
            .zip(controls.iter_mut())
            .zip(names.iter_mut().zip(namelens))
            .zip(pieces.iter().zip(segs));
        for (hdr, (((iov, control), (name, namelen)), (piece, seg))) in
            hdrs.iter_mut().zip(per_message).take(count)
        {
            // The kernel only reads from a send buffer; `*mut` is what `iovec` wants.
            iov.iov_base = piece.as_ptr().cast_mut().cast();
            iov.iov_len = piece.len();
            let h = &mut hdr.msg_hdr;
            h.msg_name = name.0.as_mut_ptr().cast();
            h.msg_namelen = socklen(namelen);
            h.msg_iov = ptr::from_mut(iov);
            h.msg_iovlen = 1;
            if let Some(seg) = seg {
                let len = cmsg::write_udp_segment(control, seg);
                h.msg_control = control.0.as_mut_ptr().cast();
                h.msg_controllen = len as _;
            }
        }
        let first_is_gso = segs.first().is_some_and(Option::is_some) && count > 0;

        if first_is_gso && self.inject_eio.swap(false, Ordering::Relaxed) {
            return Ok(Round::GsoRejected);
        }
        let hdrs = hdrs.get_mut(..count).unwrap_or_default();
        let (op, result) = if self.mmsg {
            ("sendmmsg", sendmmsg(fd, hdrs))
        } else {
            ("sendmsg", sendmsg_each(fd, hdrs))
        };
        match result {
            Ok(sent) => {
                // Transmits whose first message went out (a split run cut short counts as sent).
                let completed = owner
                    .get(..sent.min(count))
                    .and_then(|o| o.last())
                    .map_or(0, |&last| last + 1);
                Ok(Round::Sent(completed))
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => Ok(Round::Blocked),
                Some(libc::EIO) if first_is_gso => Ok(Round::GsoRejected),
                _ => Ok(Round::Failed(op, e)),
            },
        }
    }
}

/// The outcome of one send round.
enum Round {
    /// This many transmits went out (possibly fewer than were attempted).
    Sent(usize),
    /// The socket buffer is full; nothing went out.
    Blocked,
    /// The first message was a GSO send and the kernel answered `EIO`.
    GsoRejected,
    /// The first message failed.
    Failed(&'static str, io::Error),
}

/// How a transmit goes out.
#[derive(Clone, Copy)]
pub(crate) enum Plan {
    /// One datagram.
    Single,
    /// One GSO send with this segment size.
    Gso(u16),
    /// Separate datagrams of this size.
    Split(u16),
}

pub(crate) fn plan(t: &Transmit<'_>, gso: bool) -> Result<Plan, &'static str> {
    let Some(seg) = t.segment_size else {
        return Ok(Plan::Single);
    };
    if seg == 0 {
        return Err("segment size 0");
    }
    let len = t.contents.len();
    if len <= usize::from(seg) {
        return Ok(Plan::Single);
    }
    if len.div_ceil(usize::from(seg)) > MAX_GSO_SEGMENTS {
        return Err("more than 64 segments");
    }
    Ok(if gso {
        Plan::Gso(seg)
    } else {
        Plan::Split(seg)
    })
}

const EMPTY_IOV: libc::iovec = libc::iovec {
    iov_base: ptr::null_mut(),
    iov_len: 0,
};

/// An all-zero `mmsghdr`: null pointers, zero lengths, zero flags.
pub(crate) fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: `mmsghdr` is a C struct of integers and raw pointers (plus, on some libcs,
    // private padding integers); all-zero is a valid value of each (null pointers).
    unsafe { std::mem::zeroed() }
}

/// `len` as `socklen_t`; only used for the small fixed sizes of this module.
fn socklen(len: usize) -> libc::socklen_t {
    libc::socklen_t::try_from(len).unwrap_or(libc::socklen_t::MAX)
}

/// `recvmmsg(fd, hdrs, MSG_DONTWAIT)`: how many messages arrived (0: none queued).
fn recvmmsg(fd: BorrowedFd<'_>, hdrs: &mut [libc::mmsghdr]) -> Result<usize, SysError> {
    let vlen = libc::c_uint::try_from(hdrs.len()).unwrap_or(0);
    loop {
        // SAFETY: `hdrs` is a live array of `vlen` message headers whose name, iovec and
        // control pointers point at live, writable buffers of the lengths given (set up by the
        // caller, which keeps them borrowed across this call); a null timeout means none.
        let rc = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        if rc >= 0 {
            return Ok(usize::try_from(rc).unwrap_or(0));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(0),
            _ => return Err(SysError::io("recvmmsg", err)),
        }
    }
}

/// The `recvmmsg` fallback: one `recvmsg` per header until none is queued. Fills `msg_len`
/// like `recvmmsg` does.
fn recvmsg_each(fd: BorrowedFd<'_>, hdrs: &mut [libc::mmsghdr]) -> Result<usize, SysError> {
    let mut got = 0;
    for hdr in hdrs.iter_mut() {
        let rc = loop {
            // SAFETY: `hdr.msg_hdr` is a message header whose name, iovec and control pointers
            // point at live, writable buffers of the lengths given (set up by the caller).
            let rc =
                unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut hdr.msg_hdr, libc::MSG_DONTWAIT) };
            if rc >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break rc;
            }
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if got > 0 || err.raw_os_error() == Some(libc::EAGAIN) {
                return Ok(got);
            }
            return Err(SysError::io("recvmsg", err));
        }
        hdr.msg_len = libc::c_uint::try_from(rc).unwrap_or(0);
        got += 1;
    }
    Ok(got)
}

/// `sendmmsg(fd, hdrs, MSG_DONTWAIT)`: how many messages went out; an error only if none did.
fn sendmmsg(fd: BorrowedFd<'_>, hdrs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    let vlen = libc::c_uint::try_from(hdrs.len()).unwrap_or(0);
    loop {
        // SAFETY: `hdrs` is a live array of `vlen` message headers whose name, iovec and
        // control pointers point at live buffers of the lengths given (set up by the caller,
        // which keeps them borrowed across this call); the kernel only reads them, apart from
        // writing each `msg_len`.
        let rc =
            unsafe { libc::sendmmsg(fd.as_raw_fd(), hdrs.as_mut_ptr(), vlen, libc::MSG_DONTWAIT) };
        if rc >= 0 {
            return Ok(usize::try_from(rc).unwrap_or(0));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// The `sendmmsg` fallback with the same contract: one `sendmsg` per header.
fn sendmsg_each(fd: BorrowedFd<'_>, hdrs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    let mut sent = 0;
    for hdr in hdrs.iter() {
        let rc = loop {
            // SAFETY: `hdr.msg_hdr` is a message header whose name, iovec and control pointers
            // point at live buffers of the lengths given; sendmsg only reads them.
            let rc = unsafe {
                libc::sendmsg(fd.as_raw_fd(), &raw const hdr.msg_hdr, libc::MSG_DONTWAIT)
            };
            if rc >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break rc;
            }
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if sent > 0 {
                return Ok(sent);
            }
            return Err(err);
        }
        sent += 1;
    }
    Ok(sent)
}

// The per-call arrays above must stay reasonable on the stack.
const _: () = assert!(size_of::<libc::mmsghdr>() * MAX_BATCH <= 8192);

#[cfg(test)]
mod tests {
    use super::*;

    fn t(len: usize, seg: Option<u16>) -> Transmit<'static> {
        static DATA: [u8; 100_000] = [0; 100_000];
        Transmit {
            dst: "127.0.0.1:9".parse().unwrap(),
            contents: &DATA[..len],
            segment_size: seg,
        }
    }

    #[test]
    fn plans() {
        assert!(matches!(plan(&t(100, None), true), Ok(Plan::Single)));
        assert!(matches!(plan(&t(100, Some(100)), true), Ok(Plan::Single)));
        assert!(matches!(plan(&t(101, Some(100)), true), Ok(Plan::Gso(100))));
        assert!(matches!(
            plan(&t(101, Some(100)), false),
            Ok(Plan::Split(100))
        ));
        assert!(matches!(
            plan(&t(6400, Some(100)), true),
            Ok(Plan::Gso(100))
        ));
        assert!(plan(&t(6401, Some(100)), true).is_err());
        assert!(plan(&t(10, Some(0)), true).is_err());
    }

    #[test]
    fn meta_segments() {
        let m = |len, stride| RecvMeta {
            addr: "127.0.0.1:1".parse().unwrap(),
            len,
            stride,
            truncated: false,
        };
        assert_eq!(m(2800, 1400).segments(), 2);
        assert_eq!(m(2801, 1400).segments(), 3);
        assert_eq!(m(0, 0).segments(), 1);
        assert_eq!(m(10, 10).segments(), 1);
    }

    #[test]
    fn batch_bounds() {
        assert!(RecvBatch::new(0, 10).is_err());
        assert!(RecvBatch::new(65, 10).is_err());
        assert!(RecvBatch::new(1, 0).is_err());
        let b = RecvBatch::new(64, 2048).unwrap();
        assert_eq!((b.capacity(), b.buf_len(), b.len()), (64, 2048, 0));
        assert!(b.get(0).is_none());
    }
}
