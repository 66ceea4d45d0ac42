//! The coordinator driven as the server drives it: registration in every flow, map streams
//! and their deltas, logout and deletion, ephemeral nodes, policies, subnet-router
//! fail-over, persistence through a store, and the cost of a change in a large tailnet.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;

use weft_keys::PrivateKey;
use weft_tailcfg::{
    DiscoPublic, Hostinfo, IpPrefix, MachinePublic, MapRequest, MapResponse, NodePublic,
    RegisterRequest, RegisterResponseAuth, Time,
};
use weft_tailnet::{
    Config, CoordError, Coordinator, MapError, MapReply, MemoryStore, RegisterReply, SessionId,
    Store, StoreOp, Update,
};

fn t(secs: i64) -> Time {
    Time::from_unix(1_800_000_000 + secs, 0).unwrap()
}

fn key(seed: u8) -> weft_keys::PublicKey {
    PrivateKey::from_bytes([seed; 32]).public_key()
}

struct Lab {
    c: Coordinator,
    store: MemoryStore,
    entropy: u32,
}

struct Dev {
    machine: MachinePublic,
    node: NodePublic,
    host: String,
}

fn dev(seed: u8, host: &str) -> Dev {
    Dev {
        machine: MachinePublic::new(key(seed)),
        node: NodePublic::new(key(seed.wrapping_add(100))),
        host: host.into(),
    }
}

impl Lab {
    fn new(policy: &str) -> Self {
        Self::with_config(policy, Config::new("http://127.0.0.1:8080", "tail.weft"))
    }

    fn with_config(policy: &str, cfg: Config) -> Self {
        let mut store = MemoryStore::default();
        let c = Coordinator::new(cfg, store.load().unwrap(), policy).unwrap();
        let mut lab = Self {
            c,
            store,
            entropy: 0,
        };
        let ops = lab.c.create_user(t(0), "alice").unwrap();
        lab.apply(ops);
        let ops = lab.c.create_user(t(0), "bob").unwrap();
        lab.apply(ops);
        lab
    }

    fn apply(&mut self, ops: Vec<StoreOp>) {
        self.store.apply(&ops).unwrap();
    }

    /// Distinct entropy for every call (a counter, so tests are repeatable).
    fn fresh<const N: usize>(&mut self) -> [u8; N] {
        self.entropy += 1;
        let mut b = [0u8; N];
        b[..4].copy_from_slice(&self.entropy.to_le_bytes());
        b
    }

    fn key(&mut self, user: &str, reusable: bool, ephemeral: bool, tags: &[&str]) -> String {
        let e = self.fresh::<30>();
        let (k, ops) = self
            .c
            .create_key(
                t(0),
                user,
                reusable,
                ephemeral,
                tags.iter().map(|s| (*s).to_owned()).collect(),
                3600,
                &e,
            )
            .unwrap();
        self.apply(ops);
        k.text
    }

    fn register(
        &mut self,
        now: Time,
        d: &Dev,
        auth: Option<&str>,
    ) -> Result<RegisterReply, CoordError> {
        let req = RegisterRequest {
            version: 133,
            node_key: d.node,
            auth: auth.map(|a| RegisterResponseAuth {
                auth_key: a.to_owned(),
            }),
            hostinfo: Some(Hostinfo {
                hostname: d.host.clone(),
                ..Hostinfo::default()
            }),
            ..RegisterRequest::default()
        };
        let e = self.fresh::<16>();
        let (reply, ops) = self.c.register(now, d.machine, &req, &e)?;
        self.apply(ops);
        Ok(reply)
    }

