//! DERP relay protocol: frame codec and sans-IO client and server state machines
//!
//! Skeleton: filled in by the issue that owns this crate.
