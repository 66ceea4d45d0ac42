//! The coordinator under arbitrary sequences of requests, for the `coordinator_ops` fuzz
//! target (`control/tailnet/fuzz`) and the corpus replay and property tests that run it on
//! stable (`tests/fuzz_corpus.rs`).
//!
//! Bytes decode into a sequence of what clients and admins do — registrations with good,
//! spent, expired and forged keys, interactive logins and approvals, logouts, map streams with
//! advertised routes, lite updates, closes, admin deletes, expiries, route approvals, renames,
//! tags, policy changes, the passing of time. After every step the returned store ops are
//! applied to a [`MemoryStore`] (which must accept them), and the invariants hold:
//! * nothing panics;
//! * addresses and MagicDNS names are unique; every open session belongs to a live node, and
//!   the peers and filter it was sent add up to what its node should have (deltas complete);
//! * a coordinator rebuilt from the store agrees with the live one on everything persistent
//!   (nodes, users, keys) — no state change is ever missing from the ops.
#![doc(hidden)]

use std::collections::BTreeSet;

use weft_tailcfg::{
    DiscoPublic, Hostinfo, IpPrefix, MachinePublic, MapRequest, NodePublic, RegisterRequest,
    RegisterResponseAuth, Time,
};

use crate::store::{MemoryStore, Store};
use crate::{Config, Coordinator, MapReply, SessionId};

/// An invariant that did not hold.
#[derive(Debug)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

const POLICIES: [&str; 3] = [
    weft_policy::DEFAULT_POLICY,
    r#"{"acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]}],
        "autoApprovers": {"routes": {"10.0.0.0/8": ["alice@"]}, "exitNode": ["bob@"]}}"#,
    r#"{"tagOwners": {"tag:srv": ["alice@"]}, "acls": [{"action": "accept", "src": ["alice@"], "dst": ["tag:srv:22"]}]}"#,
];

fn key(seed: u8, salt: u8) -> weft_keys::PublicKey {
    let mut b = [salt; 32];
    b[1] = seed;
    weft_keys::PrivateKey::from_bytes(b).public_key()
}

fn machine(i: u8) -> MachinePublic {
    MachinePublic::new(key(i % 8, 1))
}

/// Node keys: each machine has two, so rotations and cross-machine reuse happen.
fn node_key(i: u8) -> NodePublic {
    NodePublic::new(key(i % 16, 2))
}

fn routes(mask: u8) -> Vec<IpPrefix> {
    [
        "10.0.0.0/24",
        "10.1.0.0/16",
        "192.168.0.0/24",
        "0.0.0.0/0",
        "::/0",
    ]
    .iter()
    .enumerate()
    .filter(|(i, _)| mask & (1 << i) != 0)
    .filter_map(|(_, r)| r.parse().ok())
    .collect()
}

struct Run {
    c: Coordinator,
    store: MemoryStore,
    now: i64,
    keys: Vec<String>,
    sessions: Vec<SessionId>,
    entropy: u32,
}

impl Run {
    fn time(&self) -> Time {
        Time::from_unix(1_800_000_000 + self.now, 0).unwrap_or(Time::ZERO)
    }

    fn fresh<const N: usize>(&mut self) -> [u8; N] {
        self.entropy = self.entropy.wrapping_add(1);
        let mut b = [0u8; N];
        for (i, x) in self.entropy.to_le_bytes().iter().enumerate() {
            if let Some(slot) = b.get_mut(i) {
                *slot = *x;
            }
        }
        b
    }

    fn apply(&mut self, ops: &[crate::StoreOp]) -> Result<(), Violation> {
        self.store
            .apply(ops)
            .map_err(|e| Violation(format!("store refused the ops: {e}")))
    }

    fn register(&mut self, m: u8, nk: u8, auth: Option<String>, followup: String, expiry: Time) {
        let req = RegisterRequest {
            version: 133,
            node_key: node_key(nk),
            auth: auth.map(|auth_key| RegisterResponseAuth { auth_key }),
            followup,
            expiry,
            hostinfo: Some(Hostinfo {
                hostname: format!("host {m}"),
                ..Hostinfo::default()
            }),
            ..RegisterRequest::default()
        };
        let now = self.time();
        let e = self.fresh::<16>();
        if let Ok((_, ops)) = self.c.register(now, machine(m), &req, &e) {
            let _ = self.apply(&ops);
        }
    }
}

