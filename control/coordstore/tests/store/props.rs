//! Random batches of puts and deletes over a small id space: each backend's store and the
//! in-memory reference load the same after every batch, and again after a reopen.
//!
//! Generated ops are made legal the way the coordinator makes them (a user's keys and nodes
//! are deleted before it; a record's user exists; an API key's prefix is not another key's),
//! since the in-memory store does not check any of it. Some batches end in an op that breaks
//! a constraint — a node whose user never exists, or an API key taking another key's prefix
//! (as a new key, or as an existing one renamed): the store must refuse the whole batch and
//! load exactly as before. (PostgreSQL runs each case in a fresh schema of one database per
//! test, which is far cheaper than a database per case.)

use std::collections::{BTreeMap, BTreeSet};

use proptest::collection::vec;
use proptest::prelude::*;
use weft_tailcfg::{DiscoPublic, Hostinfo, IpPrefix, NodePublic, Time};
use weft_tailnet::{
    ApiKeyRecord, KeyId, MemoryStore, NodeId, NodeRecord, PreAuthKeyRecord, Store, StoreOp, UserId,
    UserRecord,
};

use crate::common::{api_key, key, key_bytes, node, user, Backend, PgDb, TempDb};

fn time() -> impl Strategy<Value = Time> {
    prop_oneof![
        1 => Just(Time::ZERO),
        4 => (0i64..4_000_000_000, 0u32..1_000_000_000)
            .prop_map(|(s, n)| Time::from_unix(s, n).unwrap()),
    ]
}

fn tags() -> impl Strategy<Value = Vec<String>> {
    vec("tag:[a-z]{1,4}", 0..3)
}

fn user_op() -> impl Strategy<Value = StoreOp> {
    (1i64..=3, "[a-zA-Z ]{0,6}", time()).prop_map(|(id, display, created)| {
        StoreOp::PutUser(UserRecord {
            display_name: display,
            created,
            ..user(id)
        })
    })
}

fn key_op() -> impl Strategy<Value = StoreOp> {
    (
        (1i64..=4, 1i64..=3, any::<u8>()),
        any::<[bool; 4]>(),
        tags(),
        time(),
        time(),
    )
        .prop_map(
            |((id, owner, hash), [reusable, ephemeral, used, revoked], tags, created, exp)| {
                StoreOp::PutKey(PreAuthKeyRecord {
                    secret_hash: [hash; 32],
                    reusable,
                    ephemeral,
                    tags,
                    created,
                    expiration: exp,
                    used,
                    revoked,
                    ..key(id, owner)
                })
            },
        )
}

/// API keys 1–4 with prefixes from a set of three, so that prefixes collide often.
fn api_key_op() -> impl Strategy<Value = StoreOp> {
    (
        (1i64..=4, 1u8..=3, any::<u8>()),
        any::<bool>(),
        time(),
        time(),
    )
        .prop_map(|((id, prefix, hash), revoked, created, expiration)| {
            StoreOp::PutApiKey(ApiKeyRecord {
                prefix: format!("api{prefix}"),
                secret_hash: [hash; 32],
                created,
                expiration,
                revoked,
                ..api_key(id)
            })
        })
}

fn hostinfo() -> impl Strategy<Value = Hostinfo> {
    (
        "[a-z]{0,8}",
        prop::option::of(any::<bool>()),
        vec("10\\.[0-9]\\.0\\.0/16", 0..3),
        -90.0f64..90.0,
    )
        .prop_map(|(hostname, userspace, routes, lat)| {
            let mut h = Hostinfo {
                hostname,
                userspace,
                routable_ips: routes.iter().map(|r| r.parse().unwrap()).collect(),
                ..Hostinfo::default()
            };
            // Any finite float must come back bit for bit.
            h.location = serde_json::from_value(serde_json::json!({ "Latitude": lat })).ok();
            h
        })
}

