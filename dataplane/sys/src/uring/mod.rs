//! The io_uring driver: one ring per event loop that receives UDP (multishot `RECVMSG` into a
//! provided-buffer ring, with the `UDP_GRO` segment size), reads the TUN (multishot `READ`
//! into its own buffer ring, Linux 6.7), watches a [`Waker`](crate::Waker)'s eventfd, and sends UDP
//! (`SENDMSG`, with `UDP_SEGMENT` for GSO). [`UringUdp::submit_and_wait`] is the loop's only
//! blocking point; [`UringUdp::drain`] hands each completion to a callback as a
//! [`UringEvent`] borrowing the kernel-filled buffer, and returns the buffer to its ring when
//! the callback returns.
//!
//! Status: receive (UDP and TUN), wakeups and sends work and are tested against the kernel,
//! including agreement with [`UdpBatch`](crate::UdpBatch) on the same traffic, buffer-ring
//! exhaustion and re-arming, the GSO `EIO` fallback, runs that need fragmentation, and a
//! single-issuer ring set up on one thread and driven by another. The engine drives one per
//! shard (`weft-dataplane`'s io_uring backend). Not done: registered files/buffers,
//! zero-copy send (`SEND_ZC`), SQPOLL, and sending straight from a caller's buffer (a transmit
//! is copied once into a send slot); the TUN write path stays a plain `write` on the TUN.
//!
//! Why a callback and not an iterator of owned packets: the payload lives in a ring buffer
//! that must go back to the kernel, so a borrow that ends with the callback is the one way to
//! hand it over without a copy and without a buffer that can be lost.

mod buf_ring;
mod drive;
mod send;

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use io_uring::{opcode, IoUring, Probe};

use crate::cmsg::RECV_SPACE;
use crate::sockaddr::{self, Family, ADDR_SPACE};
use crate::udp_batch::{enable_gro, supports_gso, RecvMeta, UdpFeatures};
use crate::SysError;
use buf_ring::BufRing;
use send::SendPool;

/// Bytes at the start of each UDP receive buffer that are not payload: the
/// `io_uring_recvmsg_out` header (16), the source address area (32) and the control area (64).
pub const RECVMSG_OVERHEAD: usize = 16 + ADDR_SPACE + RECV_SPACE;

/// Buffer group ids of the two rings.
const UDP_BGID: u16 = 0;
const TUN_BGID: u16 = 1;

/// `user_data` tags: the kind in the high 32 bits, a slot in the low 16.
const TAG_UDP_RECV: u64 = 1 << 32;
const TAG_TUN_READ: u64 = 2 << 32;
const TAG_WAKE: u64 = 3 << 32;
const TAG_SEND: u64 = 4 << 32;
const TAG_CANCEL: u64 = 5 << 32;
const TAG_MASK: u64 = 0xffff_ffff << 32;

/// A multishot receive is re-armed after at most this many errors in a row (without a
/// successful completion in between); then it stays off until [`UringUdp::rearm`].
const MAX_FAIL_STREAK: u32 = 3;

/// Sizes of a [`UringUdp`]'s rings and buffers. Buffer counts are powers of two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringConfig {
    /// Submission queue entries (the completion queue gets twice as many).
    pub sq_entries: u32,
    /// Buffers in the UDP receive ring.
    pub udp_buffers: u16,
    /// Bytes per UDP receive buffer, [`RECVMSG_OVERHEAD`] included. With GRO a coalesced
    /// message is up to 64 KiB: `65535 + RECVMSG_OVERHEAD` never truncates.
    pub udp_buffer_len: u32,
    /// Buffers in the TUN read ring.
    pub tun_buffers: u16,
    /// Bytes per TUN read buffer: `VNET_HDR_LEN + 65535` for a TUN with offloads.
    pub tun_buffer_len: u32,
    /// Sends that can be in flight at once.
    pub send_slots: u16,
    /// Largest transmit (a whole GSO run) in bytes.
    pub send_slot_len: u32,
    /// GSO and GRO as in [`UdpBatch`](crate::UdpBatch); `mmsg` has no meaning here.
    pub features: UdpFeatures,
    /// One thread submits and reaps (`IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN`): the
    /// kernel then runs completion work only inside this thread's `io_uring_enter`, in
    /// batches, instead of interrupting it. The ring starts disabled; the thread that will
    /// drive it calls [`UringUdp::enable`] first (setup may happen on another thread).
    pub single_issuer: bool,
}

impl Default for UringConfig {
    fn default() -> Self {
        UringConfig {
            sq_entries: 256,
            udp_buffers: 64,
            udp_buffer_len: (65535 + RECVMSG_OVERHEAD) as u32,
            tun_buffers: 64,
            tun_buffer_len: (crate::VNET_HDR_LEN + 65535) as u32,
            send_slots: 64,
            send_slot_len: 65535,
            features: UdpFeatures::default(),
            single_issuer: false,
        }
    }
}