    fn join(&mut self, d: &Dev, auth: &str) {
        match self.register(t(1), d, Some(auth)).unwrap() {
            RegisterReply::Done(r) => {
                assert!(r.machine_authorized, "{r:?}");
                assert!(r.error.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    fn stream(&mut self, now: Time, d: &Dev) -> (SessionId, MapResponse) {
        self.stream_with(now, d, None)
    }

    fn stream_with(
        &mut self,
        now: Time,
        d: &Dev,
        hostinfo: Option<Hostinfo>,
    ) -> (SessionId, MapResponse) {
        let req = MapRequest {
            version: 133,
            node_key: d.node,
            disco_key: DiscoPublic::new(key(d.machine.to_string().len() as u8 + 7)),
            stream: true,
            hostinfo,
            ..MapRequest::default()
        };
        let (reply, ops) = self.c.map_request(now, d.machine, &req).unwrap();
        self.apply(ops);
        match reply {
            MapReply::Stream { session, first } => (session, *first),
            other => panic!("{other:?}"),
        }
    }

    /// The map responses queued for `s` (other updates are dropped).
    fn sent_to(updates: &[Update], s: SessionId) -> Vec<MapResponse> {
        updates
            .iter()
            .filter_map(|u| match u {
                Update::Send(to, m) if *to == s => Some((**m).clone()),
                _ => None,
            })
            .collect()
    }
}

fn peer_ids(m: &MapResponse) -> Vec<i64> {
    m.peers.iter().map(|p| p.id).collect()
}

#[test]
fn pre_auth_keys_register_and_peers_learn_of_each_other() {
    let mut lab = Lab::new(weft_policy::DEFAULT_POLICY);
    let k = lab.key("alice", true, false, &[]);
    let (a, b) = (dev(1, "laptop"), dev(2, "Laptop"));
    lab.join(&a, &k);
    let (sa, first) = lab.stream(t(2), &a);
    let me = first.node.as_ref().unwrap();
    assert_eq!(me.name, "laptop.tail.weft.");
    assert_eq!(me.addresses[0].to_string(), "100.64.0.1/32");
    assert_eq!(me.addresses[1].to_string(), "fd7a:115c:a1e0::1/128");
    assert!(first.peers.is_empty());
    assert!(first.debug.as_ref().unwrap().disable_log_tail);
    assert!(first.dns_config.as_ref().unwrap().proxied);
    assert!(first.packet_filters.contains_key("base"));
    lab.c.take_updates();

    lab.join(&b, &k);
    let ups = lab.c.take_updates();
    let to_a = Lab::sent_to(&ups, sa);
    assert_eq!(to_a.len(), 1, "{to_a:#?}");
    let bn = &to_a[0].peers_changed[0];
    assert_eq!(bn.name, "laptop-1.tail.weft.", "collision gets a suffix");
    assert_eq!(bn.online, Some(false));
    assert!(
        to_a[0].user_profiles.is_empty(),
        "alice's profile was sent already"
    );

    let (_sb, first_b) = lab.stream(t(3), &b);
    assert_eq!(peer_ids(&first_b), vec![1]);
    let ups = lab.c.take_updates();
    let to_a = Lab::sent_to(&ups, sa);
    assert_eq!(to_a.len(), 1);
    assert_eq!(to_a[0].peers_changed[0].online, Some(true));
}

#[test]
fn bad_keys_are_refused() {
    let mut lab = Lab::new(weft_policy::DEFAULT_POLICY);
    let once = lab.key("alice", false, false, &[]);
    lab.join(&dev(1, "a"), &once);
    assert_eq!(
        lab.register(t(2), &dev(2, "b"), Some(&once)).unwrap_err(),
        CoordError::BadAuthKey,
        "a one-off key works once"
    );
    let reusable = lab.key("alice", true, false, &[]);
    // Expired one hour after creation.
    assert_eq!(
        lab.register(t(3601), &dev(3, "c"), Some(&reusable))
            .unwrap_err(),
        CoordError::BadAuthKey
    );
    let mut forged = reusable.clone();
    forged.pop();
    forged.push('x');
    assert_eq!(
        lab.register(t(5), &dev(4, "d"), Some(&forged)).unwrap_err(),
        CoordError::BadAuthKey
    );
    let prefix = lab.c.keys().last().unwrap().prefix.clone();
    let ops = lab.c.revoke_key(&prefix).unwrap();
    lab.apply(ops);
    assert_eq!(
        lab.register(t(5), &dev(5, "e"), Some(&reusable))
            .unwrap_err(),
        CoordError::BadAuthKey
    );
    assert!(lab
        .register(t(5), &dev(6, "f"), Some("tskey-auth-x"))
        .is_err());
}

#[test]
fn a_node_key_is_bound_to_its_machine() {
    let mut lab = Lab::new(weft_policy::DEFAULT_POLICY);
    let k = lab.key("alice", true, false, &[]);
    let a = dev(1, "a");
    lab.join(&a, &k);
    let thief = Dev {
        machine: MachinePublic::new(key(77)),
        node: a.node,
        host: "x".into(),
    };
    assert_eq!(
        lab.register(t(2), &thief, None).unwrap_err(),
        CoordError::MachineMismatch
    );
    let req = MapRequest {
        node_key: a.node,
        stream: true,
        ..MapRequest::default()
    };
    assert_eq!(
        lab.c.map_request(t(2), thief.machine, &req).unwrap_err(),
        MapError::MachineMismatch
    );
    let unknown = MapRequest {
        node_key: NodePublic::new(key(99)),
        ..req
    };
    assert_eq!(
        lab.c.map_request(t(2), a.machine, &unknown).unwrap_err(),
        MapError::NotRegistered
    );
    // A restart without a key is recognised.
    match lab.register(t(3), &a, None).unwrap() {
        RegisterReply::Done(r) => assert!(r.machine_authorized && !r.node_key_expired),
        other => panic!("{other:?}"),
    }
}

#[test]
fn interactive_login_waits_for_the_admin() {
    let mut lab = Lab::new(weft_policy::DEFAULT_POLICY);
    let a = dev(1, "desk");
    let url = match lab.register(t(1), &a, None).unwrap() {
        RegisterReply::Done(r) => {
            assert!(!r.machine_authorized);
            r.auth_url
        }
        other => panic!("{other:?}"),
    };
    assert!(url.starts_with("http://127.0.0.1:8080/register/"), "{url}");
    let id = url.rsplit('/').next().unwrap().to_owned();
    assert_eq!(lab.c.pending(), vec![(id.clone(), "desk".to_owned())]);
    let follow = RegisterRequest {
        node_key: a.node,
        followup: url.clone(),
        ..RegisterRequest::default()
    };
    let (r, _) = lab.c.register(t(2), a.machine, &follow, &[9; 16]).unwrap();
    assert!(matches!(r, RegisterReply::Wait { ref auth_id, .. } if *auth_id == id));
    assert_eq!(
        lab.c.approve_pending(t(3), &id, "carol").unwrap_err(),
        CoordError::UnknownUser("carol".into())
    );
    let (_, ops) = lab.c.approve_pending(t(3), &id, "bob").unwrap();
    lab.apply(ops);
    assert!(lab.c.take_updates().contains(&Update::Approved(id.clone())));
    let (r, _) = lab.c.register(t(4), a.machine, &follow, &[9; 16]).unwrap();
    match r {
        RegisterReply::Done(r) => {
            assert!(r.machine_authorized);
            assert_eq!(r.login.login_name, "bob");
        }
        other => panic!("{other:?}"),
    }
    assert!(lab.c.pending().is_empty());
    // Pending logins time out.
    lab.register(t(10), &dev(2, "other"), None).unwrap();
    assert_eq!(lab.c.pending().len(), 1);
    lab.c.tick(t(10 + 15 * 60 + 1));
    assert!(lab.c.pending().is_empty());
}

#[test]
fn logout_and_delete_remove_the_node_from_its_peers() {
    let mut lab = Lab::new(weft_policy::DEFAULT_POLICY);
    let k = lab.key("alice", true, false, &[]);
    let (a, b, c) = (dev(1, "a"), dev(2, "b"), dev(3, "c"));
    for d in [&a, &b, &c] {
        lab.join(d, &k);
    }
    let (sa, _) = lab.stream(t(2), &a);
    let (sb, _) = lab.stream(t(2), &b);
    let (sc, _) = lab.stream(t(2), &c);
    lab.c.take_updates();
    // b logs out: a past expiry with its current key.
    let logout = RegisterRequest {
        node_key: b.node,
        expiry: Time::from_unix(123, 0).unwrap(),
        ..RegisterRequest::default()
    };
    let (r, ops) = lab.c.register(t(5), b.machine, &logout, &[1; 16]).unwrap();
    lab.apply(ops);
    assert!(matches!(r, RegisterReply::Done(ref r) if r.node_key_expired && !r.machine_authorized));
    let ups = lab.c.take_updates();
    assert!(ups.contains(&Update::Close(sb)));
    for s in [sa, sc] {
        let m = Lab::sent_to(&ups, s);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].peers_removed, vec![2]);
    }
    // Re-login with a key brings it back with the same id and addresses.
    lab.join(&b, &k);
    let ups = lab.c.take_updates();
    assert_eq!(Lab::sent_to(&ups, sa)[0].peers_changed[0].id, 2);
    // An admin deletes c.
    let ops = lab.c.delete_node(t(6), 3).unwrap();
    lab.apply(ops);
    let ups = lab.c.take_updates();
    assert!(ups.contains(&Update::Close(sc)));
    assert_eq!(Lab::sent_to(&ups, sa)[0].peers_removed, vec![3]);
    assert_eq!(
        lab.c.delete_node(t(6), 3).unwrap_err(),
        CoordError::UnknownNode(3)
    );
}

#[test]
fn ephemeral_nodes_go_after_the_timeout_offline() {
    let mut lab = Lab::new(weft_policy::DEFAULT_POLICY);
    let k = lab.key("alice", true, true, &[]);
    let keep = lab.key("alice", true, false, &[]);
    let (a, e) = (dev(1, "a"), dev(2, "eph"));
    lab.join(&a, &keep);
    lab.join(&e, &k);
    let (sa, _) = lab.stream(t(2), &a);
    let (se, _) = lab.stream(t(2), &e);
    lab.c.take_updates();
    lab.c.tick(t(4000));
    assert_eq!(lab.c.nodes(t(4000)).len(), 2, "online: kept");
    let ops = lab.c.map_close(t(4000), se);
    lab.apply(ops);
    let ups = lab.c.take_updates();
    assert_eq!(
        Lab::sent_to(&ups, sa)[0].peers_changed[0].online,
        Some(false)
    );
    let ops = lab.c.tick(t(4000 + 1799));
    assert!(ops.is_empty());
    let ops = lab.c.tick(t(4000 + 1800));
    assert_eq!(ops, vec![StoreOp::DeleteNode(weft_tailnet::NodeId(2))]);
    lab.apply(ops);
    assert_eq!(
        Lab::sent_to(&lab.c.take_updates(), sa)[0].peers_removed,
        vec![2]
    );
    assert_eq!(lab.store.load().unwrap().nodes.len(), 1);
}

const TWO_USERS: &str = r#"{
  "tagOwners": {"tag:server": ["alice@"]},
  "acls": [
    {"action": "accept", "src": ["alice@"], "dst": ["alice@:*", "tag:server:22"]},
    {"action": "accept", "src": ["bob@"], "dst": ["bob@:*"]},
  ],
}"#;

#[test]
fn policy_decides_peers_and_filters_and_changes_are_pushed() {
    let mut lab = Lab::new(TWO_USERS);
    let ka = lab.key("alice", true, false, &[]);
    let kb = lab.key("bob", true, false, &[]);
    let ks = lab.key("alice", true, false, &["tag:server"]);
    let (a1, a2, b1, srv) = (dev(1, "a1"), dev(2, "a2"), dev(3, "b1"), dev(4, "srv"));
    lab.join(&a1, &ka);
    lab.join(&a2, &ka);
    lab.join(&b1, &kb);
    lab.join(&srv, &ks);
    let (_, m) = lab.stream(t(2), &a1);
    assert_eq!(peer_ids(&m), vec![2, 4]);
    let (sb, m) = lab.stream(t(2), &b1);
    assert!(m.peers.is_empty());
    let (_, m) = lab.stream(t(2), &srv);
    assert_eq!(peer_ids(&m), vec![1, 2], "the server sees who may reach it");
    assert!(
        m.node.as_ref().unwrap().key_expiry.is_zero(),
        "tagged keys do not expire"
    );
    let f = serde_json::to_string(&m.packet_filters["base"]).unwrap();
    assert!(f.contains("\"Ports\":{\"First\":22,\"Last\":22}"), "{f}");
    lab.c.take_updates();
    // Open everything up: bob now sees everyone, and gets the new filter.
    lab.c.set_policy(t(3), weft_policy::DEFAULT_POLICY).unwrap();
    let ups = lab.c.take_updates();
    let to_b = Lab::sent_to(&ups, sb);
    assert_eq!(to_b.len(), 1);
    let mut ids: Vec<i64> = to_b[0].peers_changed.iter().map(|p| p.id).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2, 4]);
    assert!(to_b[0].packet_filters.contains_key("base"));
    assert_eq!(to_b[0].user_profiles.len(), 1, "alice's profile, once");
    // A broken policy is refused and the old one stays.
    assert!(matches!(
        lab.c.set_policy(t(4), "{ nope"),
        Err(CoordError::Policy(_))
    ));
    let failing = r#"{"acls": [], "tests": [{"src": "alice@", "accept": ["bob@:22"]}]}"#;
    assert!(matches!(
        lab.c.set_policy(t(4), failing),
        Err(CoordError::Policy(_))
    ));
    assert!(lab.c.take_updates().is_empty());
}

