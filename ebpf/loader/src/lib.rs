//! Loads weft's eBPF programs with aya, swaps their maps atomically and reads their counters
//!
//! Skeleton: filled in by the issue that owns this crate.
