//! Table tests: each alias kind, port form, protocol and autogroup compiled for the fixture
//! tailnet and compared with the exact wire filter (the shapes follow the Tailscale SaaS
//! captures in Headscale's test data; see the `compile` module doc), plus validation errors
//! with their lines.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use serde_json::json;
use support::*;
use weft_policy::{Invalid, Policy, PolicyError};

/// `SrcIPs` of a `*` source on the fixture: tailnet ranges plus the router's routes.
fn any_src() -> serde_json::Value {
    json!([
        "10.33.0.0/16",
        "100.115.94.0-100.127.255.255",
        "100.64.0.0-100.115.91.255",
        "fd00:33::/64",
        "fd7a:115c:a1e0::/48"
    ])
}

fn own(id: weft_policy::NodeId, first: u16, last: u16) -> serde_json::Value {
    json!([
        {"IP": v4(id).to_string(), "Ports": {"First": first, "Last": last}},
        {"IP": v6(id).to_string(), "Ports": {"First": first, "Last": last}},
    ])
}

fn acl(src: &str, dst: &str) -> String {
    policy_with(&format!(
        r#""acls": [{{"action": "accept", "src": [{src}], "dst": [{dst}]}}]"#
    ))
}

#[test]
fn user_source_lists_that_users_untagged_devices() {
    let c = compile(&acl(r#""alice@example.com""#, r#""tag:server:22""#));
    assert_eq!(
        filter_json(&c, SERVER),
        json!([{"SrcIPs": ["100.64.0.1", "100.64.0.2", "fd7a:115c:a1e0::1", "fd7a:115c:a1e0::2"],
                "DstPorts": own(SERVER, 22, 22)}])
    );
    // alice owns the tagged nodes too, but tags replace the user identity.
    for other in [ALICE_LAPTOP, BOB_LAPTOP, DB, ROUTER, EXIT, CAROL] {
        assert_eq!(filter_json(&c, other), json!([]), "{other:?}");
    }
    // `alice@` is the user named exactly `alice` (as Headscale resolves it): not
    // alice@example.com, so it admits nobody here.
    let c2 = compile(&acl(r#""alice@""#, r#""tag:server:22""#));
    assert_eq!(filter_json(&c2, SERVER), json!([]));
}

#[test]
fn group_tag_and_autogroup_sources() {
    let c = compile(&acl(r#""group:eng""#, r#""tag:db:5432""#));
    assert_eq!(
        filter_json(&c, DB)[0]["SrcIPs"],
        json!([
            "100.64.0.1",
            "100.64.0.2",
            "100.64.0.3",
            "fd7a:115c:a1e0::1",
            "fd7a:115c:a1e0::2",
            "fd7a:115c:a1e0::3"
        ])
    );
    let c = compile(&acl(r#""tag:server""#, r#""tag:db:5432""#));
    assert_eq!(
        filter_json(&c, DB)[0]["SrcIPs"],
        json!(["100.64.0.4", "fd7a:115c:a1e0::4"])
    );
    let c = compile(&acl(r#""autogroup:member""#, r#""tag:db:*""#));
    assert_eq!(
        filter_json(&c, DB)[0]["SrcIPs"],
        json!([
            "100.64.0.1",
            "100.64.0.2",
            "100.64.0.3",
            "100.64.0.8",
            "fd7a:115c:a1e0::1",
            "fd7a:115c:a1e0::2",
            "fd7a:115c:a1e0::3",
            "fd7a:115c:a1e0::8"
        ])
    );
    let c = compile(&acl(r#""autogroup:tagged""#, r#""carol@example.org:*""#));
    assert_eq!(
        filter_json(&c, CAROL),
        json!([{"SrcIPs": ["100.64.0.4", "100.64.0.5", "100.64.0.6", "100.64.0.7",
                           "fd7a:115c:a1e0::4", "fd7a:115c:a1e0::5", "fd7a:115c:a1e0::6", "fd7a:115c:a1e0::7"],
                "DstPorts": own(CAROL, 0, 65535)}])
    );
    // An empty group is no source: no rule at all.
    let c = compile(&acl(r#""group:empty""#, r#""*:*""#));
    assert_eq!(filter_json(&c, ALICE_LAPTOP), json!([]));
}

#[test]
fn wildcard_source_is_tailnet_ranges_and_subnet_routes() {
    let c = compile(&acl(r#""*""#, r#""tag:server:443""#));
    assert_eq!(
        filter_json(&c, SERVER),
        json!([{"SrcIPs": any_src(), "DstPorts": own(SERVER, 443, 443)}])
    );
}

#[test]
fn ip_cidr_and_host_aliases() {
    // Sources are written as given (a single address without /32).
    let c = compile(&acl(
        r#""100.64.0.3", "10.0.0.0/8", "dbhost""#,
        r#""tag:server:80""#,
    ));
    assert_eq!(
        filter_json(&c, SERVER)[0]["SrcIPs"],
        json!(["10.0.0.0/8", "100.64.0.3", "100.64.0.5"])
    );
    // A destination prefix stays as written on the nodes it concerns: the node holding the
    // address, the router whose route overlaps it. Nobody serves "lan".
    let c = compile(&acl(
        r#""*""#,
        r#""dbhost:5432", "10.0.0.0/8:22", "lan:80", "v6net:443""#,
    ));
    assert_eq!(
        filter_json(&c, DB),
        json!([{"SrcIPs": any_src(), "DstPorts": [{"IP": "100.64.0.5", "Ports": {"First": 5432, "Last": 5432}}]}])
    );
    assert_eq!(
        filter_json(&c, ROUTER),
        json!([{"SrcIPs": any_src(), "DstPorts": [
            {"IP": "10.0.0.0/8", "Ports": {"First": 22, "Last": 22}},
            {"IP": "fd00:33::/64", "Ports": {"First": 443, "Last": 443}},
        ]}])
    );
    assert_eq!(filter_json(&c, SERVER), json!([]));
    // IPv6 destinations, bare and bracketed.
    let c = compile(&acl(
        r#""*""#,
        r#""fd7a:115c:a1e0::4:22", "[fd7a:115c:a1e0::5]:5432", "[fd7a:115c:a1e0::]/48:8080""#,
    ));
    let server = filter_json(&c, SERVER);
    assert_eq!(
        server[0]["DstPorts"],
        json!([
            {"IP": "fd7a:115c:a1e0::4", "Ports": {"First": 22, "Last": 22}},
            {"IP": "fd7a:115c:a1e0::/48", "Ports": {"First": 8080, "Last": 8080}},
        ])
    );
    assert_eq!(
        filter_json(&c, DB)[0]["DstPorts"],
        json!([
            {"IP": "fd7a:115c:a1e0::5", "Ports": {"First": 5432, "Last": 5432}},
            {"IP": "fd7a:115c:a1e0::/48", "Ports": {"First": 8080, "Last": 8080}},
        ])
    );
}

#[test]
fn port_forms() {
    for (ports, want) in [
        ("*", json!([[0, 65535]])),
        ("22", json!([[22, 22]])),
        ("80,443", json!([[80, 80], [443, 443]])),
        ("1000-2000", json!([[1000, 2000]])),
        ("22,8000-8100", json!([[22, 22], [8000, 8100]])),
    ] {
        let c = compile(&acl(
            r#""bob@example.com""#,
            &format!(r#""dbhost:{ports}""#),
        ));
        let got: Vec<serde_json::Value> = filter_json(&c, DB)[0]["DstPorts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| json!([d["Ports"]["First"], d["Ports"]["Last"]]))
            .collect();
        assert_eq!(serde_json::Value::from(got), want, "{ports}");
    }
}

#[test]
fn protocols() {
    for (proto, want) in [
        (r#""tcp""#, json!([6])),
        (r#""udp""#, json!([17])),
        (r#""sctp""#, json!([132])),
        (r#""icmp""#, json!([1])),
        (r#""ipv6-icmp""#, json!([58])),
        (r#""47""#, json!([47])),
        ("47", json!([47])),
    ] {
        let ports = if matches!(want[0].as_i64(), Some(6 | 17 | 132)) {
            "53"
        } else {
            "*"
        };
        let text = policy_with(&format!(
            r#""acls": [{{"action": "accept", "src": ["*"], "dst": ["tag:server:{ports}"], "proto": {proto}}}]"#
        ));
        assert_eq!(
            filter_json(&compile(&text), SERVER)[0]["IPProto"],
            want,
            "{proto}"
        );
    }
    // Without proto the field is omitted (the client's default set).
    let c = compile(&acl(r#""*""#, r#""tag:server:22""#));
    assert!(filter_json(&c, SERVER)[0].get("IPProto").is_none());
}

#[test]
fn autogroup_self_is_per_user() {
    let c = compile(&acl(r#""autogroup:member""#, r#""autogroup:self:*""#));
    let mine = json!([
        "100.64.0.1",
        "100.64.0.2",
        "fd7a:115c:a1e0::1",
        "fd7a:115c:a1e0::2"
    ]);
    assert_eq!(
        filter_json(&c, ALICE_LAPTOP),
        json!([{"SrcIPs": mine, "DstPorts": own(ALICE_LAPTOP, 0, 65535)}])
    );
    assert_eq!(filter_json(&c, ALICE_PHONE)[0]["SrcIPs"], mine);
    assert_eq!(
        filter_json(&c, BOB_LAPTOP)[0]["SrcIPs"],
        json!(["100.64.0.3", "fd7a:115c:a1e0::3"])
    );
    // Tagged nodes are nobody's own devices.
    assert_eq!(filter_json(&c, SERVER), json!([]));
    // Visibility: alice's devices see each other, not bob.
    assert_eq!(
        c.peers_of(ALICE_LAPTOP).into_iter().collect::<Vec<_>>(),
        [ALICE_PHONE]
    );
    assert!(c.peers_of(BOB_LAPTOP).is_empty());
    // `*` as the source means "the same user's devices" here too.
    let c2 = compile(&acl(r#""*""#, r#""autogroup:self:*""#));
    assert_eq!(
        filter_json(&c2, ALICE_LAPTOP),
        filter_json(&c, ALICE_LAPTOP)
    );
    // A group source: bob's laptop is in group:eng, carol is not.
    let c3 = compile(&acl(r#""group:eng""#, r#""autogroup:self:22""#));
    assert_eq!(filter_json(&c3, CAROL), json!([]));
    assert_eq!(
        filter_json(&c3, BOB_LAPTOP)[0]["DstPorts"],
        own(BOB_LAPTOP, 22, 22)
    );
}

#[test]
fn autogroup_internet_goes_to_exit_nodes_only() {
    let c = compile(&acl(r#""group:eng""#, r#""autogroup:internet:*""#));
    let rules = filter_json(&c, EXIT);
    let ips: Vec<&str> = rules[0]["DstPorts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["IP"].as_str().unwrap())
        .collect();
    assert_eq!(ips, weft_policy::INTERNET_RANGES);
    for other in [ALICE_LAPTOP, SERVER, ROUTER] {
        assert_eq!(filter_json(&c, other), json!([]), "{other:?}");
    }
    // The users see the exit node and it sees them; carol sees nobody.
    assert!(c.peers_of(ALICE_LAPTOP).contains(&EXIT));
    assert!(c.peers_of(EXIT).contains(&BOB_LAPTOP));
    assert!(c.peers_of(CAROL).is_empty());
}

#[test]
fn wildcard_destination_and_merging() {
    // Two rules with the same sources merge into one (as Tailscale does).
    let text = policy_with(
        r#""acls": [
            {"action": "accept", "src": ["*"], "dst": ["tag:server:22"]},
            {"action": "accept", "src": ["*"], "dst": ["*:*"]},
            {"action": "accept", "src": ["*"], "dst": ["tag:server:80"], "proto": "tcp"},
        ]"#,
    );
    let c = compile(&text);
    let mut first = own(SERVER, 22, 22).as_array().unwrap().clone();
    first.push(json!({"IP": "*", "Ports": {"First": 0, "Last": 65535}}));
    assert_eq!(
        filter_json(&c, SERVER),
        json!([
            {"SrcIPs": any_src(), "DstPorts": first},
            {"SrcIPs": any_src(), "DstPorts": own(SERVER, 80, 80), "IPProto": [6]},
        ])
    );
    assert_eq!(
        filter_json(&c, CAROL),
        json!([{"SrcIPs": any_src(), "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}])
    );
}

#[test]
fn no_acls_key_allows_all_and_empty_acls_denies_all() {
    let c = compile(&policy_with(r#""tests": []"#));
    assert_eq!(
        filter_json(&c, DB),
        serde_json::to_value(weft_policy::filter_allow_all()).unwrap()
    );
    assert_eq!(c.peers_of(DB).len(), 7);
    let c = compile(&policy_with(r#""acls": []"#));
    assert_eq!(filter_json(&c, DB), json!([]));
    assert!(c.peers_of(DB).is_empty());
}

#[test]
fn filters_never_carry_legacy_fields() {
    let c = compile(&acl(r#""*""#, r#""*:*""#));
    let text = serde_json::to_string(&c.filter_for(SERVER)).unwrap();
    assert!(!text.contains("Bits"), "{text}");
}

fn invalid(text: &str) -> (Invalid, usize, String) {
    match Policy::parse(text) {
        Err(PolicyError::Invalid { kind, at, path, .. }) => (kind, at.line, path),
        other => panic!("expected a validation error, got {other:?}\n{text}"),
    }
}

#[test]
fn validation_errors_name_entry_and_line() {
    let base = |acl: &str| policy_with(&format!("\"acls\": [\n  {acl}\n]"));
    // policy_with puts "acls" on line 8, so the rule is on line 9.
    for (rule, kind, path) in [
        (
            r#"{"action": "deny", "src": ["*"], "dst": ["*:*"]}"#,
            Invalid::Action,
            "acls[0].action",
        ),
        (
            r#"{"action": "accept", "src": ["group:nope"], "dst": ["*:*"]}"#,
            Invalid::UndefinedGroup,
            "acls[0].src[0]",
        ),
        (
            r#"{"action": "accept", "src": ["*"], "dst": ["tag:nope:22"]}"#,
            Invalid::UndefinedTag,
            "acls[0].dst[0]",
        ),
        (
            r#"{"action": "accept", "src": ["nohost"], "dst": ["*:*"]}"#,
            Invalid::UndefinedHost,
            "acls[0].src[0]",
        ),
        (
            r#"{"action": "accept", "src": ["*"], "dst": ["tag:server:ssh"]}"#,
            Invalid::Ports("not a port number"),
            "acls[0].dst[0]",
        ),
        (
            r#"{"action": "accept", "src": ["*"], "dst": ["tag:server"]}"#,
            Invalid::Ports("not a port number"),
            "acls[0].dst[0]",
        ),
        (
            r#"{"action": "accept", "src": ["*"], "dst": ["tag:server:2000-1000"]}"#,
            Invalid::Ports("inverted range"),
            "acls[0].dst[0]",
        ),
        (
            r#"{"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": "ping"}"#,
            Invalid::Proto,
            "acls[0].proto",
        ),
        (
            r#"{"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": "0"}"#,
            Invalid::Proto,
            "acls[0].proto",
        ),
        (
            r#"{"action": "accept", "src": ["*"], "dst": ["*:22"], "proto": "icmp"}"#,
            Invalid::ProtoPorts,
            "acls[0].dst[0]",
        ),
        (
            r#"{"action": "accept", "src": ["autogroup:self"], "dst": ["*:*"]}"#,
            Invalid::Placement("autogroup:self is a destination only"),
            "acls[0].src[0]",
        ),
        (
            r#"{"action": "accept", "src": ["tag:server"], "dst": ["autogroup:self:*"]}"#,
            Invalid::SelfWithSource,
            "acls[0].src[0]",
        ),
        (
            r#"{"action": "accept", "src": ["*"], "dst": ["autogroup:nope:*"]}"#,
            Invalid::Alias("unknown autogroup"),
            "acls[0].dst[0]",
        ),
        (
            r#"{"action": "accept", "src": ["10.0.0.1/8"], "dst": ["*:*"]}"#,
            Invalid::Alias("CIDR has host bits set or a bad length"),
            "acls[0].src[0]",
        ),
    ] {
        let (k, line, p) = invalid(&base(rule));
        assert_eq!((k, line, p.as_str()), (kind, 9, path), "{rule}");
    }
}

#[test]
fn validation_of_tables() {
    let (k, line, p) = invalid(
        "{\n \"groups\": {\n  \"group:a\": [\"group:b\"],\n  \"group:b\": [\"group:a\"]\n }\n}",
    );
    assert_eq!(
        (k, line, p.as_str()),
        (Invalid::NestedGroup, 3, "groups.group:a[0]")
    );
    let (k, _, _) = invalid(r#"{"groups": {"group:a": ["group:a"]}}"#);
    assert_eq!(k, Invalid::NestedGroup);
    let (k, _, _) = invalid(r#"{"groups": {"eng": ["a@b"]}}"#);
    assert_eq!(k, Invalid::KeyPrefix("group:"));
    let (k, _, _) = invalid(r#"{"groups": {"group:a": ["tag:x"]}}"#);
    assert_eq!(k, Invalid::GroupMember);
    let (k, _, _) = invalid(r#"{"tagOwners": {"tag:a": ["group:none"]}}"#);
    assert_eq!(k, Invalid::UndefinedGroup);
    let (k, _, _) = invalid(r#"{"tagOwners": {"tag:a": ["10.0.0.1"]}}"#);
    assert_eq!(k, Invalid::TagOwner);
    let (k, _, _) = invalid(r#"{"hosts": {"db": "not-an-ip"}}"#);
    assert_eq!(k, Invalid::HostValue);
    let (k, line, _) =
        invalid("{\n\"autoApprovers\": {\"routes\": {\n\"10.0.0.1/8\": [\"a@b\"]}}}");
    assert_eq!((k, line), (Invalid::Route, 3));
    let (k, _, _) = invalid(r#"{"autoApprovers": {"exitNode": ["tag:none"]}}"#);
    assert_eq!(k, Invalid::UndefinedTag);
    let (k, _, p) = invalid(r#"{"tests": [{"src": "a@b", "deny": ["autogroup:internet:443"]}]}"#);
    assert!(matches!(k, Invalid::Placement(_)), "{k:?}");
    assert_eq!(p, "tests[0].deny[0]");
    // As on Tailscale: one port, one address, and something to check.
    for (t, want) in [
        (
            r#"{"src": "a@b", "accept": ["100.64.0.1:*"]}"#,
            "tests[0].accept[0]",
        ),
        (
            r#"{"src": "a@b", "accept": ["100.64.0.1:22,80"]}"#,
            "tests[0].accept[0]",
        ),
        (
            r#"{"src": "a@b", "deny": ["100.64.0.1:1-2"]}"#,
            "tests[0].deny[0]",
        ),
        (
            r#"{"src": "a@b", "deny": ["10.0.0.0/8:22"]}"#,
            "tests[0].deny[0]",
        ),
        (
            r#"{"src": "a@b", "deny": ["100.64.0.1/32:22"]}"#,
            "tests[0].deny[0]",
        ),
        (r#"{"src": "a@b"}"#, "tests[0]"),
    ] {
        let (_, _, p) = invalid(&format!(r#"{{"tests": [{t}]}}"#));
        assert_eq!(p, want, "{t}");
    }
    let (k, _, p) = invalid(r#"{"tests": [{"src": "a@b", "accept": ["tag:none:22"]}]}"#);
    assert_eq!(
        (k, p.as_str()),
        (Invalid::UndefinedTag, "tests[0].accept[0]")
    );
}

#[test]
fn syntax_errors_and_unknown_keys_name_the_line() {
    let text = "{\n  // comment\n  \"acls\": [],\n  \"acl\": [],\n}";
    match Policy::parse(text) {
        Err(PolicyError::Syntax { at, message }) => {
            assert_eq!(at.line, 4, "{message}");
            assert!(message.contains("unknown field `acl`"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match Policy::parse("{\n /* c */\n \"acls\": [\n  {\"action\": \"accept\" \"src\": []}\n ]\n}")
    {
        Err(PolicyError::Syntax { at, .. }) => assert_eq!(at.line, 4),
        other => panic!("{other:?}"),
    }
    match Policy::parse("{\n\"acls\": [] /* never closed\n}") {
        Err(e @ PolicyError::Hujson(_)) => {
            assert!(e.to_string().starts_with("line 2, column 12"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // Known Tailscale sections that weft ignores are accepted and reported.
    let p = Policy::parse(r#"{"acls": [], "ssh": [{"action": "accept"}], "grants": []}"#).unwrap();
    assert_eq!(p.ignored_sections(), ["grants", "ssh"]);
}

#[test]
fn auto_approvers() {
    let text = policy_with(
        r#""autoApprovers": {
            "routes": {"10.0.0.0/8": ["tag:router"], "192.168.0.0/16": ["group:eng"], "0.0.0.0/0": ["tag:db"]},
            "exitNode": ["tag:exit"],
        }"#,
    );
    let p = Policy::parse(&text).unwrap();
    let t = tailnet();
    let n = |id: weft_policy::NodeId| t.nodes.iter().find(|n| n.id == id).unwrap().clone();
    assert!(p.auto_approves_route(&n(ROUTER), net("10.33.0.0/16")));
    assert!(p.auto_approves_route(&n(ROUTER), net("10.0.0.0/8")));
    assert!(!p.auto_approves_route(&n(ROUTER), net("11.0.0.0/8")));
    assert!(!p.auto_approves_route(&n(ROUTER), net("10.0.0.0/7")));
    assert!(!p.auto_approves_route(&n(SERVER), net("10.33.0.0/16")));
    assert!(p.auto_approves_route(&n(BOB_LAPTOP), net("192.168.1.0/24")));
    assert!(!p.auto_approves_route(&n(CAROL), net("192.168.1.0/24")));
    // A "0.0.0.0/0" entry approves any IPv4 subnet route, but exit routes only come
    // through exitNode, never through a routes entry.
    assert!(p.auto_approves_route(&n(DB), net("11.0.0.0/8")));
    assert!(!p.auto_approves_route(&n(DB), net("0.0.0.0/0")));
    assert!(!p.auto_approves_exit_node(&n(DB)));
    assert!(!p.auto_approves_exit_node(&n(ROUTER)));
    assert!(p.auto_approves_exit_node(&n(EXIT)));
}

/// A policy that would grant access through `grants` is refused rather than ignored (ignoring
/// it without `acls` would mean allow-all); an empty `grants` with no `acls` denies all;
/// `"acls": null` is refused.
#[test]
fn grants_and_null_acls_never_mean_allow_all() {
    let err =
        weft_policy::Policy::parse(r#"{"grants": [{"src": ["*"], "dst": ["*"], "ip": ["*"]}]}"#)
            .unwrap_err()
            .to_string();
    assert!(err.contains("grants are not supported"), "{err}");
    let err = weft_policy::Policy::parse(r#"{"acls": null}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("acls must be a list"), "{err}");
    // Empty grants, no acls: deny all (not allow-all).
    let p = weft_policy::Policy::parse(r#"{"grants": []}"#).unwrap();
    let allow_all = weft_policy::Policy::parse("{}").unwrap();
    assert_ne!(format!("{p:?}"), format!("{allow_all:?}"));
}