fn routes(v: &[&str]) -> Vec<IpPrefix> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn subnet_routers_fail_over_and_exit_nodes_need_both_routes() {
    let mut lab = Lab::new(weft_policy::DEFAULT_POLICY);
    let k = lab.key("alice", true, false, &[]);
    let (c, r1, r2) = (dev(1, "client"), dev(2, "r1"), dev(3, "r2"));
    for d in [&c, &r1, &r2] {
        lab.join(d, &k);
    }
    let adv = |r: &[&str]| Hostinfo {
        routable_ips: routes(r),
        ..Hostinfo::default()
    };
    let (sc, _) = lab.stream(t(2), &c);
    let (s1, _) = lab.stream_with(t(2), &r1, Some(adv(&["10.1.0.0/24"])));
    let (_s2, _) = lab.stream_with(t(2), &r2, Some(adv(&["10.1.0.0/24", "0.0.0.0/0", "::/0"])));
    lab.c.take_updates();
    // Nothing approved yet: no routes anywhere.
    assert!(lab
        .c
        .nodes(t(2))
        .iter()
        .all(|n| n.primary_routes.is_empty()));
    for id in [2, 3] {
        let ops = lab
            .c
            .approve_routes(t(3), id, routes(&["10.1.0.0/24"]))
            .unwrap();
        lab.apply(ops);
    }
    let nodes = lab.c.nodes(t(3));
    assert_eq!(nodes[1].primary_routes, vec!["10.1.0.0/24"]);
    assert!(nodes[2].primary_routes.is_empty(), "r2 is standby");
    let ups = lab.c.take_updates();
    let to_c = Lab::sent_to(&ups, sc);
    let r1_wire = to_c
        .iter()
        .flat_map(|m| m.peers_changed.iter())
        .rfind(|p| p.id == 2)
        .unwrap();
    assert!(r1_wire
        .allowed_ips
        .as_ref()
        .unwrap()
        .contains(&"10.1.0.0/24".parse().unwrap()));
    // r1 goes offline: r2 takes over, the client hears of both.
    let ops = lab.c.map_close(t(10), s1);
    lab.apply(ops);
    let nodes = lab.c.nodes(t(10));
    assert_eq!(nodes[2].primary_routes, vec!["10.1.0.0/24"]);
    let ups = lab.c.take_updates();
    let changed: BTreeSet<i64> = Lab::sent_to(&ups, sc)
        .iter()
        .flat_map(|m| m.peers_changed.iter().map(|p| p.id))
        .collect();
    assert_eq!(changed, BTreeSet::from([2, 3]));
    // Exit node: one of the two defaults approved is not enough.
    let ops = lab
        .c
        .approve_routes(t(11), 3, routes(&["10.1.0.0/24", "0.0.0.0/0"]))
        .unwrap();
    lab.apply(ops);
    let wire = |lab: &mut Lab| {
        let (_, m) = lab.stream(t(12), &c);
        m.peers.into_iter().find(|p| p.id == 3).unwrap()
    };
    assert!(!wire(&mut lab)
        .allowed_ips
        .unwrap()
        .iter()
        .any(|p| p.is_empty()));
    let ops = lab
        .c
        .approve_routes(t(13), 3, routes(&["10.1.0.0/24", "0.0.0.0/0", "::/0"]))
        .unwrap();
    lab.apply(ops);
    assert_eq!(
        wire(&mut lab)
            .allowed_ips
            .unwrap()
            .iter()
            .filter(|p| p.is_empty())
            .count(),
        2
    );
}

