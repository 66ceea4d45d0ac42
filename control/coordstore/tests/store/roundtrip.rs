//! Fixed batches: every field round-trips, and a failing batch changes nothing — on both
//! backends.

use weft_tailcfg::{DiscoPublic, Hostinfo, Time};
use weft_tailnet::{
    ApiKeyRecord, KeyId, MemoryStore, NextIds, NodeId, NodeRecord, Store, StoreError, StoreOp,
    UserId,
};

use crate::common::{api_key, both_backends, key, key_bytes, node, t, user, Backend};

fn hostinfo() -> Hostinfo {
    serde_json::from_str(
        r#"{
            "IPNVersion": "1.96.4-t0123456",
            "BackendLogID": "abc",
            "OS": "linux",
            "Hostname": "laptop",
            "RoutableIPs": ["10.1.0.0/16", "0.0.0.0/0", "::/0"],
            "RequestTags": ["tag:laptop"],
            "Services": [{"Proto": "peerapi4", "Port": 41234}],
            "NetInfo": {"PreferredDERP": 2, "DERPLatency": {"1-v4": 0.012345678901234567, "2-v4": 0.1}},
            "Location": {"City": "Berlin", "Latitude": 52.520008, "Longitude": 13.404954, "Priority": 7},
            "Userspace": false
        }"#,
    )
    .unwrap()
}

/// A node with every optional field set.
fn full_node() -> NodeRecord {
    let mut full = node(1, 1);
    full.disco_key = DiscoPublic::from_bytes(key_bytes(3, 1, 0));
    full.tags = vec!["tag:server".into()];
    full.given_name = "laptop-1".into();
    full.ipv4 = Some("100.64.0.1".parse().unwrap());
    full.ipv6 = Some("fd7a:115c:a1e0::1".parse().unwrap());
    full.hostinfo = Some(hostinfo());
    full.endpoints = vec![
        "192.0.2.1:41641".parse().unwrap(),
        "[2001:db8::1]:41641".parse().unwrap(),
    ];
    full.key_expiry = t(1_750_000_000, 1);
    full.last_seen = Some(t(1_700_000_300, 500_000_000));
    full.approved_routes = vec!["10.1.0.0/16".parse().unwrap(), "::/0".parse().unwrap()];
    full.ephemeral = true;
    full.auth_key = Some(KeyId(1));
    full
}

/// Users, keys, nodes and API keys covering every optional field set and unset.
fn first_batch() -> Vec<StoreOp> {
    let mut k1 = key(1, 1);
    k1.reusable = true;
    k1.tags = vec!["tag:a".into(), "tag:b".into()];
    k1.expiration = Time::ZERO;
    let mut k2 = key(2, 2);
    k2.ephemeral = true;
    k2.used = true;
    k2.revoked = true;
    k2.secret_hash = [0x5a; 32];
    k2.expiration = t(1_800_000_000, 999_999_999);

    let mut u2 = user(2);
    // An offset and a fraction: kept as the same instant.
    u2.created = Time::parse("2024-05-01T10:00:00.5+02:00").unwrap();
    let mut u3 = user(3);
    u3.created = Time::ZERO;
    u3.display_name = String::new();

    let mut a1 = api_key(1);
    a1.expiration = t(1_800_000_000, 5);
    let a2 = ApiKeyRecord {
        secret_hash: [0x5a; 32],
        created: Time::parse("2024-05-01T10:00:00.25-07:30").unwrap(),
        revoked: true,
        ..api_key(2)
    };

    vec![
        StoreOp::PutUser(user(1)),
        StoreOp::PutUser(u2),
        StoreOp::PutUser(u3),
        StoreOp::PutKey(k1),
        StoreOp::PutKey(k2),
        StoreOp::PutNode(full_node()),
        StoreOp::PutNode(node(2, 2)),
        StoreOp::PutApiKey(a1),
        StoreOp::PutApiKey(a2),
    ]
}

