//! TUN with a virtio-net header, segmentation/checksum offloads and several queues.
//!
//! With `IFF_VNET_HDR` every packet read from or written to the TUN is preceded by a
//! [`VNET_HDR_LEN`]-byte `struct virtio_net_hdr` (`linux/virtio_net.h`), little-endian on this
//! platform: `flags: u8, gso_type: u8, hdr_len: u16, gso_size: u16, csum_start: u16,
//! csum_offset: u16`. Once offloads are accepted (`TUNSETOFFLOAD`), the kernel hands over TCP and
//! UDP "super-packets" of up to 64 KiB with `gso_type`/`gso_size` set and the checksum left
//! partial (`VIRTIO_NET_HDR_F_NEEDS_CSUM`), and accepts them in writes. This crate moves those
//! bytes unchanged; parsing and building the header is `weft-packet`'s job.
//!
//! The header size stays 10 (`TUNSETVNETHDRSZ` is set to 10 explicitly, the kernel's default):
//! the 12-byte form adds `num_buffers`, which only mergeable receive buffers (virtio devices, not
//! TUN) use.

use std::fmt;
use std::ops::BitOr;
use std::os::fd::AsRawFd;

use crate::{SysError, Tun};

/// Bytes of the virtio-net header before each packet on a TUN opened with
/// [`TunOptions::vnet_hdr`].
pub const VNET_HDR_LEN: usize = 10;

/// The most queues one multi-queue TUN can have (`MAX_TAP_QUEUES`).
pub const MAX_TUN_QUEUES: usize = 256;

/// How to open a TUN with [`Tun::create_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunOptions {
    /// Prefix each packet with a virtio-net header (`IFF_VNET_HDR`) and negotiate offloads.
    pub vnet_hdr: bool,
    /// Open a multi-queue device (`IFF_MULTI_QUEUE`): `queues` descriptors, each its own queue;
    /// the kernel spreads outgoing flows over them by hash.
    pub multi_queue: bool,
    /// How many descriptors to open: 1, or up to [`MAX_TUN_QUEUES`] with `multi_queue`.
    pub queues: usize,
}

impl Default for TunOptions {
    /// One queue with the virtio-net header and offloads: what a line-rate data plane wants.
    fn default() -> Self {
        TunOptions {
            vnet_hdr: true,
            multi_queue: false,
            queues: 1,
        }
    }
}

/// A set of TUN offload flags (`TUN_F_*`), as passed to `TUNSETOFFLOAD`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Offloads(u32);

impl Offloads {
    /// No offloads: every packet is at most the MTU with a complete checksum.
    pub const NONE: Offloads = Offloads(0);
    /// The reader handles (and the writer may send) packets with a partial checksum.
    pub const CSUM: Offloads = Offloads(libc::TUN_F_CSUM);
    /// TCP over IPv4 segmentation offload: super-packets up to 64 KiB.
    pub const TSO4: Offloads = Offloads(libc::TUN_F_TSO4);
    /// TCP over IPv6 segmentation offload.
    pub const TSO6: Offloads = Offloads(libc::TUN_F_TSO6);
    /// UDP over IPv4 segmentation offload (`UDP_L4` GSO, Linux 6.2).
    pub const USO4: Offloads = Offloads(libc::TUN_F_USO4);
    /// UDP over IPv6 segmentation offload (Linux 6.2). The kernel accepts USO only as the
    /// USO4 + USO6 pair, and only with CSUM.
    pub const USO6: Offloads = Offloads(libc::TUN_F_USO6);
    /// Everything this crate asks for first.
    pub const ALL: Offloads = Offloads(
        libc::TUN_F_CSUM
            | libc::TUN_F_TSO4
            | libc::TUN_F_TSO6
            | libc::TUN_F_USO4
            | libc::TUN_F_USO6,
    );

    /// What [`Tun::create_with`] tries, in order, until the kernel accepts one: all five, then
    /// without USO (kernels before 6.2 answer `EINVAL` to unknown flags), then checksum only,
    /// then nothing.
    pub const LADDER: [Offloads; 4] = [
        Offloads::ALL,
        Offloads(libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6),
        Offloads::CSUM,
        Offloads::NONE,
    ];

    /// The raw `TUN_F_*` bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every flag in `other` is set in `self`.
    pub const fn contains(self, other: Offloads) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for Offloads {
    type Output = Offloads;
    fn bitor(self, rhs: Offloads) -> Offloads {
        Offloads(self.0 | rhs.0)
    }
}

impl fmt::Debug for Offloads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Offloads::CSUM, "CSUM"),
            (Offloads::TSO4, "TSO4"),
            (Offloads::TSO6, "TSO6"),
            (Offloads::USO4, "USO4"),
            (Offloads::USO6, "USO6"),
        ];
        let mut first = true;
        for (flag, name) in names {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("NONE")?;
        }
        Ok(())
    }
}

/// The descriptors of a TUN opened with [`Tun::create_with`] and the offloads the kernel
/// accepted for it.
#[derive(Debug)]
pub struct TunQueues {
    /// One [`Tun`] per queue, all on the same interface (`queues[0].name()`). Dropping the last
    /// one deletes a non-persistent interface.
    pub queues: Vec<Tun>,
    /// The offloads in force (`NONE` without `vnet_hdr`). Packets read may use any of them;
    /// packets written may too.
    pub offloads: Offloads,
}