#[test]
fn auto_approvers_approve_advertised_routes() {
    let policy = r#"{
      "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
      "autoApprovers": {"routes": {"10.0.0.0/8": ["alice@"]}, "exitNode": ["bob@"]},
    }"#;
    let mut lab = Lab::new(policy);
    let ka = lab.key("alice", true, false, &[]);
    let kb = lab.key("bob", true, false, &[]);
    let (a, b) = (dev(1, "a"), dev(2, "b"));
    lab.join(&a, &ka);
    lab.join(&b, &kb);
    let adv = Hostinfo {
        routable_ips: routes(&["10.9.0.0/16", "192.168.0.0/24", "0.0.0.0/0", "::/0"]),
        ..Hostinfo::default()
    };
    lab.stream_with(t(2), &a, Some(adv.clone()));
    lab.stream_with(t(2), &b, Some(adv));
    let nodes = lab.c.nodes(t(2));
    assert_eq!(nodes[0].approved_routes, vec!["10.9.0.0/16"]);
    assert_eq!(nodes[1].approved_routes, vec!["0.0.0.0/0", "::/0"]);
}

#[test]
fn state_survives_a_restart_through_the_store() {
    let mut lab = Lab::new(weft_policy::DEFAULT_POLICY);
    let k = lab.key("alice", false, false, &["tag:x"]);
    let a = dev(1, "a");
    lab.join(&a, &k);
    let (s, _) = lab.stream(t(2), &a);
    let ops = lab.c.map_close(t(3), s);
    lab.apply(ops);
    let before = lab.c.nodes(t(4));
    let snap = lab.store.load().unwrap();
    let mut again = Coordinator::new(
        Config::new("http://127.0.0.1:8080", "tail.weft"),
        snap,
        weft_policy::DEFAULT_POLICY,
    )
    .unwrap();
    assert_eq!(again.nodes(t(4)), before);
    assert_eq!(again.keys(), lab.c.keys());
    assert!(again.keys()[0].used);
    // The spent one-off key stays spent, and ids are not reused.
    let req = RegisterRequest {
        node_key: NodePublic::new(key(55)),
        auth: Some(RegisterResponseAuth { auth_key: k }),
        ..RegisterRequest::default()
    };
    assert_eq!(
        again
            .register(t(5), MachinePublic::new(key(56)), &req, &[0; 16])
            .unwrap_err(),
        CoordError::BadAuthKey
    );
    let (_, ops) = again.create_user(t(5), "carol").map(|o| ((), o)).unwrap();
    assert!(matches!(&ops[0], StoreOp::PutUser(u) if u.id.0 == 3));
}

