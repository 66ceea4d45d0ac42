//! The crate's one error type.

use std::io;

/// Why a platform operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SysError {
    /// An interface name was empty, longer than 15 bytes, `.` or `..`, or contained `/`, `:`,
    /// whitespace or NUL (the kernel's rules for network device names).
    #[error("invalid interface name {name:?}: {reason}")]
    BadInterfaceName {
        /// The rejected name.
        name: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// The TUN interface was deleted (e.g. `ip link del`) while this handle was still open; the
    /// kernel answers every read and write with `EBADFD` from then on, and interface ioctls with
    /// `ENODEV` (which they also get if the interface was renamed). The handle is useless: drop
    /// it.
    #[error("TUN interface {name} is gone")]
    InterfaceGone {
        /// The interface's name when it was created.
        name: String,
    },
    /// A requested MTU does not fit the kernel's `int` field (it is above `i32::MAX`).
    #[error("MTU {mtu} is out of range")]
    MtuOutOfRange {
        /// The rejected MTU.
        mtu: u32,
    },
    /// [`poll_readable`](crate::poll_readable) was given more descriptors than
    /// [`MAX_POLL_FDS`](crate::MAX_POLL_FDS).
    #[error("cannot poll {count} descriptors at once (at most {max})")]
    TooManyPollFds {
        /// How many descriptors were passed.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// [`poll_readable`](crate::poll_readable) was given a `ready` slice shorter than its
    /// descriptor slice.
    #[error("ready slice has {ready} entries for {fds} descriptors")]
    ReadySliceTooShort {
        /// How many descriptors were passed.
        fds: usize,
        /// How long the `ready` slice was.
        ready: usize,
    },
    /// A configuration value was out of range (a queue count of 0, a buffer ring size that is
    /// not a power of two, a buffer too small for its use, ...); nothing was created.
    #[error("invalid configuration: {reason}")]
    BadConfig {
        /// Which rule the configuration broke.
        reason: &'static str,
    },
    /// The first [`Transmit`](crate::Transmit) handed to a batched send cannot be sent as
    /// described: a segment size of 0, more than 64 segments, or an IPv6 destination on an IPv4
    /// socket. Nothing was sent; drop it and send the rest.
    #[error("invalid transmit: {reason}")]
    BadTransmit {
        /// Which rule it broke.
        reason: &'static str,
    },
    /// io_uring cannot be used here: `io_uring_setup` failed (`ENOSYS`: kernel built without it
    /// or too old; `EPERM`: `kernel.io_uring_disabled` is set or a seccomp filter forbids it;
    /// `ENOMEM`: locked-memory limits), or a feature this crate's io_uring path needs is
    /// missing (provided-buffer rings need Linux 5.19). The caller should fall back to the
    /// `recvmmsg`/`sendmmsg` path ([`UdpBatch`](crate::UdpBatch)) and `ppoll`.
    #[error("io_uring is unavailable ({op})")]
    UringUnavailable {
        /// What failed, e.g. `"io_uring_setup"` or `"IORING_REGISTER_PBUF_RING"`.
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The kernel's io_uring lacks an operation this crate needs (found with
    /// `IORING_REGISTER_PROBE`), e.g. `IORING_OP_READ_MULTISHOT` before Linux 6.7.
    #[error("io_uring operation {op} is not supported by this kernel")]
    UringOpUnsupported {
        /// The missing operation.
        op: &'static str,
    },
    /// A system call failed in a way this crate does not classify further; `op` names it.
    #[error("{op} failed")]
    Io {
        /// The system call or operation that failed, e.g. `"TUNSETIFF"`.
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl SysError {
    /// Wraps an `io::Error` from the operation `op`.
    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        SysError::Io { op, source }
    }

    /// Wraps the calling thread's current `errno` from the operation `op`.
    pub(crate) fn last_os(op: &'static str) -> Self {
        SysError::Io {
            op,
            source: io::Error::last_os_error(),
        }
    }
}

/// An `Io` error for a read or write that moved `done` bytes where the kernel promises all `want`
/// or nothing.
pub(crate) fn short_io(op: &'static str, done: usize, want: usize) -> SysError {
    SysError::Io {
        op,
        source: io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("transferred {done} of {want} bytes"),
        ),
    }
}