/// Runs the sequence `data` encodes and checks the invariants after each step.
///
/// # Errors
/// The first invariant that failed.
pub fn check_ops(data: &[u8]) -> Result<(), Violation> {
    let cfg = Config::new("http://127.0.0.1:8080", "tail.weft");
    let mut store = MemoryStore::default();
    let snap = store.load().map_err(|e| Violation(e.to_string()))?;
    let c =
        Coordinator::new(cfg.clone(), snap, POLICIES[0]).map_err(|e| Violation(e.to_string()))?;
    let mut run = Run {
        c,
        store,
        now: 0,
        keys: Vec::new(),
        sessions: Vec::new(),
        entropy: 0,
    };
    for user in ["alice", "bob"] {
        let ops = run
            .c
            .create_user(run.time(), user)
            .map_err(|e| Violation(e.to_string()))?;
        run.apply(&ops)?;
    }
    for (user, reusable, ephemeral, tags) in [
        ("alice", true, false, vec![]),
        ("bob", false, false, vec![]),
        ("alice", true, true, vec![]),
        ("bob", true, false, vec!["tag:srv".to_owned()]),
    ] {
        let e = run.fresh::<30>();
        let now = run.time();
        let (k, ops) = run
            .c
            .create_key(now, user, reusable, ephemeral, tags, 7200, &e)
            .map_err(|e| Violation(e.to_string()))?;
        run.apply(&ops)?;
        run.keys.push(k.text);
    }
    {
        let e = run.fresh::<30>();
        let now = run.time();
        let (_, ops) = run
            .c
            .create_api_key(now, 3600, &e)
            .map_err(|e| Violation(e.to_string()))?;
        run.apply(&ops)?;
    }
    for chunk in data.chunks(3).take(200) {
        let (op, a, b) = (
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        );
        let now = run.time();
        match op % 14 {
            0 => {
                let k = run.keys.get(usize::from(b) % 4).cloned();
                run.register(a, a.wrapping_add(b & 8), k, String::new(), Time::ZERO);
            }
            1 => {
                let mut forged = run.keys.first().cloned().unwrap_or_default();
                forged.push_str(&format!("{b:x}"));
                run.register(a, a, Some(forged), String::new(), Time::ZERO);
            }
            2 => run.register(a, a, None, String::new(), Time::ZERO),
            3 => {
                let pending = run.c.pending();
                if let Some((id, _)) = pending.get(usize::from(b) % pending.len().max(1)) {
                    let user = if a % 2 == 0 { "alice" } else { "bob" };
                    if let Ok((_, ops)) = run.c.approve_pending(now, id, user) {
                        run.apply(&ops)?;
                    }
                    let url = format!("http://127.0.0.1:8080/register/{id}");
                    run.register(a, a, None, url, Time::ZERO);
                }
            }
            4 => {
                let past = Time::from_unix(123, 0).unwrap_or(Time::ZERO);
                run.register(a, a.wrapping_add(b & 8), None, String::new(), past);
            }
            5 | 6 => {
                let req = MapRequest {
                    version: 133,
                    node_key: node_key(a.wrapping_add(b & 8)),
                    disco_key: DiscoPublic::new(key(b, 3)),
                    stream: op % 14 == 5,
                    omit_peers: op % 14 == 6,
                    endpoints: vec![std::net::SocketAddr::from(([192, 0, 2, b], 41641))],
                    hostinfo: (b & 1 == 1).then(|| Hostinfo {
                        routable_ips: routes(b >> 1),
                        ..Hostinfo::default()
                    }),
                    ..MapRequest::default()
                };
                if let Ok((reply, ops)) = run.c.map_request(now, machine(a), &req) {
                    run.apply(&ops)?;
                    if let MapReply::Stream { session, .. } = reply {
                        run.sessions.push(session);
                    }
                }
            }
            7 => {
                if !run.sessions.is_empty() {
                    let s = run
                        .sessions
                        .swap_remove(usize::from(a) % run.sessions.len());
                    let ops = run.c.map_close(now, s);
                    run.apply(&ops)?;
                }
            }
            8 => {
                run.now += i64::from(a) * 60 + i64::from(b);
                let now = run.time();
                let ops = run.c.tick(now);
                run.apply(&ops)?;
            }
            9 => {
                if let Ok(ops) = run.c.delete_node(now, i64::from(a % 12)) {
                    run.apply(&ops)?;
                }
            }
            10 => {
                if let Ok(ops) = run.c.expire_node(now, i64::from(a % 12)) {
                    run.apply(&ops)?;
                }
            }
            11 => {
                if let Ok(ops) = run.c.approve_routes(now, i64::from(a % 12), routes(b)) {
                    run.apply(&ops)?;
                }
            }
            12 => {
                let r = match b % 3 {
                    0 => run
                        .c
                        .rename_node(now, i64::from(a % 12), &format!("n{}", b % 5)),
                    1 => run
                        .c
                        .set_tags(now, i64::from(a % 12), vec!["tag:srv".into()]),
                    _ => run
                        .c
                        .set_key_expiry(now, i64::from(a % 12), (b & 8 == 0).then_some(600)),
                };
                if let Ok(ops) = r {
                    run.apply(&ops)?;
                }
            }
            _ => {
                if let Some(text) = POLICIES.get(usize::from(a) % POLICIES.len()) {
                    let _ = run.c.set_policy(now, text);
                }
            }
        }
        run.c.take_updates();
        check_live(&run)?;
    }
    // Rebuilt from the store, the coordinator agrees on everything persistent.
    let snap = run.store.load().map_err(|e| Violation(e.to_string()))?;
    let rebuilt = Coordinator::new(cfg, snap, weft_policy::DEFAULT_POLICY)
        .map_err(|e| Violation(e.to_string()))?;
    let now = run.time();
    let persistent = |c: &Coordinator| {
        c.nodes(now)
            .into_iter()
            .map(|mut n| {
                n.online = false;
                n.primary_routes.clear();
                n
            })
            .collect::<Vec<_>>()
    };
    if persistent(&rebuilt) != persistent(&run.c) {
        return Err(Violation(format!(
            "nodes differ after a rebuild from the store:\nlive    {:?}\nrebuilt {:?}",
            persistent(&run.c),
            persistent(&rebuilt)
        )));
    }
    if rebuilt.keys() != run.c.keys()
        || rebuilt.users() != run.c.users()
        || rebuilt.api_keys() != run.c.api_keys()
    {
        return Err(Violation(
            "keys, API keys or users differ after a rebuild".into(),
        ));
    }
    Ok(())
}