fn node_op() -> impl Strategy<Value = StoreOp> {
    (
        (1i64..=5, 1i64..=3, any::<u8>(), any::<Option<u8>>()),
        (tags(), "[a-z]{1,6}", any::<bool>()),
        (
            prop::option::of(any::<u32>()),
            prop::option::of(any::<u128>()),
            prop::option::of(hostinfo()),
            vec((any::<std::net::IpAddr>(), any::<u16>()), 0..3),
        ),
        (time(), time(), prop::option::of(time())),
        (
            vec((any::<u32>(), 0u8..=32), 0..3),
            prop::option::of(1i64..=4),
        ),
    )
        .prop_map(
            |(
                (id, owner, variant, disco),
                (tags, name, ephemeral),
                (v4, v6, hostinfo, endpoints),
                (key_expiry, created, last_seen),
                (routes, auth_key),
            )| {
                StoreOp::PutNode(NodeRecord {
                    node_key: NodePublic::from_bytes(key_bytes(2, id, variant)),
                    disco_key: disco
                        .map(|d| DiscoPublic::from_bytes([d; 32]))
                        .unwrap_or(DiscoPublic::ZERO),
                    tags,
                    given_name: name,
                    ipv4: v4.map(Into::into),
                    ipv6: v6.map(Into::into),
                    hostinfo,
                    endpoints: endpoints
                        .into_iter()
                        .map(|(ip, port)| std::net::SocketAddr::new(ip, port))
                        .collect(),
                    key_expiry,
                    created,
                    last_seen,
                    approved_routes: routes
                        .into_iter()
                        .map(|(a, len)| IpPrefix::new(std::net::Ipv4Addr::from(a).into(), len))
                        .collect::<Option<Vec<_>>>()
                        .unwrap(),
                    ephemeral,
                    auth_key: auth_key.map(KeyId),
                    ..node(id, owner)
                })
            },
        )
}

fn op() -> impl Strategy<Value = StoreOp> {
    prop_oneof![
        3 => user_op(),
        1 => (1i64..=4).prop_map(|id| StoreOp::DeleteUser(UserId(id))),
        3 => key_op(),
        1 => (1i64..=5).prop_map(|id| StoreOp::DeleteKey(KeyId(id))),
        4 => node_op(),
        2 => (1i64..=6).prop_map(|id| StoreOp::DeleteNode(NodeId(id))),
        3 => api_key_op(),
        1 => (1i64..=5).prop_map(|id| StoreOp::DeleteApiKey(KeyId(id))),
    ]
}

/// The constraint a poisoned batch's last op breaks.
#[derive(Debug, Clone, Copy)]
enum Poison {
    /// A node of user 99, who never exists.
    MissingUser,
    /// An API key with the prefix of another one.
    DuplicateApiKeyPrefix,
}

impl Poison {
    /// The failing ops to append to a batch after which `model` holds.
    fn ops(self, model: &Model) -> Vec<StoreOp> {
        match self {
            Self::MissingUser => vec![StoreOp::PutNode(node(6, 99))],
            Self::DuplicateApiKeyPrefix => {
                let mut held = model.api_keys.iter();
                match (held.next(), held.next()) {
                    // An existing key renamed onto another's prefix (the upsert's update path).
                    (Some((&a, _)), Some((_, b_prefix))) => {
                        vec![StoreOp::PutApiKey(ApiKeyRecord {
                            prefix: b_prefix.clone(),
                            ..api_key(a)
                        })]
                    }
                    // A new key (9 is never generated) with an existing key's prefix.
                    (Some((_, prefix)), None) => vec![StoreOp::PutApiKey(ApiKeyRecord {
                        prefix: prefix.clone(),
                        ..api_key(9)
                    })],
                    // No key yet: both in this batch.
                    (None, _) => vec![
                        StoreOp::PutApiKey(api_key(8)),
                        StoreOp::PutApiKey(ApiKeyRecord {
                            prefix: api_key(8).prefix,
                            ..api_key(9)
                        }),
                    ],
                }
            }
        }
    }
}

/// A batch and the constraint its last op breaks, if it is poisoned.
fn batches() -> impl Strategy<Value = Vec<(Vec<StoreOp>, Option<Poison>)>> {
    let poison = prop_oneof![
        Just(Poison::MissingUser),
        Just(Poison::DuplicateApiKeyPrefix)
    ];
    vec(
        (vec(op(), 0..6), prop::option::weighted(0.15, poison)),
        1..6,
    )
}