/// Replacements, deletes, and an id far ahead of the counter.
fn second_batch() -> Vec<StoreOp> {
    let mut n1 = full_node();
    n1.user = UserId(2);
    n1.node_key = weft_tailcfg::NodePublic::from_bytes(key_bytes(2, 1, 9));
    n1.last_seen = Some(t(1_700_000_900, 0));
    let mut u1 = user(1);
    u1.display_name = "Alice".into();
    let mut a1 = api_key(1);
    a1.expiration = t(1_800_000_000, 5);
    a1.revoked = true;
    // The prefix of key 2, deleted earlier in the same batch.
    let a3 = ApiKeyRecord {
        prefix: "api2".into(),
        ..api_key(3)
    };
    vec![
        StoreOp::PutNode(n1),
        StoreOp::DeleteNode(NodeId(2)),
        StoreOp::DeleteKey(KeyId(2)),
        StoreOp::PutUser(u1),
        StoreOp::DeleteUser(UserId(3)),
        StoreOp::PutNode(node(10, 1)),
        StoreOp::PutApiKey(a1),
        StoreOp::DeleteApiKey(KeyId(2)),
        StoreOp::PutApiKey(a3),
        StoreOp::PutApiKey(api_key(7)),
        // Deletes of ids that never existed are no-ops.
        StoreOp::DeleteNode(NodeId(77)),
        StoreOp::DeleteUser(UserId(77)),
        StoreOp::DeleteApiKey(KeyId(77)),
    ]
}

both_backends!(
    round_trip_matches_memory_store_across_reopen,
    failing_batch_changes_nothing,
    unstorable_time_fails_the_batch,
);

fn round_trip_matches_memory_store_across_reopen<B: Backend>() {
    let db = B::fresh();
    let mut mem = MemoryStore::default();
    let mut store = db.open();
    assert_eq!(store.load().unwrap(), mem.load().unwrap(), "fresh database");

    for batch in [first_batch(), second_batch()] {
        mem.apply(&batch).unwrap();
        store.apply(&batch).unwrap();
        assert_eq!(store.load().unwrap(), mem.load().unwrap());
    }
    drop(store);

    let mut store = db.open();
    let loaded = store.load().unwrap();
    let expected = mem.load().unwrap();
    assert_eq!(loaded, expected);
    // Deletes did not lower the counters; the put of node 10 moved its counter past it.
    assert_eq!(
        loaded.next_ids,
        NextIds {
            user: 4,
            key: 3,
            node: 11,
            api_key: 8,
        }
    );
    assert_eq!(loaded.nodes.len(), 2);
    // Exact values, not only equality: the hostinfo floats and the key's zero expiry.
    assert_eq!(loaded.nodes[0].hostinfo, Some(hostinfo()));
    assert!(loaded.keys[0].expiration.is_zero());
    assert_eq!(loaded.keys[0].secret_hash, [0xa5; 32]);
    let prefixes: Vec<&str> = loaded.api_keys.iter().map(|k| k.prefix.as_str()).collect();
    assert_eq!(prefixes, ["api1", "api2", "api7"]);
    assert_eq!(loaded.api_keys[0].secret_hash, [0x3c; 32]);
    assert!(loaded.api_keys[0].revoked);
    assert_eq!(loaded.api_keys[0].expiration.get().nanosecond(), 5);
    assert!(loaded.api_keys[2].expiration.is_zero());
}

fn base(store: &mut impl Store) -> weft_tailnet::Snapshot {
    store
        .apply(&[
            StoreOp::PutUser(user(1)),
            StoreOp::PutKey(key(1, 1)),
            StoreOp::PutNode(node(1, 1)),
            StoreOp::PutApiKey(api_key(1)),
        ])
        .unwrap();
    store.load().unwrap()
}