fn check_live(run: &Run) -> Result<(), Violation> {
    let nodes = run.c.nodes(run.time());
    let mut addrs = BTreeSet::new();
    let mut names = BTreeSet::new();
    for n in &nodes {
        for a in &n.addresses {
            if !addrs.insert(*a) {
                return Err(Violation(format!("address {a} given twice")));
            }
        }
        if !names.insert(n.name.clone()) {
            return Err(Violation(format!("name {} given twice", n.name)));
        }
        if !crate::dnsname::valid_label(&n.name) {
            return Err(Violation(format!("invalid label {:?}", n.name)));
        }
        if n.online && n.expired {
            return Err(Violation(format!("node {} online while expired", n.id)));
        }
    }
    for (sid, s) in &run.c.sessions {
        if !run.c.nodes.contains_key(&s.node) {
            return Err(Violation(format!("session {} of a deleted node", sid.0)));
        }
        // What each client was sent adds up to what it should see (deltas are complete).
        let truth = run.c.visible_peers(s.node, run.time());
        if s.peers != truth {
            return Err(Violation(format!(
                "session {} of node {} holds peers {:?}, should see {:?}",
                sid.0, s.node.0, s.peers, truth
            )));
        }
        let filter = run.c.policy.filter_for(crate::mapper::policy_id(s.node));
        if s.filter != filter {
            return Err(Violation(format!("session {} holds a stale filter", sid.0)));
        }
    }
    Ok(())
}

/// Whether `data` registered at least one node (for corpus statistics).
pub fn registers_someone(data: &[u8]) -> bool {
    data.chunks(3)
        .any(|c| c.first().is_some_and(|op| op % 14 == 0))
}
