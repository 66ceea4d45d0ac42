//! Invariants for fuzzing the whole pipeline on arbitrary policy text, shared by the
//! cargo-fuzz target (`control/policy/fuzz`, `policy_text`) and by `tests/corpus.rs`, which
//! replays the committed corpus on stable. Not part of the API.
//!
//! For any input: nothing panics; a refusal names a position inside the text; an accepted
//! policy compiles against a small fixed tailnet, every node's filter is accepted by
//! `weft_filter` without legacy fields or skipped entries, visibility is symmetric and never
//! includes the node itself, and the `tests` section runs.

use std::net::IpAddr;

use crate::error::{PolicyError, Position};
use crate::hujson::HujsonError;
use crate::tailnet::{Node, NodeId, Tailnet};
use crate::Policy;

/// A broken invariant, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Six nodes: two users' devices, a tag:server, a tag:db, a tag:router serving 10.33.0.0/16
/// and a tag:exit exit node.
pub fn fuzz_tailnet() -> Tailnet {
    let node = |id: u8, user: &str, tags: &[&str]| Node {
        id: NodeId(u64::from(id)),
        user: user.to_owned(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        addresses: vec![
            IpAddr::from([100, 64, 0, id]),
            IpAddr::from([0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, u16::from(id)]),
        ],
        routes: vec![],
        exit_node: false,
    };
    let mut router = node(5, "alice@example.com", &["tag:router"]);
    router.routes = crate::alias::parse_prefix("10.33.0.0/16")
        .into_iter()
        .collect();
    let mut exit = node(6, "alice@example.com", &["tag:exit"]);
    exit.exit_node = true;
    Tailnet::new(vec![
        node(1, "alice@example.com", &[]),
        node(2, "bob@example.com", &[]),
        node(3, "alice@example.com", &["tag:server"]),
        node(4, "alice@example.com", &["tag:db"]),
        router,
        exit,
    ])
}

/// Runs `data` (lossily decoded as UTF-8) through parsing, compilation, the per-node queries
/// and the tests; returns whether it parsed.
///
/// # Errors
/// [`Violation`] when an invariant of the module doc does not hold.
pub fn check_policy_text(data: &[u8]) -> Result<bool, Violation> {
    let text = String::from_utf8_lossy(data);
    let policy = match Policy::parse(&text) {
        Ok(p) => p,
        Err(e) => {
            let at = match &e {
                PolicyError::Syntax { at, .. }
                | PolicyError::Invalid { at, .. }
                | PolicyError::TestFailed { at, .. }
                | PolicyError::Hujson(HujsonError::UnterminatedComment { at }) => *at,
            };
            let lines = text.split('\n').count();
            if at.line == 0 || at.line > lines || at.column == 0 {
                return Err(Violation(format!("{e}: position outside {lines} lines")));
            }
            if at == (Position { line: 0, column: 0 }) || e.to_string().is_empty() {
                return Err(Violation(format!("{e:?}: empty message")));
            }
            return Ok(false);
        }
    };
    let tailnet = fuzz_tailnet();
    let compiled = policy.compile(&tailnet);
    for n in &tailnet.nodes {
        let rules = compiled.filter_for(n.id);
        let c =
            weft_filter::compile(&rules).map_err(|e| Violation(format!("node {:?}: {e}", n.id)))?;
        if let Some(s) = c.skipped.first() {
            return Err(Violation(format!("node {:?}: skipped entry {s}", n.id)));
        }
        let peers = compiled.peers_of(n.id);
        if peers.contains(&n.id) {
            return Err(Violation(format!("node {:?} sees itself", n.id)));
        }
        for p in peers {
            if !compiled.peers_of(p).contains(&n.id) {
                return Err(Violation(format!("{:?} sees {p:?}, not the reverse", n.id)));
            }
        }
        let _ = policy.auto_approves_exit_node(n);
    }
    let _ = compiled.run_tests();
    Ok(true)
}
