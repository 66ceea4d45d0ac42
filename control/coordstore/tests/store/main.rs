//! `SqliteStore` and `PgStore` against the reference semantics of `weft_tailnet::MemoryStore`:
//! round trips, random op sequences, atomicity, crash durability, durability settings, file
//! mode, schema version, migration from older versions and corruption. One test binary
//! (linking SQLite is the slow part of building these tests). The PostgreSQL tests need a
//! server: `$WEFT_TEST_PG`, by default the one scripts/setup.sh starts; they fail (never
//! skip) when it cannot be reached.
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
mod migrate;
mod pg;
mod props;
mod roundtrip;
