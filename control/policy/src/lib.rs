//! HuJSON ACL policy: parsing, validation, and compilation to packet filter rules (sans-IO)
//!
//! Skeleton: filled in by the issue that owns this crate.
