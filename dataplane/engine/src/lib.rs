//! The weft data plane shell: it drives the sans-IO WireGuard core ([`weft_wg`]) over the
//! platform I/O of [`weft_sys`] and serves the cross-platform UAPI, so that `wg`, `wg-quick`
//! and anything else that configures wireguard-go configures weft the same way.
//!
//! What lives here and nowhere else: threads, locks, the event loop, the UAPI socket. What does
//! not: protocol rules (in `weft-wg`) and `unsafe` (in `weft-sys`). The control plane reaches
//! the data plane only through [`Engine`] (and, later, a narrow `reconfigure` API).
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod apply;
pub mod engine;
mod fastpath;
mod shard;
mod socket;
pub mod uapi;

/// In-memory I/O for whole-loop tests and simulations. Hidden: not part of the API contract.
#[doc(hidden)]
pub mod testing {
    pub use crate::shard::mem::{MemIo, ShardPair, TunCounts};
}

pub use engine::{
    ControlHook, DeviceObserver, DropHook, Engine, EngineConfig, EngineError, PacketFilterControl,
    Stopper,
};
