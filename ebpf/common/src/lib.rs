//! Map keys and values shared by weft's eBPF programs and their loader (#[repr(C)], no_std)
//!
//! Skeleton: filled in by the issue that owns this crate.