/// In a tailnet of 1000 nodes where each user's devices see only each other, a change to
/// one node reaches only the sessions of its peers: the work is bounded by who is affected.
#[test]
fn a_change_reaches_only_the_sessions_it_concerns() {
    let policy = r#"{"acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]}]}"#;
    let mut lab = Lab::new(policy);
    let mut devs = Vec::new();
    let mut sessions = Vec::new();
    for u in 0..100 {
        let name = format!("user{u}");
        let ops = lab.c.create_user(t(0), &name).unwrap();
        lab.apply(ops);
        let k = lab.key(&name, true, false, &[]);
        for i in 0..10u32 {
            let n = u * 10 + i;
            let d = Dev {
                machine: MachinePublic::new(key_from(n, 1)),
                node: NodePublic::new(key_from(n, 2)),
                host: format!("h{n}"),
            };
            lab.join(&d, &k);
            devs.push(d);
        }
    }
    for d in &devs {
        sessions.push(lab.stream(t(5), d).0);
    }
    lab.c.take_updates();
    // Node 500 reports a new endpoint in a lite update.
    let req = MapRequest {
        node_key: devs[500].node,
        omit_peers: true,
        endpoints: vec!["192.0.2.1:41641".parse().unwrap()],
        ..MapRequest::default()
    };
    let (r, ops) = lab.c.map_request(t(6), devs[500].machine, &req).unwrap();
    assert!(matches!(r, MapReply::Lite));
    lab.apply(ops);
    let ups = lab.c.take_updates();
    let reached: BTreeSet<SessionId> = ups
        .iter()
        .filter_map(|u| match u {
            Update::Send(s, _) => Some(*s),
            _ => None,
        })
        .collect();
    let expected: BTreeSet<SessionId> = (500..510).map(|i| sessions[i]).collect();
    assert_eq!(reached, expected, "its own session and its nine peers'");
}

