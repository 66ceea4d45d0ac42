//! The packet layer of weft's line-rate data plane: what the engine needs to use the TUN
//! device's offloads.
//!
//! With `IFF_VNET_HDR` and `TUNSETOFFLOAD`, every TUN read starts with a `virtio_net_hdr` and
//! may be a 64 KiB TCP or UDP super-packet, and every write may be one. This crate turns
//! reads into wire-sized packets ([`gso`]) and batches of decrypted packets back into
//! super-packets ([`gro`]), following the kernel's own segmentation and coalescing rules so
//! that neither end of the tunnel can tell.
//!
//! * [`vnet`]: the 10-byte `virtio_net_hdr`, [`GsoType`], flags.
//! * [`checksum`]: the Internet checksum (RFC 1071), pseudo-headers, incremental updates.
//! * [`ip`], [`tcp`], [`udp`]: minimal checked views of the headers GSO and GRO touch.
//! * [`gso`]: split a super-packet into caller buffers, each at a headroom offset so the
//!   WireGuard header fits in front without a copy.
//! * [`gro`]: coalesce a receive batch into frames for the TUN ([`GroTable`]).
//!
//! Like every weft core, this crate does no I/O, reads no clock and contains no `unsafe`;
//! the hot paths ([`gso::split`], [`GroTable::coalesce`]) do not allocate — callers pass the
//! buffers. No input bytes can make it panic (each module states its guarantee); the fuzz
//! targets `packet_vnet_hdr`, `packet_gso_split` and `packet_gro_merge` check that and more,
//! and `tests/fuzz_corpus.rs` replays their corpora on stable.
//!
//! Left out: full packet representations and ICMP (the tailnet filter will bring what it
//! needs), IP fragmentation and reassembly, UFO, and the TUN device itself (`weft-sys`).
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

#[doc(hidden)]
pub mod build;
pub mod checksum;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gro;
pub mod gso;
pub mod ip;
#[cfg(any(test, feature = "proptest"))]
pub mod proptest;
pub mod tcp;
pub mod udp;
pub mod vnet;

pub use error::HeaderError;
pub use gro::{Coalesced, GroStats, GroTable};
pub use gso::{split, GsoError, SuperPacket};
pub use vnet::{GsoType, VirtioNetHdr, VnetError, VNET_HDR_LEN};
