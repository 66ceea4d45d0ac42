//! DERP relay protocol: frame codec and sans-IO client and server state machines.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod client;
pub mod frame;
pub mod handshake;
pub mod server;
pub mod stun;