fn key_from(n: u32, salt: u8) -> weft_keys::PublicKey {
    let mut b = [salt; 32];
    b[1..5].copy_from_slice(&n.to_le_bytes());
    PrivateKey::from_bytes(b).public_key()
}

#[test]
fn tags_and_key_expiry_are_set_per_node() {
    let mut lab = Lab::new(TWO_USERS);
    let ka = lab.key("alice", true, false, &[]);
    let (a1, a2) = (dev(1, "a1"), dev(2, "a2"));
    lab.join(&a1, &ka);
    lab.join(&a2, &ka);
    let (s1, m) = lab.stream(t(2), &a1);
    assert_eq!(peer_ids(&m), vec![2]);
    assert!(!m.node.as_ref().unwrap().key_expiry.is_zero());
    lab.c.take_updates();
    // Tagging a2 as a server: alice's devices may reach it on port 22 only; its key no
    // longer expires.
    assert_eq!(
        lab.c.set_tags(t(3), 2, vec!["server".into()]).unwrap_err(),
        CoordError::BadTag("server".into())
    );
    let ops = lab.c.set_tags(t(3), 2, vec!["tag:server".into()]).unwrap();
    lab.apply(ops);
    let ups = lab.c.take_updates();
    let a2_wire = Lab::sent_to(&ups, s1)
        .iter()
        .flat_map(|m| m.peers_changed.clone())
        .find(|p| p.id == 2)
        .unwrap();
    assert_eq!(a2_wire.tags, vec!["tag:server".to_owned()]);
    assert!(a2_wire.key_expiry.is_zero());
    assert_eq!(
        lab.store.load().unwrap().nodes[1].tags,
        vec!["tag:server".to_owned()]
    );
    // Expiry off for a1, then on again.
    let ops = lab.c.set_key_expiry(t(4), 1, None).unwrap();
    lab.apply(ops);
    assert!(lab.store.load().unwrap().nodes[0].key_expiry.is_zero());
    let ops = lab.c.set_key_expiry(t(4), 1, Some(60)).unwrap();
    lab.apply(ops);
    lab.c.tick(t(5));
    lab.c.take_updates();
    lab.c.tick(t(65));
    assert!(lab.c.nodes(t(65))[0].expired);
    assert_eq!(
        lab.c.set_key_expiry(t(4), 9, None).unwrap_err(),
        CoordError::UnknownNode(9)
    );
}

