//! Sans-IO WireGuard.
//!
//! This crate is the whole WireGuard protocol — message parsing, the Noise_IKpsk2 handshake,
//! MACs and cookies, transport sessions with replay protection, every timer, and cryptokey
//! routing — as plain state machines. It contains no networking code, reads no clock and draws
//! no randomness of its own: time (`now: Instant`) and a random seed are inputs, bytes in and
//! bytes out are the caller's buffers. The I/O shells (`weft-dataplane` today, the sharded
//! io_uring engine next) own sockets, the TUN device and threads.
//!
//! The entry point is [`Device`]; its documentation gives the calling contract. The layout
//! follows the kernel's: one module per concern ([`messages`], [`handshake`](crate::device),
//! [`cookie`], [`ratelimiter`], [`replay`], [`timers`], [`allowedips`]).
//!
//! Deliberately left out: packet segmentation/coalescing (a `weft-packet` concern) and anything
//! Tailscale-specific beyond the [`demux`] split of the shared UDP socket.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod allowedips;
pub mod cookie;
pub(crate) mod crypto;
pub mod demux;
pub mod device;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod handshake;
pub mod ip;
pub mod messages;
pub mod peer;
pub mod ratelimiter;
pub mod replay;
pub(crate) mod session;
pub mod stats;
#[doc(hidden)]
pub mod testing;
pub mod timers;

use std::net::SocketAddr;

pub use device::{Decapsulated, Device, Encapsulated, ForeignInitiation, PeerInfo, Transmit};
pub use handshake::HandshakeError;
pub use peer::PeerId;
pub use stats::{DeviceStats, RxDrop, TxDrop};

/// Why bytes are not a well-formed WireGuard message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Fewer than the 4 bytes of the type word.
    #[error("message shorter than its type word")]
    TooShort,
    /// The type byte is not 1–4, or a reserved byte is not zero.
    #[error("unknown message type")]
    UnknownType,
    /// The length does not fit the type (148, 92, 64, or at least 32 bytes).
    #[error("wrong length for the message type")]
    BadLength,
}

/// Where a peer's packets go: a UDP address, or a DERP relay region (Tailscale's relays carry
/// WireGuard packets when no direct path works). The data plane only uses UDP today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    /// Directly over UDP.
    Udp(SocketAddr),
    /// Through the DERP relay of this region.
    Derp(DerpRegion),
}

/// A DERP region id, as in the Tailscale DERP map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DerpRegion(pub u16);

/// The buffer size [`Device::encapsulate`] needs for a packet of `len` bytes at tunnel `mtu`:
/// header, the packet padded to a multiple of 16 (bounded by the MTU), and the tag.
pub fn buffer_len_for(len: usize, mtu: usize) -> usize {
    messages::TRANSPORT_HEADER_LEN + messages::padded_len(len, mtu) + messages::TAG_LEN
}