fn failing_batch_changes_nothing<B: Backend>() {
    let db = B::fresh();
    let mut store = db.open();
    let before = base(&mut store);

    let mut dup_name = user(5);
    dup_name.name = "user1".into();
    let mut dup_prefix = key(9, 1);
    dup_prefix.prefix = "pfx1".into();
    dup_prefix.secret_hash = [0xcd; 32];
    let mut dup_machine = node(8, 1);
    dup_machine.machine = node(1, 1).machine;
    let mut dup_node_key = node(8, 1);
    dup_node_key.node_key = node(1, 1).node_key;
    let dup_api_prefix = ApiKeyRecord {
        prefix: "api1".into(),
        secret_hash: [0xcd; 32],
        ..api_key(9)
    };
    // An existing key (2, put earlier in the batch) renamed onto key 1's prefix.
    let api_renamed = ApiKeyRecord {
        prefix: "api1".into(),
        secret_hash: [0xcd; 32],
        ..api_key(2)
    };

    let bad_batches: Vec<Vec<StoreOp>> = vec![
        // The last op of each batch fails; everything before it must be undone too,
        // including the counters it moved.
        vec![
            StoreOp::PutUser(user(4)),
            StoreOp::PutNode(node(7, 4)),
            StoreOp::PutUser(dup_name),
        ],
        vec![
            StoreOp::PutUser(user(4)),
            StoreOp::PutKey(key(6, 4)),
            StoreOp::PutKey(dup_prefix),
        ],
        vec![StoreOp::PutUser(user(4)), StoreOp::PutNode(dup_machine)],
        vec![StoreOp::PutNode(node(3, 1)), StoreOp::PutNode(dup_node_key)],
        vec![StoreOp::PutUser(user(4)), StoreOp::PutNode(node(7, 99))],
        vec![StoreOp::PutUser(user(4)), StoreOp::PutKey(key(7, 99))],
        vec![
            StoreOp::PutApiKey(api_key(2)),
            StoreOp::DeleteApiKey(KeyId(1)),
            StoreOp::PutApiKey(api_key(1)),
            StoreOp::PutApiKey(dup_api_prefix),
        ],
        vec![
            StoreOp::PutUser(user(4)),
            StoreOp::PutApiKey(api_key(2)),
            StoreOp::PutApiKey(api_renamed),
        ],
        // A user with a node still pointing at it.
        vec![StoreOp::DeleteKey(KeyId(1)), StoreOp::DeleteUser(UserId(1))],
    ];
    for (i, batch) in bad_batches.iter().enumerate() {
        let err = store.apply(batch).unwrap_err();
        let StoreError::Backend(msg) = &err else {
            panic!("batch {i}: {err:?}");
        };
        assert!(
            !msg.contains("cdcd") && !msg.contains("a5a5"),
            "batch {i}: secret in {msg}"
        );
        assert_eq!(store.load().unwrap(), before, "batch {i} left a trace");
    }
    // Nothing was left half-open: the same store takes a good batch, and a reopen agrees.
    store
        .apply(&[StoreOp::PutUser(user(4)), StoreOp::PutNode(node(7, 4))])
        .unwrap();
    let after = store.load().unwrap();
    assert_eq!(after.users.len(), 2);
    assert_eq!(after.next_ids.node, 8);
    drop(store);
    assert_eq!(db.open().load().unwrap(), after);
}

fn unstorable_time_fails_the_batch<B: Backend>() {
    let db = B::fresh();
    let mut store = db.open();
    let before = base(&mut store);
    let mut u = user(2);
    // 31 December of year -1: RFC 3339 (and Go) have no form for it.
    u.created = t(-62_167_305_600, 0);
    let err = store
        .apply(&[StoreOp::PutUser(user(3)), StoreOp::PutUser(u)])
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Backend(m) if m.contains("users.created")),
        "{err:?}"
    );
    assert_eq!(store.load().unwrap(), before);

    let mut a = api_key(2);
    a.expiration = t(-62_167_305_600, 0);
    let err = store
        .apply(&[StoreOp::PutApiKey(api_key(3)), StoreOp::PutApiKey(a)])
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Backend(m) if m.contains("api_keys.expiration")),
        "{err:?}"
    );
    assert_eq!(store.load().unwrap(), before);
}
