//! `SqliteStore` against the reference semantics of `weft_tailnet::MemoryStore`: round trips,
//! random op sequences, atomicity, crash durability, file mode, schema version and corruption.
//! One test binary (linking SQLite is the slow part of building these tests).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    unreachable_pub
)]

mod common;
mod crash;
mod files;
mod props;
mod roundtrip;
