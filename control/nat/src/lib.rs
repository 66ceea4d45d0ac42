//! NAT traversal as a sans-IO core: how two nodes behind NATs find a direct path.
//!
//! A node starts every conversation through its peer's home DERP relay, then looks for a direct
//! UDP path and moves its packets there once a ping round-trips, falling back to the relay when
//! the path dies (`tailscale-protocol.md` §7, §8). Everything that decides — which addresses a
//! node has ([`discovery`], STUN), which messages to send ([`disco`]), which path a peer's
//! packets take ([`path`]), how to punch through two port-randomising NATs ([`birthday`]) — is
//! here as state machines over bytes and time, tested with simulated NATs and no sockets. The
//! shell (`weft-magicsock`) owns the UDP socket shared with WireGuard and the DERP connections.
//!
//! Why sans-IO: NAT traversal is all timing and corner cases (who pings first, which mapping a
//! NAT made, when trust runs out). A deterministic core can be driven through those cases by a
//! simulated network in milliseconds; the namespace tests then only have to show that the shell
//! moves the bytes. This crate reads no clock and draws no OS randomness; it is a core crate
//! under rule 1 of the architecture.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod birthday;
pub mod disco;
pub mod discovery;
#[doc(hidden)]
pub mod fuzzing;
pub mod node;
pub mod path;
#[doc(hidden)]
pub mod sim;