#[test]
fn a_policy_is_checked_without_being_applied() {
    let mut lab = Lab::new(weft_policy::DEFAULT_POLICY);
    let k = lab.key("alice", true, false, &[]);
    lab.join(&dev(1, "a"), &k);
    lab.join(&dev(2, "b"), &k);
    let (_s, _) = lab.stream(t(2), &dev(1, "a"));
    lab.c.take_updates();
    lab.c.check_policy(TWO_USERS).unwrap();
    let err = lab
        .c
        .check_policy("{\n  \"acls\": [\n    {\"action\": \"drop\"}\n  ]\n}")
        .unwrap_err();
    assert!(
        matches!(&err, CoordError::Policy(m) if m.contains("line 3")),
        "{err}"
    );
    assert!(lab.c.take_updates().is_empty(), "checking changes nothing");
}

// ---- regressions from the security review ----------------------------------------------

#[test]
fn pending_logins_are_one_per_machine_and_bounded() {
    let mut lab = Lab::new(weft_policy::DEFAULT_POLICY);
    let a = dev(1, "a");
    for _ in 0..5 {
        lab.register(t(1), &a, None).unwrap();
    }
    assert_eq!(
        lab.c.pending().len(),
        1,
        "a new attempt replaces the machine's old one"
    );
    for i in 0..weft_tailnet::coordinator::MAX_PENDING as u32 {
        let d = Dev {
            machine: MachinePublic::new(key_from(i, 9)),
            node: NodePublic::new(key_from(i, 10)),
            host: "x".into(),
        };
        if lab.register(t(1), &d, None).is_err() {
            break;
        }
    }
    assert_eq!(
        lab.c.pending().len(),
        weft_tailnet::coordinator::MAX_PENDING
    );
    let late = Dev {
        machine: MachinePublic::new(key(200)),
        node: NodePublic::new(key(201)),
        host: "late".into(),
    };
    assert_eq!(
        lab.register(t(1), &late, None).unwrap_err(),
        CoordError::TooManyPending
    );
    // Hostile hostnames reach the admin without control characters.
    let evil = Dev {
        machine: MachinePublic::new(key(1)),
        node: NodePublic::new(key(101)),
        host: "ok\n1234 alice-laptop\u{1b}[2J".into(),
    };
    lab.register(t(2), &evil, None).unwrap();
    assert!(lab
        .c
        .pending()
        .iter()
        .all(|(_, h)| !h.chars().any(char::is_control)));
}

#[test]
fn a_restart_gives_ephemeral_nodes_the_whole_timeout() {
    let mut lab = Lab::new(weft_policy::DEFAULT_POLICY);
    let k = lab.key("alice", true, true, &[]);
    let e = dev(1, "eph");
    lab.join(&e, &k);
    lab.stream(t(2), &e);
    // The server stops two hours later without closing the stream, and starts again.
    let mut again = Coordinator::new(
        Config::new("http://127.0.0.1:8080", "tail.weft"),
        lab.store.load().unwrap(),
        weft_policy::DEFAULT_POLICY,
    )
    .unwrap();
    assert!(again.tick(t(7200)).is_empty(), "not deleted at start");
    assert!(again.tick(t(7200 + 1799)).is_empty());
    assert_eq!(
        again.tick(t(7200 + 1800)).len(),
        1,
        "deleted after the timeout"
    );
}

