//! Linux platform I/O for weft: TUN devices (with offloads), UDP sockets (batched, GSO/GRO),
//! io_uring, `poll`, and cross-thread wakeups.
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
//! everywhere else). Each `unsafe` block is a single FFI call, union read or pointer operation
//! with a `// SAFETY:`
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
//! * [`bind_udp_group`] and [`attach_index_steering`]: one `SO_REUSEPORT` socket per shard on
//!   the same port, with a classic-BPF program that sends each response, cookie reply and
//!   transport message to the shard its receiver index names (`index % shards`).
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
//! * io_uring ([`UringUdp`]): one ring per event loop with a multishot `RECVMSG` on the UDP
//!   socket into a provided-buffer ring (source address, `UDP_GRO` segment size and payload
//!   parsed from each buffer), a multishot `READ` on a TUN queue into a second buffer ring, a
//!   [`Waker`]'s eventfd, and `SENDMSG` with `UDP_SEGMENT`;
//!   [`UringUdp::submit_and_wait`] is the only blocking point. If io_uring cannot be set up,
//!   [`SysError::UringUnavailable`] says so and the caller falls back to [`UdpBatch`] and
//!   [`poll_readable`]. Not there yet: registered files and buffers, `SEND_ZC`, SQPOLL, sending
//!   without a copy into a send slot, and TUN writes through the ring (they stay plain
//!   `write`s on the [`Tun`]).
//!
//! Nothing here spawns threads or allocates per packet: receive buffers are preallocated
//! ([`RecvBatch`], the buffer rings), and per-call message headers live on the stack.
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
mod counting_alloc;
mod error;
mod ifaddrs;
mod poll;
mod sockaddr;
mod socket;
mod steering;
mod tun;
mod tun_offload;
mod udp_batch;
mod uring;
mod wake;

pub use counting_alloc::CountingAlloc;
pub use error::SysError;
pub use ifaddrs::{interface_addrs, InterfaceAddr};
pub use poll::{poll_readable, MAX_POLL_FDS};
pub use socket::{bind_udp, set_fwmark, set_socket_buffers};
pub use steering::{attach_index_steering, bind_udp_group, MAX_STEERING_SHARDS};
pub use tun::{interface_exists, interface_index, Tun, WriteOutcome, MAX_INTERFACE_NAME_LEN};
pub use tun_offload::{Offloads, TunOptions, TunQueues, MAX_TUN_QUEUES, VNET_HDR_LEN};
pub use udp_batch::{
    enable_gro, gro_enabled, supports_gso, RecvBatch, RecvMeta, Transmit, UdpBatch, UdpFeatures,
    MAX_BATCH, MAX_GSO_SEGMENTS,
};
pub use uring::{UringConfig, UringEvent, UringSource, UringStats, UringUdp, RECVMSG_OVERHEAD};
pub use wake::Waker;
