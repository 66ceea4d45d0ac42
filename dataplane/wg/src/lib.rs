//! Sans-IO WireGuard (work in progress; module docs arrive with the modules).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod allowedips;
pub mod replay;