/// Which receive operation an event or error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UringSource {
    /// The UDP socket's multishot `RECVMSG`.
    Udp,
    /// The TUN's multishot `READ`.
    Tun,
    /// The waker's eventfd `READ`.
    Wake,
}

/// One completion, as [`UringUdp::drain`] hands it over. Borrowed payloads go back to their
/// ring when the callback returns.
#[derive(Debug)]
#[non_exhaustive]
pub enum UringEvent<'a> {
    /// A UDP datagram (or, with GRO, a coalesced run; see [`RecvMeta::stride`]).
    Udp {
        /// Source, length, segment size, truncation.
        meta: RecvMeta,
        /// The payload.
        payload: &'a [u8],
    },
    /// A packet read from the TUN, virtio-net header first if the TUN has one.
    Tun {
        /// The bytes read.
        packet: &'a [u8],
    },
    /// The [`Waker`](crate::Waker) was woken (its counter has been read, so it is reset).
    Woken,
    /// A send failed (the datagram is dropped). A GSO `EIO` is not reported: it is handled by
    /// resending the run as plain datagrams.
    SendFailed {
        /// Where it was going.
        dst: std::net::SocketAddr,
        /// The kernel's error.
        error: io::Error,
    },
    /// A receive operation failed. It is re-armed at the next submit unless it failed three
    /// times in a row without a success in between; [`UringUdp::rearm`] tries again then.
    RecvFailed {
        /// Which one.
        source: UringSource,
        /// The kernel's error.
        error: io::Error,
    },
}

/// Counters, for accounting and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UringStats {
    /// UDP messages delivered.
    pub udp_received: u64,
    /// TUN packets delivered.
    pub tun_received: u64,
    /// Times a multishot receive stopped because its buffer ring was empty (`ENOBUFS`); each
    /// one is re-armed at the next submit, and the socket or TUN queue holds the data meanwhile.
    pub out_of_buffers: u64,
    /// Times a multishot operation ended and was re-armed (including after `ENOBUFS`).
    pub rearmed: u64,
    /// Sends completed successfully.
    pub sent: u64,
    /// GSO sends the kernel answered with `EIO` (then GSO is off and the run was resent split).
    pub gso_eio: u64,
    /// GSO sends the kernel answered with `EMSGSIZE` (datagrams that need IP fragmentation);
    /// each run was resent as plain datagrams, and GSO stays on.
    pub gso_emsgsize: u64,
    /// UDP completions whose buffer could not be parsed (never expected).
    pub malformed: u64,
}

/// A receive source: its fd (our own duplicate), its ring, its state.
struct Rx {
    fd: OwnedFd,
    ring: BufRing,
    armed: bool,
    fail_streak: u32,
}

/// The `msghdr` template of the multishot `RECVMSG`: only `msg_namelen` and `msg_controllen`
/// are used (they size the areas in each buffer); every pointer is null.
struct MsgTemplate(Box<libc::msghdr>);

// SAFETY: the template's pointers are all null; it refers to no memory, so sending it to
// another thread shares nothing.
unsafe impl Send for MsgTemplate {}

/// The waker's eventfd and the 8 bytes its `READ` fills.
struct WakeRx {
    fd: OwnedFd,
    buf: Box<[u8; 8]>,
    armed: bool,
}

/// An io_uring event loop driver for one UDP socket, optionally one TUN queue and one
/// [`Waker`](crate::Waker). See the module documentation.
///
/// Not thread-safe (`&mut self` everywhere); it is `Send`, so it can be built on one thread
/// and run on another.
pub struct UringUdp {
    // Dropped first: the ring goes away before the memory it used (see Drop).
    ring: IoUring,
    probe: Probe,
    family: Family,
    udp: Rx,
    msg: MsgTemplate,
    tun: Option<Rx>,
    wake: Option<WakeRx>,
    sends: SendPool,
    gso: bool,
    gro: bool,
    inject_eio: bool,
    stats: UringStats,
    /// Buffer count and length for the TUN ring, from the config.
    tun_config: (u16, u32),
}

impl std::fmt::Debug for UringUdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringUdp")
            .field("gso", &self.gso)
            .field("gro", &self.gro)
            .field("tun", &self.tun.is_some())
            .field("wake", &self.wake.is_some())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn unavailable(op: &'static str) -> impl FnOnce(io::Error) -> SysError {
    move |source| SysError::UringUnavailable { op, source }
}

fn check_ring_size(
    count: u16,
    len: u32,
    min_len: usize,
    what: &'static str,
) -> Result<(), SysError> {
    if count == 0 || !count.is_power_of_two() || count > 32768 {
        return Err(SysError::BadConfig { reason: what });
    }
    if (len as usize) <= min_len {
        return Err(SysError::BadConfig {
            reason: "buffer too small for its use",
        });
    }
    Ok(())
}