impl Tun {
    /// Creates (or attaches to) the TUN interface `name` as `options` say: `IFF_TUN |
    /// IFF_NO_PI`, plus `IFF_VNET_HDR` and `IFF_MULTI_QUEUE` if asked, one descriptor per queue.
    ///
    /// With `vnet_hdr`, the header size is set to [`VNET_HDR_LEN`] (`TUNSETVNETHDRSZ`) and
    /// offloads are negotiated with `TUNSETOFFLOAD` down [`Offloads::LADDER`]: each `EINVAL`
    /// moves to the next rung. Reads then need a buffer of `VNET_HDR_LEN + 65535` bytes to never
    /// truncate a super-packet. Descriptors are non-blocking and close-on-exec, like
    /// [`Tun::create`]'s.
    ///
    /// # Errors
    ///
    /// [`SysError::BadConfig`] for 0 queues, more than one without `multi_queue`, or more than
    /// [`MAX_TUN_QUEUES`]; otherwise as [`Tun::create`], plus [`SysError::Io`] if
    /// `TUNSETVNETHDRSZ` or `TUNSETOFFLOAD` fails for a reason other than `EINVAL` (op names
    /// the ioctl). Queues opened before a failure are closed again.
    pub fn create_with(name: &str, options: TunOptions) -> Result<TunQueues, SysError> {
        if options.queues == 0 {
            return Err(SysError::BadConfig {
                reason: "a TUN needs at least one queue",
            });
        }
        if options.queues > 1 && !options.multi_queue {
            return Err(SysError::BadConfig {
                reason: "several TUN queues need multi_queue",
            });
        }
        if options.queues > MAX_TUN_QUEUES {
            return Err(SysError::BadConfig {
                reason: "a TUN has at most 256 queues",
            });
        }
        let mut flags = libc::IFF_TUN | libc::IFF_NO_PI;
        if options.vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        if options.multi_queue {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        let first = Tun::open(name, flags)?;
        let offloads = if options.vnet_hdr {
            set_vnet_hdr_len(&first)?;
            negotiate_offloads(&first)?
        } else {
            Offloads::NONE
        };
        let resolved = first.name().to_owned();
        let mut queues = Vec::with_capacity(options.queues);
        queues.push(first);
        for _ in 1..options.queues {
            // Same name and flags attach another queue to the device just created.
            queues.push(Tun::open(&resolved, flags)?);
        }
        Ok(TunQueues { queues, offloads })
    }

    /// The virtio-net header size in force (`TUNGETVNETHDRSZ`), for checks and tests.
    ///
    /// # Errors
    ///
    /// [`SysError::Io`] if the ioctl fails.
    pub fn vnet_hdr_len(&self) -> Result<usize, SysError> {
        let mut size: libc::c_int = 0;
        // SAFETY: TUNGETVNETHDRSZ writes one `int` through its argument, which points at `size`,
        // a live c_int; the descriptor is an attached TUN.
        let rc = unsafe { libc::ioctl(self.as_raw_fd(), libc::TUNGETVNETHDRSZ, &raw mut size) };
        if rc < 0 {
            return Err(SysError::last_os("TUNGETVNETHDRSZ"));
        }
        usize::try_from(size).map_err(|_| {
            SysError::io(
                "TUNGETVNETHDRSZ",
                std::io::Error::new(std::io::ErrorKind::InvalidData, "negative size"),
            )
        })
    }
}

/// `TUNSETVNETHDRSZ` to [`VNET_HDR_LEN`].
fn set_vnet_hdr_len(tun: &Tun) -> Result<(), SysError> {
    // 10 fits a c_int.
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    let size = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one `int` through its argument, which points at `size`, a
    // live c_int; the descriptor is an attached TUN.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETVNETHDRSZ, &raw const size) };
    if rc < 0 {
        return Err(SysError::last_os("TUNSETVNETHDRSZ"));
    }
    Ok(())
}

/// Walks [`Offloads::LADDER`] until `TUNSETOFFLOAD` accepts a rung.
fn negotiate_offloads(tun: &Tun) -> Result<Offloads, SysError> {
    for offloads in Offloads::LADDER {
        match set_offload(tun, offloads) {
            Ok(()) => return Ok(offloads),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => continue,
            Err(e) => return Err(SysError::io("TUNSETOFFLOAD", e)),
        }
    }
    // The last rung (no offloads) is only refused for reasons other than EINVAL, handled above;
    // a kernel that refused it with EINVAL has no offload support to report.
    Ok(Offloads::NONE)
}

/// `TUNSETOFFLOAD` with `offloads` (the argument is the flag word itself, not a pointer).
fn set_offload(tun: &Tun, offloads: Offloads) -> std::io::Result<()> {
    let arg = libc::c_ulong::from(offloads.bits());
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long of TUN_F_* flags) and
    // dereferences nothing; the descriptor is an attached TUN.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETOFFLOAD, arg) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_flags() {
        assert_eq!(Offloads::ALL.bits(), 0x67);
        assert_eq!(format!("{:?}", Offloads::ALL), "CSUM|TSO4|TSO6|USO4|USO6");
        assert_eq!(format!("{:?}", Offloads::NONE), "NONE");
        assert!(Offloads::ALL.contains(Offloads::TSO4 | Offloads::USO6));
        assert!(!Offloads::CSUM.contains(Offloads::TSO4));
        assert_eq!(
            Offloads::LADDER[1],
            Offloads::CSUM | Offloads::TSO4 | Offloads::TSO6
        );
        assert!(Offloads::NONE.is_empty());
    }

    #[test]
    fn bad_queue_counts_are_refused_before_any_syscall() {
        let bad = |queues, multi_queue| {
            matches!(
                Tun::create_with(
                    "wtsnever0",
                    TunOptions {
                        vnet_hdr: true,
                        multi_queue,
                        queues,
                    }
                ),
                Err(SysError::BadConfig { .. })
            )
        };
        assert!(bad(0, false));
        assert!(bad(2, false));
        assert!(bad(257, true));
    }
}