#[test]
fn an_expired_router_hands_its_routes_over_and_cannot_poll() {
    let mut lab = Lab::new(weft_policy::DEFAULT_POLICY);
    let k = lab.key("alice", true, false, &[]);
    let (c, r1, r2) = (dev(1, "client"), dev(2, "r1"), dev(3, "r2"));
    for d in [&c, &r1, &r2] {
        lab.join(d, &k);
    }
    let adv = Hostinfo {
        routable_ips: routes(&["10.1.0.0/24"]),
        ..Hostinfo::default()
    };
    let (_sc, _) = lab.stream(t(2), &c);
    let (s1, _) = lab.stream_with(t(2), &r1, Some(adv.clone()));
    lab.stream_with(t(2), &r2, Some(adv));
    for id in [2, 3] {
        let ops = lab
            .c
            .approve_routes(t(3), id, routes(&["10.1.0.0/24"]))
            .unwrap();
        lab.apply(ops);
    }
    assert_eq!(lab.c.nodes(t(3))[1].primary_routes, vec!["10.1.0.0/24"]);
    lab.c.take_updates();
    let ops = lab.c.expire_node(t(4), 2).unwrap();
    lab.apply(ops);
    let ups = lab.c.take_updates();
    assert!(
        ups.contains(&Update::Close(s1)),
        "the expired router's stream ends"
    );
    let nodes = lab.c.nodes(t(4));
    assert!(nodes[1].primary_routes.is_empty());
    assert_eq!(nodes[2].primary_routes, vec!["10.1.0.0/24"], "r2 took over");
    let req = MapRequest {
        node_key: r1.node,
        stream: true,
        ..MapRequest::default()
    };
    assert_eq!(
        lab.c.map_request(t(5), r1.machine, &req).unwrap_err(),
        MapError::KeyExpired
    );
}

#[test]
fn a_new_stream_replaces_the_old_one() {
    let mut lab = Lab::new(weft_policy::DEFAULT_POLICY);
    let k = lab.key("alice", true, false, &[]);
    let (a, b) = (dev(1, "a"), dev(2, "b"));
    lab.join(&a, &k);
    lab.join(&b, &k);
    let (sb, _) = lab.stream(t(2), &b);
    let (old, _) = lab.stream(t(2), &a);
    lab.c.take_updates();
    let (new, _) = lab.stream(t(3), &a);
    let ups = lab.c.take_updates();
    assert!(ups.contains(&Update::Close(old)));
    assert!(
        Lab::sent_to(&ups, sb).is_empty(),
        "still online: nothing for the peers"
    );
    // Closing the replaced one later changes nothing; closing the live one takes a offline.
    assert!(lab.c.map_close(t(4), old).is_empty());
    assert!(lab.c.nodes(t(4))[0].online);
    lab.c.map_close(t(5), new);
    assert!(!lab.c.nodes(t(5))[0].online);
}

#[test]
fn renames_are_unique_whatever_the_case() {
    let mut lab = Lab::new(weft_policy::DEFAULT_POLICY);
    let k = lab.key("alice", true, false, &[]);
    lab.join(&dev(1, "web"), &k);
    lab.join(&dev(2, "db"), &k);
    assert_eq!(
        lab.c.rename_node(t(2), 2, "Web").unwrap_err(),
        CoordError::BadName("web".into())
    );
    lab.c.rename_node(t(2), 2, "Db-1").unwrap();
    assert_eq!(lab.c.nodes(t(2))[1].name, "db-1");
}

#[test]
fn routes_do_not_follow_a_machine_to_a_new_owner() {
    let mut lab = Lab::new(weft_policy::DEFAULT_POLICY);
    let ka = lab.key("alice", true, false, &[]);
    let kb = lab.key("bob", true, false, &[]);
    let r = dev(1, "router");
    lab.join(&r, &ka);
    lab.stream_with(
        t(2),
        &r,
        Some(Hostinfo {
            routable_ips: routes(&["10.1.0.0/24"]),
            ..Hostinfo::default()
        }),
    );
    let ops = lab
        .c
        .approve_routes(t(3), 1, routes(&["10.1.0.0/24"]))
        .unwrap();
    lab.apply(ops);
    // Re-registered by bob: alice's approval does not carry over.
    let req = RegisterRequest {
        node_key: r.node,
        auth: Some(RegisterResponseAuth { auth_key: kb }),
        ..RegisterRequest::default()
    };
    let (_, ops) = lab.c.register(t(4), r.machine, &req, &[7; 16]).unwrap();
    lab.apply(ops);
    let n = &lab.c.nodes(t(4))[0];
    assert_eq!(n.user, "bob");
    assert!(n.approved_routes.is_empty());
    assert_eq!(
        lab.register(
            t(5),
            &Dev {
                machine: MachinePublic::new(key(9)),
                node: NodePublic::ZERO,
                host: "z".into()
            },
            None
        )
        .unwrap_err(),
        CoordError::BadNodeKey
    );
}
