//! Property tests: key and prefix text round trips, parsers that never panic on arbitrary text,
//! and arbitrary `MapResponse`s surviving JSON + zstd framing + chunked decoding unchanged.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use weft_tailcfg::frame::{self, FrameDecoder, Limits};
use weft_tailcfg::*;

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

fn prefix() -> impl Strategy<Value = IpPrefix> {
    (ip(), 0u8..=128).prop_map(|(a, l)| {
        let max = if a.is_ipv4() { 32 } else { 128 };
        IpPrefix::new(a, l % (max + 1)).unwrap()
    })
}

fn time() -> impl Strategy<Value = Time> {
    // Years 1..=9999, as Go can write them.
    (-62_135_596_800i64..253_402_300_799, 0u32..1_000_000_000)
        .prop_map(|(s, n)| Time::from_unix(s, n).unwrap())
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 .:_/\\-\"\\\\é]{0,12}"
}

fn node() -> impl Strategy<Value = Node> {
    (
        (
            1i64..1 << 53,
            text(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<u8>(),
        ),
        (
            proptest::collection::vec(prefix(), 0..3),
            proptest::option::of(proptest::collection::vec(prefix(), 0..3)),
        ),
        (
            proptest::collection::vec(
                (ip(), any::<u16>()).prop_map(|(a, p)| SocketAddr::new(a, p)),
                0..3,
            ),
            0i64..1000,
        ),
        (
            proptest::option::of(time()),
            proptest::option::of(any::<bool>()),
            any::<bool>(),
            time(),
        ),
        (
            proptest::collection::vec("tag:[a-z]{1,6}", 0..2),
            proptest::collection::btree_map(
                "[a-z:/.]{1,10}",
                Just(vec![serde_json::json!({"a": 1})]),
                0..2,
            ),
        ),
        proptest::option::of(text().prop_map(|h| Hostinfo {
            hostname: h,
            ..Hostinfo::default()
        })),
    )
        .prop_map(
            |(
                (id, name, k, d, mb),
                (addresses, allowed_ips),
                (endpoints, home_derp),
                (last_seen, online, auth, expiry),
                (tags, cap_map),
                hostinfo,
            )| Node {
                id,
                stable_id: id.to_string(),
                name,
                user: id % 7,
                key: NodePublic::from_bytes(k),
                disco_key: DiscoPublic::from_bytes(d),
                machine: MachinePublic::from_bytes([mb; 32]),
                key_expiry: expiry,
                addresses,
                allowed_ips,
                endpoints,
                home_derp,
                last_seen,
                online,
                machine_authorized: auth,
                tags,
                cap_map,
                hostinfo,
                ..Node::default()
            },
        )
}

fn rule() -> impl Strategy<Value = FilterRule> {
    (
        prefix(),
        any::<u16>(),
        proptest::collection::vec(0i64..256, 0..3),
    )
        .prop_map(|(p, port, proto)| {
            serde_json::from_value(serde_json::json!({
                "SrcIPs": [p.to_string()],
                "DstPorts": [{"IP": "*", "Ports": {"First": port, "Last": port}}],
                "IPProto": proto,
            }))
            .unwrap()
        })
}

fn map_response() -> impl Strategy<Value = MapResponse> {
    (
        (
            proptest::option::of(node()),
            proptest::collection::vec(node(), 0..4),
            proptest::collection::vec(node(), 0..2),
        ),
        (
            proptest::collection::vec(1i64..1 << 53, 0..4),
            proptest::collection::btree_map(1i64..1000, any::<bool>(), 0..4),
        ),
        (proptest::collection::vec(
            (
                1i64..1000,
                proptest::option::of(any::<bool>()),
                proptest::option::of(time()),
                0i64..1000,
            ),
            0..3,
        )),
        (
            proptest::option::of(proptest::collection::vec(rule(), 0..3)),
            proptest::collection::btree_map(
                "[a-z*]{1,5}",
                proptest::option::of(proptest::collection::vec(rule(), 0..2)),
                0..3,
            ),
        ),
        (
            proptest::option::of(time()),
            any::<bool>(),
            text(),
            proptest::option::of(any::<bool>()),
            proptest::option::of(proptest::collection::vec(text(), 0..2)),
        ),
    )
        .prop_map(
            |(
                (node, peers, changed),
                (removed, online_change),
                patches,
                (packet_filter, packet_filters),
                (control_time, keep_alive, domain, collect, health),
            )| MapResponse {
                node,
                peers,
                peers_changed: changed,
                peers_removed: removed,
                online_change: online_change.clone(),
                peer_seen_change: online_change,
                peers_changed_patch: patches
                    .into_iter()
                    .map(|(id, online, seen, derp)| PeerChange {
                        node_id: id,
                        online,
                        last_seen: seen,
                        derp_region: derp,
                        ..PeerChange::default()
                    })
                    .collect(),
                packet_filter,
                packet_filters,
                control_time,
                keep_alive,
                domain,
                collect_services: collect,
                health,
                debug: Some(Debug {
                    disable_log_tail: true,
                    ..Debug::default()
                }),
                ..MapResponse::default()
            },
        )
}

proptest! {
    #[test]
    fn key_text_round_trip(bytes in any::<[u8; 32]>()) {
        let n = NodePublic::from_bytes(bytes);
        prop_assert_eq!(NodePublic::parse(&n.to_string()), Ok(n));
        let m = MachinePublic::from_bytes(bytes);
        prop_assert_eq!(MachinePublic::parse(&m.to_string()), Ok(m));
        let d = DiscoPublic::from_bytes(bytes);
        prop_assert_eq!(serde_json::from_str::<DiscoPublic>(&serde_json::to_string(&d).unwrap()).unwrap(), d);
        let c = ChallengePublic::from_bytes(bytes);
        prop_assert_eq!(ChallengePublic::parse(&c.to_string().to_uppercase().replacen("CHALPUB:", "chalpub:", 1)), Ok(c));
        // A key of one type never parses as another.
        prop_assert!(NodePublic::parse(&m.to_string()).is_err());
    }

    #[test]
    fn key_parse_never_panics(s in "\\PC{0,80}", prefix in prop_oneof![Just("nodekey:"), Just("mkey:"), Just("")]) {
        let t = format!("{prefix}{s}");
        let _ = NodePublic::parse(&t);
        let _ = MachinePublic::parse(&t);
        let _ = t.parse::<IpPrefix>();
        let _ = Time::parse(&t);
    }

    #[test]
    fn prefix_and_time_round_trip(p in prefix(), t in time()) {
        prop_assert_eq!(p.to_string().parse::<IpPrefix>(), Ok(p));
        prop_assert_eq!(Time::parse(&t.format().unwrap()), Ok(t));
    }

    #[test]
    fn map_response_through_frames(msgs in proptest::collection::vec(map_response(), 1..4), chunk in 1usize..300) {
        let mut stream = Vec::new();
        for m in &msgs {
            frame::encode(m, &mut stream).unwrap();
        }
        let mut dec = FrameDecoder::new(Limits::default());
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            dec.push(piece);
            while let Some(m) = dec.next_response().unwrap() {
                got.push(m);
            }
        }
        dec.finish().unwrap();
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn map_json_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = serde_json::from_slice::<MapResponse>(&bytes);
        let _ = serde_json::from_slice::<MapRequest>(&bytes);
        let _ = serde_json::from_slice::<RegisterRequest>(&bytes);
        let _ = frame::decode_all(&bytes, Limits::default());
    }
}

#[test]
fn node_id_map_keys_are_decimal_strings() {
    let mut m = BTreeMap::new();
    m.insert(42i64, true);
    assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"42":true}"#);
}
