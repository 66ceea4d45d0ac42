//! Linux platform I/O for weft: TUN devices, UDP sockets, `poll`, and cross-thread wakeups.
//!
//! # Why this crate exists
//!
//! The WireGuard protocol core (`weft-wg`) is sans-IO: it turns bytes and timestamps into bytes
//! and timers and never touches the operating system. Everything that does touch it lives here,
//! with no protocol knowledge at all — this crate moves opaque packets between the kernel and
//! buffers, nothing more. The split follows `quinn-udp`'s: the platform layer evolves (and is
//! tested) at the speed of kernel interfaces, the protocol at the speed of the protocol, and the
//! engine in `weft-dataplane` glues them together through a small seam.
//!
//! It is also the only crate in `dataplane/` allowed to use `unsafe` (the workspace forbids it
//! everywhere else). Each `unsafe` block is a single FFI call or union read with a `// SAFETY:`
//! comment (`clippy::undocumented_unsafe_blocks` and `multiple_unsafe_ops_per_block` are denied),
//! and each is wrapped in a safe function whose errors are typed ([`SysError`]), so the rest of
//! the data plane audits no `unsafe` at all.
//!
//! # What is here now
//!
//! Plain system calls, one packet per call:
//!
//! * [`Tun`]: a layer-3 TUN interface (`IFF_TUN | IFF_NO_PI`) with MTU, index and up/down
//!   ioctls; reads and writes distinguish "nothing now", "dropped" and "interface deleted"
//!   ([`WriteOutcome`], [`SysError::InterfaceGone`]).
//! * [`bind_udp`], [`set_socket_buffers`], [`set_fwmark`]: the WireGuard UDP socket
//!   (dual-stack, falling back to IPv4-only).
//! * [`poll_readable`] and [`Waker`]: a minimal readiness loop that another thread can
//!   interrupt.
//!
//! The line-rate primitives:
//!
//! * TUN offloads ([`Tun::create_with`], [`TunOptions`]): `IFF_VNET_HDR` with a
//!   [`VNET_HDR_LEN`]-byte virtio-net header on every packet, `TUNSETOFFLOAD` negotiated down
//!   [`Offloads::LADDER`] (the kernel then hands over and accepts 64 KiB TCP/UDP
//!   super-packets), and `IFF_MULTI_QUEUE` with one descriptor per queue. The header is moved,
//!   not parsed: that is `weft-packet`'s job.
//! * Batched UDP ([`UdpBatch`]): `recvmmsg` into a preallocated [`RecvBatch`] with the
//!   source address and the `UDP_GRO` segment size of each message, and `sendmmsg` of
//!   [`Transmit`]s with `UDP_SEGMENT` (GSO); GSO is dropped for good after an `EIO`, as
//!   wireguard-go does. [`UdpFeatures`] turns each feature off to force its fallback.
//!
//! # What it will grow into
//!
//! An io_uring driver for the same operations (multishot receive into provided-buffer rings),
//! so the engine blocks in one place; see the planned shard design in `docs/ARCHITECTURE.md`.
//!
//! # Platform
//!
//! Linux only.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod cmsg;
mod error;
mod poll;
mod sockaddr;
mod socket;
mod tun;
mod tun_offload;
mod udp_batch;
mod wake;

pub use error::SysError;
pub use poll::{poll_readable, MAX_POLL_FDS};
pub use socket::{bind_udp, set_fwmark, set_socket_buffers};
pub use tun::{interface_exists, Tun, WriteOutcome, MAX_INTERFACE_NAME_LEN};
pub use tun_offload::{Offloads, TunOptions, TunQueues, MAX_TUN_QUEUES, VNET_HDR_LEN};
pub use udp_batch::{
    enable_gro, gro_enabled, supports_gso, RecvBatch, RecvMeta, Transmit, UdpBatch, UdpFeatures,
    MAX_BATCH, MAX_GSO_SEGMENTS,
};
pub use wake::Waker;
