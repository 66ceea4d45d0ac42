//! The tailnet ACL policy: HuJSON text → validated [`Policy`] → per-node packet filters
//! ([`weft_filter::FilterRule`], the wire shape official clients take) and peer visibility.
//!
//! This is the policy half of the coordination server (issue 6), kept in its own core crate
//! so that it can be tested on its own, table by table, and so that the data plane's filter
//! (`weft-filter`, whose types it emits) is the one judge of what a compiled rule allows. It
//! does no I/O and reads no clock (its only synchronization is a once-cell per rule that
//! caches the built source list): the server reads the file, builds the [`Tailnet`] snapshot
//! from its database and asks. It depends on `weft-filter`, `serde`, `serde_json` and
//! `thiserror` only (checked by `scripts/check-deps.sh`, rule 1).
//!
//! Behaviour follows Tailscale's: the filters, peer lists, refusals and `tests` verdicts are
//! checked against captures of Tailscale SaaS (`tests/saas_vectors.rs`; all 342 filter and
//! 50 test-verdict captures in Headscale's compatibility data agreed when they were
//! converted). Not implemented: `grants`, `ssh`, `nodeAttrs`, postures and ip sets (accepted
//! and ignored, see [`policy`]), and `cap:` sources.
//!
//! # Use
//! ```
//! use std::net::IpAddr;
//! use weft_policy::{Node, NodeId, Policy, Tailnet};
//!
//! let policy = Policy::parse(weft_policy::DEFAULT_POLICY)?;
//! let node = |id, ip: [u8; 4]| Node {
//!     id: NodeId(id),
//!     user: "alice@example.com".into(),
//!     tags: vec![],
//!     addresses: vec![IpAddr::from(ip)],
//!     routes: vec![],
//!     exit_node: false,
//! };
//! let tailnet = Tailnet::new(vec![node(1, [100, 64, 0, 1]), node(2, [100, 64, 0, 2])]);
//! let compiled = policy.compile(&tailnet);
//! compiled.run_tests()?; // refuse the policy if its `tests` fail
//! let filter = compiled.filter_for(NodeId(1)); // the node's PacketFilter
//! assert!(!filter.is_empty());
//! assert!(compiled.peers_of(NodeId(1)).contains(&NodeId(2)));
//! # Ok::<(), weft_policy::PolicyError>(())
//! ```
//!
//! # For the server
//! * On load and on every change, [`Policy::load`] parses, compiles and runs the `tests`; on
//!   error keep the policy in force and report the error, which names the line and column
//!   ([`PolicyError`]). With no policy file, write out [`DEFAULT_POLICY`] and use it.
//! * Compile once per (policy, snapshot); [`CompiledPolicy::filter_for`] and
//!   [`CompiledPolicy::peers_of`] then cost what that one node needs (see [`compile`]).
//! * When one node joins, changes or leaves, [`CompiledPolicy::upsert_node`] /
//!   [`CompiledPolicy::remove_node`] update the compiled policy for that node alone and
//!   return the only nodes that need a new filter or peer list; after a policy change, every
//!   node may.
//! * Route approval asks [`Policy::auto_approves_route`] and
//!   [`Policy::auto_approves_exit_node`].
//!
//! # Modules
//! [`hujson`] (comments and trailing commas stripped in place, so positions survive),
//! [`locate`] (path → line and column), [`alias`] (the string grammars), [`policy`] (model and
//! validation), [`tailnet`] (the snapshot), [`compile`] (the compiled form and its
//! incremental updates), [`query`] (per-node filters and visibility), `check`
//! (the `tests` section), `approve` (`autoApprovers`), `default` (the allow-all policy).
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod alias;
mod approve;
mod check;
pub mod compile;
mod default;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod hujson;
pub mod locate;
pub mod policy;
pub mod query;
pub mod tailnet;

pub use compile::{CompiledPolicy, INTERNET_RANGES};
pub use default::DEFAULT_POLICY;
pub use error::{Invalid, PolicyError, Position};
pub use policy::{Acl, Destination, Policy, PolicyTest};
pub use query::{affected_by, filter_allow_all};
pub use tailnet::{Node, NodeId, Tailnet};