/// Which records exist, enough to make generated ops legal.
#[derive(Clone, Default)]
struct Model {
    users: BTreeSet<i64>,
    keys: BTreeMap<i64, i64>,
    nodes: BTreeMap<i64, i64>,
    /// API key id to prefix.
    api_keys: BTreeMap<i64, String>,
}

impl Model {
    fn ensure_user(&mut self, id: i64, out: &mut Vec<StoreOp>) {
        if self.users.insert(id) {
            out.push(StoreOp::PutUser(user(id)));
        }
    }

    /// `ops` as the coordinator would issue them.
    fn legalize(&mut self, ops: &[StoreOp]) -> Vec<StoreOp> {
        let mut out = Vec::new();
        for op in ops {
            match op {
                StoreOp::PutUser(u) => {
                    self.users.insert(u.id.0);
                }
                StoreOp::DeleteUser(id) => {
                    for (k, _) in self.keys.iter().filter(|(_, u)| **u == id.0) {
                        out.push(StoreOp::DeleteKey(KeyId(*k)));
                    }
                    for (n, _) in self.nodes.iter().filter(|(_, u)| **u == id.0) {
                        out.push(StoreOp::DeleteNode(NodeId(*n)));
                    }
                    self.keys.retain(|_, u| *u != id.0);
                    self.nodes.retain(|_, u| *u != id.0);
                    self.users.remove(&id.0);
                }
                StoreOp::PutKey(k) => {
                    self.ensure_user(k.user.0, &mut out);
                    self.keys.insert(k.id.0, k.user.0);
                }
                StoreOp::DeleteKey(id) => {
                    self.keys.remove(&id.0);
                }
                StoreOp::PutNode(n) => {
                    self.ensure_user(n.user.0, &mut out);
                    self.nodes.insert(n.id.0, n.user.0);
                }
                StoreOp::DeleteNode(id) => {
                    self.nodes.remove(&id.0);
                }
                StoreOp::PutApiKey(k) => {
                    // The coordinator never gives a key a prefix in use: here the key holding
                    // it goes first (a prefix freed and reused within one batch).
                    let holder = self
                        .api_keys
                        .iter()
                        .find(|(id, prefix)| **id != k.id.0 && **prefix == k.prefix)
                        .map(|(id, _)| *id);
                    if let Some(holder) = holder {
                        out.push(StoreOp::DeleteApiKey(KeyId(holder)));
                        self.api_keys.remove(&holder);
                    }
                    self.api_keys.insert(k.id.0, k.prefix.clone());
                }
                StoreOp::DeleteApiKey(id) => {
                    self.api_keys.remove(&id.0);
                }
            }
            out.push(op.clone());
        }
        out
    }
}

/// Applies `batches` to a store on `db` and to the in-memory reference, comparing loads.
fn matches_memory_store<B: Backend>(
    db: &B,
    batches: &[(Vec<StoreOp>, Option<Poison>)],
) -> Result<(), TestCaseError> {
    let mut store = db.open();
    let mut mem = MemoryStore::default();
    let mut model = Model::default();
    for (ops, poison) in batches {
        let mut next_model = model.clone();
        let mut legal = next_model.legalize(ops);
        if let Some(poison) = poison {
            // The constraint fails after everything else in the batch ran.
            legal.extend(poison.ops(&next_model));
            let before = store.load().unwrap();
            prop_assert!(store.apply(&legal).is_err());
            prop_assert_eq!(store.load().unwrap(), before);
        } else {
            store.apply(&legal).unwrap();
            mem.apply(&legal).unwrap();
            model = next_model;
        }
        prop_assert_eq!(store.load().unwrap(), mem.load().unwrap());
    }
    drop(store);
    prop_assert_eq!(db.open().load().unwrap(), mem.load().unwrap());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_matches_memory_store(batches in batches()) {
        matches_memory_store(&TempDb::new(), &batches)?;
    }
}

#[test]
fn pg_matches_memory_store() {
    let db = PgDb::new();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
    runner
        .run(&batches(), |batches| {
            matches_memory_store(&db.sibling(), &batches)
        })
        .unwrap();
}