impl UringUdp {
    /// Sets up a ring for the bound UDP socket `udp` (a duplicate of its descriptor is kept, so
    /// the caller may close its own), registers the UDP buffer ring and arms the multishot
    /// receive (submitted by the first [`UringUdp::submit_and_wait`]). GRO is turned on and
    /// GSO probed as `config.features` ask, as [`UdpBatch::new`](crate::UdpBatch::new) does.
    ///
    /// # Errors
    ///
    /// [`SysError::UringUnavailable`] if io_uring cannot be used (setup refused, no
    /// `IORING_FEAT_EXT_ARG` (5.11), or no provided-buffer rings (5.19)): fall back to
    /// [`UdpBatch`](crate::UdpBatch). [`SysError::UringOpUnsupported`] if `RECVMSG` or
    /// `SENDMSG` is missing. [`SysError::BadConfig`] for bad sizes; [`SysError::Io`] if `udp`
    /// is not a bound IP socket or cannot be duplicated, or memory cannot be mapped.
    pub fn new(udp: impl AsFd, config: &UringConfig) -> Result<UringUdp, SysError> {
        check_ring_size(
            config.udp_buffers,
            config.udp_buffer_len,
            RECVMSG_OVERHEAD,
            "udp_buffers must be a power of two up to 32768",
        )?;
        check_ring_size(
            config.tun_buffers,
            config.tun_buffer_len,
            0,
            "tun_buffers must be a power of two up to 32768",
        )?;
        if config.send_slots == 0 || config.send_slot_len == 0 {
            return Err(SysError::BadConfig {
                reason: "send_slots and send_slot_len must be positive",
            });
        }
        let fd = udp.as_fd();
        let family = sockaddr::socket_family(fd)?;
        let mut builder = IoUring::builder();
        builder.setup_cqsize(config.sq_entries.saturating_mul(2));
        if config.single_issuer {
            builder
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_r_disabled();
        } else {
            // Completion work runs when the thread next enters the kernel, not by interrupting
            // it (measured: ~20 % more throughput in the engine than the default).
            builder.setup_coop_taskrun();
        }
        let ring = builder
            .build(config.sq_entries)
            .map_err(unavailable("io_uring_setup"))?;
        if !ring.params().is_feature_ext_arg() {
            return Err(SysError::UringUnavailable {
                op: "IORING_FEAT_EXT_ARG",
                source: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
            });
        }
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(unavailable("IORING_REGISTER_PROBE"))?;
        for (code, op) in [
            (opcode::RecvMsg::CODE, "IORING_OP_RECVMSG"),
            (opcode::SendMsg::CODE, "IORING_OP_SENDMSG"),
            (opcode::Read::CODE, "IORING_OP_READ"),
            (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
        ] {
            if !probe.is_supported(code) {
                return Err(SysError::UringOpUnsupported { op });
            }
        }
        let ring_mem = BufRing::new(config.udp_buffers, config.udp_buffer_len as usize, UDP_BGID)
            .map_err(|e| SysError::io("mmap buffer ring", e))?;
        register(&ring, &ring_mem)?;
        let gso = config.features.gso && supports_gso(fd);
        let gro = config.features.gro && enable_gro(fd).is_ok();
        let dup = fd
            .try_clone_to_owned()
            .map_err(|e| SysError::io("dup UDP socket", e))?;
        let sends = SendPool::new(config.send_slots, config.send_slot_len as usize)
            .map_err(|e| SysError::io("mmap send slots", e))?;
        let mut msg = crate::udp_batch::zeroed_mmsghdr().msg_hdr;
        msg.msg_namelen = ADDR_SPACE as libc::socklen_t;
        msg.msg_controllen = RECV_SPACE as _;
        Ok(UringUdp {
            ring,
            probe,
            family,
            udp: Rx {
                fd: dup,
                ring: ring_mem,
                armed: false,
                fail_streak: 0,
            },
            msg: MsgTemplate(Box::new(msg)),
            tun: None,
            wake: None,
            sends,
            gso,
            gro,
            inject_eio: false,
            stats: UringStats::default(),
            tun_config: (config.tun_buffers, config.tun_buffer_len),
        })
    }
}

fn register(ring: &IoUring, buf_ring: &BufRing) -> Result<(), SysError> {
    // SAFETY: the ring memory (`entries` 16-byte entries, page-aligned) and the buffers it
    // points to are mappings owned by `buf_ring`, which the `UringUdp` keeps until after the
    // io_uring itself is closed and every operation using them has completed (or leaks them).
    let rc = unsafe {
        ring.submitter().register_buf_ring_with_flags(
            buf_ring.ring_addr(),
            buf_ring.entries(),
            buf_ring.bgid(),
            0,
        )
    };
    rc.map_err(unavailable("IORING_REGISTER_PBUF_RING"))
}
