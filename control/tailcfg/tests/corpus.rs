//! Replays the committed corpus of malformed and valid inputs under `tests/corpus/` through the
//! invariants of `weft_tailcfg::fuzzing`: nothing panics, refusals are typed errors, and what
//! parses survives being written back.
//!
//! File names are `<target>-<ok|bad>-<what>`: the target picks the parser (`key`, `frame`, or a
//! JSON message kind such as `json_mapresponse`) and `ok`/`bad` is the outcome the seed must
//! have. Inputs a fuzzer finds are added by hand as `<target>-found-<n>` (no expected outcome).
//! The seeds are generated below; `seed_corpus_matches_its_generator` checks that the committed
//! files are what the generator makes. After changing it, rewrite them with
//! `WEFT_REGENERATE_CORPORA=1 cargo test -p weft-tailcfg --test corpus`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;

use weft_tailcfg::frame::{encode, encode_json, keep_alive_frame};
use weft_tailcfg::fuzzing::{check_frames, check_json_as, check_key_text, Outcome, Violation};
use weft_tailcfg::{MapResponse, Node, NodePublic};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn frame_of(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

fn seeds() -> Vec<(String, Vec<u8>)> {
    let hex = "ab".repeat(32);
    let mut s: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, data: Vec<u8>| s.push((name.to_string(), data));

    // Key text.
    add("key-ok-nodekey", format!("nodekey:{hex}").into_bytes());
    add(
        "key-ok-mkey_upper",
        format!("mkey:{}", hex.to_uppercase()).into_bytes(),
    );
    add(
        "key-ok-zero_discokey",
        format!("discokey:{}", "0".repeat(64)).into_bytes(),
    );
    add("key-ok-chalpub", format!("chalpub:{hex}").into_bytes());
    add("key-bad-empty", Vec::new());
    add("key-bad-prefix_only", b"nodekey:".to_vec());
    add("key-bad-no_prefix", hex.clone().into_bytes());
    add("key-bad-wrong_prefix", format!("nlpub:{hex}").into_bytes());
    add("key-bad-prefix_case", format!("NODEKEY:{hex}").into_bytes());
    add(
        "key-bad-short",
        format!("nodekey:{}", &hex[..63]).into_bytes(),
    );
    add("key-bad-long", format!("nodekey:{hex}0").into_bytes());
    add(
        "key-bad-nonhex",
        format!("nodekey:{}zz", &hex[..62]).into_bytes(),
    );
    add(
        "key-bad-multibyte",
        format!("nodekey:{}", "é".repeat(32)).into_bytes(),
    );
    add("key-bad-space", format!(" nodekey:{hex}").into_bytes());
    add(
        "key-bad-not_utf8",
        [b"nodekey:".as_slice(), &[0xff; 64]].concat(),
    );

    // Map frames.
    let keep = keep_alive_frame().unwrap();
    add("frame-ok-keepalive", keep.clone());
    let full = MapResponse {
        node: Some(Node {
            id: 1,
            key: NodePublic::from_bytes([7; 32]),
            name: "a.tail.example.".into(),
            ..Node::default()
        }),
        peers: (2..6)
            .map(|id| Node {
                id,
                ..Node::default()
            })
            .collect(),
        ..MapResponse::default()
    };
    let mut two = Vec::new();
    encode(&full, &mut two).unwrap();
    add("frame-ok-full_map", two.clone());
    two.extend(&keep);
    add("frame-ok-map_then_keepalive", two.clone());
    add("frame-bad-prefix_cut", keep[..2].to_vec());
    add("frame-bad-payload_cut", keep[..keep.len() - 1].to_vec());
    add("frame-bad-second_cut", two[..two.len() - 3].to_vec());
    add("frame-bad-trailing_byte", [keep.as_slice(), &[0]].concat());
    add("frame-bad-len_max", u32::MAX.to_le_bytes().to_vec());
    add(
        "frame-bad-len_over_limit",
        [(2u32 << 20).to_le_bytes().as_slice(), &[0x28, 0xb5]].concat(),
    );
    add("frame-bad-len_big_endian", {
        let mut f = keep.clone();
        f[..4].reverse();
        f
    });
    add("frame-bad-zero_len", 0u32.to_le_bytes().to_vec());
    add("frame-bad-plain_json", frame_of(br#"{"KeepAlive":true}"#));
    add(
        "frame-bad-zstd_magic_only",
        frame_of(&[0x28, 0xb5, 0x2f, 0xfd]),
    );
    add("frame-bad-zstd_corrupt", {
        let mut f = two.clone();
        let n = f.len();
        for b in &mut f[12..n / 2] {
            *b ^= 0x5a;
        }
        f
    });
    let mut bomb = Vec::new();
    encode_json(&vec![b' '; 5 << 20], &mut bomb).unwrap();
    add("frame-bad-bomb", bomb);
    let mut not_json = Vec::new();
    encode_json(b"{\"Peers\":[{\"ID\":", &mut not_json).unwrap();
    add("frame-bad-json_cut", not_json);
    let mut bad_key = Vec::new();
    encode_json(br#"{"Node":{"ID":1,"Key":"nodekey:00"}}"#, &mut bad_key).unwrap();
    add("frame-bad-json_bad_key", bad_key);

    // JSON messages.
    let k = format!("nodekey:{hex}");
    let z = format!("nodekey:{}", "0".repeat(64));
    add("json_registerrequest-ok-client", format!(
        r#"{{"Version":133,"NodeKey":"{k}","OldNodeKey":"{z}","NLKey":"nlpub:{hex}","Auth":{{"AuthKey":"k"}},"Expiry":"0001-01-01T00:00:00Z","Followup":"","Hostinfo":{{"Hostname":"h","NetInfo":{{"PreferredDERP":999}}}},"NodeKeySignature":null}}"#
    ).into_bytes());
    add(
        "json_registerrequest-bad-empty_key",
        br#"{"Version":133,"NodeKey":""}"#.to_vec(),
    );
    add(
        "json_registerrequest-bad-expiry",
        format!(r#"{{"NodeKey":"{k}","Expiry":"tomorrow"}}"#).into_bytes(),
    );
    add(
        "json_registerrequest-bad-signature_b64",
        br#"{"NodeKeySignature":"***"}"#.to_vec(),
    );
    add("json_registerresponse-ok-go_zero", br#"{"User":{"ID":0,"DisplayName":""},"Login":{"ID":0,"Provider":"","LoginName":"","DisplayName":""},"NodeKeyExpired":false,"MachineAuthorized":false,"AuthURL":"","NodeKeySignature":null,"Error":""}"#.to_vec());
    add("json_maprequest-ok-stream", format!(
        r#"{{"Version":133,"Compress":"zstd","KeepAlive":true,"NodeKey":"{k}","DiscoKey":"discokey:{hex}","Stream":true,"Hostinfo":null,"Endpoints":["1.2.3.4:41641","[2001:db8::1]:41641"],"EndpointTypes":[2,1]}}"#
    ).into_bytes());
    add(
        "json_maprequest-bad-endpoint",
        format!(r#"{{"NodeKey":"{k}","Endpoints":["1.2.3.4"]}}"#).into_bytes(),
    );
    add(
        "json_maprequest-bad-version_string",
        br#"{"Version":"133"}"#.to_vec(),
    );
    add("json_mapresponse-ok-delta", br#"{"PeersRemoved":[5],"OnlineChange":{"4":true},"PeersChangedPatch":[{"NodeID":4,"Online":false}],"PacketFilters":{"*":null,"base":[]}}"#.to_vec());
    add("json_mapresponse-ok-go_nulls", br#"{"Peers":null,"PeersChanged":null,"UserProfiles":null,"DNSConfig":{"Routes":{"x.":null},"Resolvers":null},"Health":null}"#.to_vec());
    add(
        "json_mapresponse-bad-node_id_key",
        br#"{"OnlineChange":{"four":true}}"#.to_vec(),
    );
    add(
        "json_mapresponse-bad-id_overflow",
        br#"{"PeersRemoved":[9223372036854775808]}"#.to_vec(),
    );
    add(
        "json_mapresponse-bad-truncated",
        br#"{"Peers":[{"ID":1,"#.to_vec(),
    );
    add(
        "json_mapresponse-bad-deep_nesting",
        [vec![b'['; 5000], vec![b']'; 5000]].concat(),
    );
    add(
        "json_mapresponse-bad-not_object",
        br#""KeepAlive""#.to_vec(),
    );
    add("json_node-ok-minimal_go", format!(r#"{{"ID":1,"StableID":"","Name":"","User":0,"Key":"{z}","Addresses":null,"CapMap":{{"c":null}}}}"#).into_bytes());
    add(
        "json_node-bad-prefix_host_bits_len",
        format!(r#"{{"Key":"{k}","Addresses":["100.64.0.1/33"]}}"#).into_bytes(),
    );
    add(
        "json_node-bad-machine_as_node_key",
        format!(r#"{{"Key":"mkey:{hex}"}}"#).into_bytes(),
    );
    add(
        "json_node-bad-time_offset",
        format!(r#"{{"Key":"{k}","Created":"2026-01-01T00:00:00+25:00"}}"#).into_bytes(),
    );
    add("json_derpmap-ok-region", br#"{"Regions":{"999":{"RegionID":999,"RegionCode":"w","RegionName":"w","Nodes":[{"Name":"a","RegionID":999,"HostName":"d.example","STUNPort":-1}]},"1":null},"omitDefaultRegions":true}"#.to_vec());
    add(
        "json_derpmap-bad-region_key",
        br#"{"Regions":{"x":{}}}"#.to_vec(),
    );
    add(
        "json_derpmap-bad-nodes_object",
        br#"{"Regions":{"1":{"Nodes":{}}}}"#.to_vec(),
    );
    s
}

fn check(name: &str, data: &[u8]) -> Result<Outcome, Violation> {
    let target = name.split('-').next().unwrap_or_default();
    match target {
        "key" => check_key_text(data),
        "frame" => check_frames(data),
        t => match t.strip_prefix("json_") {
            Some(kind) => check_json_as(kind, data),
            None => Err(Violation(format!("unknown target in {name}"))),
        },
    }
}

#[test]
fn corpus_replays() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 50, "corpus too small: {}", files.len());
    let (mut ok, mut bad) = (0, 0);
    for path in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let data = std::fs::read(path).unwrap();
        let outcome = check(name, &data).unwrap_or_else(|v| panic!("{name}: {v}"));
        match (name.split('-').nth(1), &outcome) {
            (Some("ok"), Outcome::Accepted) => ok += 1,
            (Some("bad"), Outcome::Rejected(why)) => {
                assert!(!why.is_empty(), "{name}: empty error text");
                bad += 1;
            }
            (Some("ok" | "bad"), _) => panic!("{name}: unexpected {outcome:?}"),
            _ => {}
        }
    }
    assert!(ok >= 10 && bad >= 30, "ok {ok}, bad {bad}");
}

/// Every committed seed equals what its generator makes today; with
/// `WEFT_REGENERATE_CORPORA=1` the seeds are rewritten instead.
#[test]
fn seed_corpus_matches_its_generator() {
    let regenerate = std::env::var_os("WEFT_REGENERATE_CORPORA").is_some();
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, data) in seeds() {
        check(&name, &data).unwrap_or_else(|v| panic!("{name}: {v}"));
        let path = dir.join(&name);
        if regenerate {
            std::fs::write(&path, data).unwrap();
        } else {
            let committed = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (regenerate the corpus)", path.display()));
            assert!(committed == data, "{name} differs from its generator");
        }
    }
}
