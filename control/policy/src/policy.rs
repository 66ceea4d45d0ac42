//! The policy document: its serde model, and validation into a [`Policy`] whose every alias
//! is known to resolve.
//!
//! # Unknown keys
//! Tailscale refuses a policy with a key it does not know (Headscale's parser, which follows
//! it, rejects unknown members too), so a typo such as `"acl"` for `"acls"` is an error with
//! its line rather than a silently ignored section. Keys of Tailscale sections weft does not
//! implement yet (`ssh`, `sshTests`, `nodeAttrs`, `postures`, `ipsets`, …) are accepted,
//! ignored, and listed in [`Policy::ignored_sections`] so the server can warn. `grants` is
//! different: it grants access, so a policy whose `grants` weft would ignore is refused with
//! its line (an empty `grants` list is accepted).
//!
//! # No `acls` at all
//! A policy with neither an `acls` nor a `grants` key allows everything (Headscale sends
//! `FilterAllowAll` then, and it is what a Tailscale tailnet does with no rules section);
//! `"acls": []` denies everything, and so does a policy with only an empty `grants` list.
//! `"acls": null` is refused: it reads like "no acls" (allow all) to some parsers and like an
//! empty list to others.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use weft_filter::{IpNet, PortRange};

use crate::alias::{
    parse_alias, parse_destination, parse_prefix, parse_proto, proto_has_ports, Alias,
};
use crate::error::{Invalid, PolicyError, Position};
use crate::hujson;
use crate::locate::{Locator, Path};

/// The policy file as written (after HuJSON stripping).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
    #[serde(default, rename = "tagOwners")]
    tag_owners: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    hosts: BTreeMap<String, String>,
    /// Absent (`None`), `null` (`Some(None)`) or a list.
    #[serde(default, deserialize_with = "present")]
    acls: Option<Option<Vec<RawAcl>>>,
    #[serde(default, rename = "autoApprovers")]
    auto_approvers: RawAutoApprovers,
    #[serde(default)]
    tests: Vec<RawTest>,
    // Tailscale sections weft does not implement (see the module doc).
    #[serde(default)]
    grants: Option<Value>,
    #[serde(default)]
    ssh: Option<Value>,
    #[serde(default, rename = "sshTests")]
    ssh_tests: Option<Value>,
    #[serde(default, rename = "nodeAttrs")]
    node_attrs: Option<Value>,
    #[serde(default)]
    postures: Option<Value>,
    #[serde(default, rename = "defaultSrcPosture")]
    default_src_posture: Option<Value>,
    #[serde(default)]
    ipsets: Option<Value>,
    #[serde(default, rename = "randomizeClientPort")]
    randomize_client_port: Option<Value>,
    #[serde(default, rename = "derpMap")]
    derp_map: Option<Value>,
    #[serde(default, rename = "disableIPv4")]
    disable_ipv4: Option<Value>,
    #[serde(default, rename = "OneCGNATRoute")]
    one_cgnat_route: Option<Value>,
}

/// For a field that defaults to `None` when absent: wraps whatever is there (even `null`) in
/// `Some`, so absent and `null` stay apart.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcl {
    action: String,
    #[serde(default)]
    src: Vec<String>,
    #[serde(default)]
    dst: Vec<String>,
    #[serde(default)]
    proto: Option<StrOrNum>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAutoApprovers {
    #[serde(default)]
    routes: BTreeMap<String, Vec<String>>,
    #[serde(default, rename = "exitNode")]
    exit_node: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTest {
    src: String,
    #[serde(default)]
    proto: Option<StrOrNum>,
    #[serde(default)]
    accept: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

/// `proto` may be written `"tcp"`, `"6"` or `6`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    Str(String),
    Num(i64),
}

impl StrOrNum {
    fn text(&self) -> String {
        match self {
            Self::Str(s) => s.clone(),
            Self::Num(n) => n.to_string(),
        }
    }
}

/// One accept rule: sources, destinations with ports, and an optional protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    /// Source aliases (hosts already replaced by their prefix).
    pub srcs: Vec<Alias>,
    /// Destinations.
    pub dsts: Vec<Destination>,
    /// The protocol; `None` is the client default (TCP, UDP, ICMP, ICMPv6).
    pub proto: Option<u8>,
}

/// A destination alias with its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The alias (hosts already replaced by their prefix).
    pub alias: Alias,
    /// The port ranges.
    pub ports: Vec<PortRange>,
}

/// One entry of the `tests` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTest {
    /// The source alias as written (for error messages).
    pub src_text: String,
    /// The source alias.
    pub src: Alias,
    /// The protocol; `None` tests TCP and UDP.
    pub proto: Option<u8>,
    /// Destinations the source must reach, with their text.
    pub accept: Vec<(String, Destination)>,
    /// Destinations the source must not reach, with their text.
    pub deny: Vec<(String, Destination)>,
    /// Where the test is in the file.
    pub at: Position,
}

/// A validated policy: every alias resolves, every port list and protocol parsed.
///
/// Build it with [`Policy::parse`]; compile it for a tailnet with [`Policy::compile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub(crate) groups: BTreeMap<String, Vec<String>>,
    pub(crate) tag_owners: BTreeMap<String, Vec<Alias>>,
    pub(crate) acls: Option<Vec<Acl>>,
    pub(crate) auto_routes: Vec<(IpNet, Vec<Alias>)>,
    pub(crate) auto_exit: Vec<Alias>,
    pub(crate) tests: Vec<PolicyTest>,
    ignored: Vec<&'static str>,
}

impl Policy {
    /// Parses and validates a HuJSON policy.
    ///
    /// # Errors
    /// [`PolicyError`] naming the line, column and reason: HuJSON or JSON syntax, an unknown
    /// key, or an invalid entry (see [`Invalid`]). The `tests` section is not run here (it
    /// needs a tailnet): see [`crate::CompiledPolicy::run_tests`].
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let json = hujson::to_json(text)?;
        let raw: RawPolicy = serde_json::from_str(&json).map_err(|e| PolicyError::Syntax {
            // serde_json says column 0 at the start of a line (an empty file, say).
            at: Position {
                line: e.line().max(1),
                column: e.column().max(1),
            },
            message: e.to_string(),
        })?;
        let v = Validator {
            loc: Locator::new(&json),
            groups: &raw.groups,
            tag_owners: &raw.tag_owners,
            hosts: &raw.hosts,
        };
        v.build(&raw)
    }

    /// Tailscale sections present in the file that weft ignores (see the module doc).
    pub fn ignored_sections(&self) -> &[&'static str] {
        &self.ignored
    }

    /// The accept rules; `None` when the file has no `acls` key (allow all).
    pub fn acls(&self) -> Option<&[Acl]> {
        self.acls.as_deref()
    }

    /// The `tests` section.
    pub fn tests(&self) -> &[PolicyTest] {
        &self.tests
    }

    /// The users of a group (empty for an unknown group).
    pub fn group_members(&self, group: &str) -> &[String] {
        self.groups.get(group).map_or(&[], Vec::as_slice)
    }
}

struct Validator<'a> {
    loc: Locator,
    groups: &'a BTreeMap<String, Vec<String>>,
    tag_owners: &'a BTreeMap<String, Vec<String>>,
    hosts: &'a BTreeMap<String, String>,
}

type Res<T> = Result<T, PolicyError>;

impl Validator<'_> {
    fn err(&self, path: &Path, entry: &str, kind: Invalid) -> PolicyError {
        PolicyError::Invalid {
            at: self.loc.value(path),
            path: path.to_string(),
            entry: entry.to_owned(),
            kind,
        }
    }

    fn key_err(&self, path: &Path, entry: &str, kind: Invalid) -> PolicyError {
        PolicyError::Invalid {
            at: self.loc.key(path),
            path: path.to_string(),
            entry: entry.to_owned(),
            kind,
        }
    }

    fn build(&self, raw: &RawPolicy) -> Res<Policy> {
        let root = Path::default();
        // groups: users only.
        let mut groups = BTreeMap::new();
        for (name, members) in self.groups {
            let p = root.key("groups").key(name);
            if !matches!(parse_alias(name), Ok(Alias::Group(_))) {
                return Err(self.key_err(&p, name, Invalid::KeyPrefix("group:")));
            }
            for (i, m) in members.iter().enumerate() {
                match parse_alias(m) {
                    Ok(Alias::User(u)) => u,
                    Ok(Alias::Group(_)) => {
                        return Err(self.err(&p.index(i), m, Invalid::NestedGroup))
                    }
                    _ => return Err(self.err(&p.index(i), m, Invalid::GroupMember)),
                };
            }
            groups.insert(name.clone(), members.clone());
        }
        // hosts.
        for (name, value) in self.hosts {
            let p = root.key("hosts").key(name);
            if !matches!(parse_alias(name), Ok(Alias::Host(_))) {
                return Err(self.key_err(&p, name, Invalid::HostName));
            }
            parse_prefix(value).map_err(|_| self.err(&p, value, Invalid::HostValue))?;
        }
        // tagOwners.
        let mut tag_owners = BTreeMap::new();
        for (tag, owners) in self.tag_owners {
            let p = root.key("tagOwners").key(tag);
            if !matches!(parse_alias(tag), Ok(Alias::Tag(_))) {
                return Err(self.key_err(&p, tag, Invalid::KeyPrefix("tag:")));
            }
            let mut list = Vec::new();
            for (i, o) in owners.iter().enumerate() {
                let pi = p.index(i);
                let a = self.alias(&pi, o)?;
                if !matches!(
                    a,
                    Alias::User(_) | Alias::Group(_) | Alias::Tag(_) | Alias::Member
                ) {
                    return Err(self.err(&pi, o, Invalid::TagOwner));
                }
                list.push(a);
            }
            tag_owners.insert(tag.clone(), list);
        }
        // grants: refused unless empty (see the module doc).
        let grants_present = match &raw.grants {
            None => false,
            Some(Value::Array(g)) if g.is_empty() => true,
            Some(g) => {
                return Err(self.err(
                    &root.key("grants"),
                    &g.to_string().chars().take(60).collect::<String>(),
                    Invalid::Placement(
                        "grants are not supported by weft yet; write these rules as acls",
                    ),
                ))
            }
        };
        // acls.
        let acls = match &raw.acls {
            None if grants_present => Some(Vec::new()),
            None => None,
            Some(None) => {
                return Err(self.err(
                    &root.key("acls"),
                    "null",
                    Invalid::Placement("acls must be a list (omit the key to allow everything)"),
                ))
            }
            Some(Some(list)) => Some(
                list.iter()
                    .enumerate()
                    .map(|(i, a)| self.acl(&root.key("acls").index(i), a))
                    .collect::<Res<Vec<_>>>()?,
            ),
        };
        // autoApprovers.
        let ap = root.key("autoApprovers");
        let mut auto_routes = Vec::new();
        for (route, who) in &raw.auto_approvers.routes {
            let p = ap.key("routes").key(route);
            let net = parse_prefix(route).map_err(|_| self.key_err(&p, route, Invalid::Route))?;
            auto_routes.push((net, self.approvers(&p, who)?));
        }
        let auto_exit = self.approvers(&ap.key("exitNode"), &raw.auto_approvers.exit_node)?;
        // tests.
        let tests = raw
            .tests
            .iter()
            .enumerate()
            .map(|(i, t)| self.test(&root.key("tests").index(i), t))
            .collect::<Res<Vec<_>>>()?;
        let ignored = [
            // Only an empty list gets this far (see above).
            ("grants", raw.grants.is_some()),
            ("ssh", raw.ssh.is_some()),
            ("sshTests", raw.ssh_tests.is_some()),
            ("nodeAttrs", raw.node_attrs.is_some()),
            ("postures", raw.postures.is_some()),
            ("defaultSrcPosture", raw.default_src_posture.is_some()),
            ("ipsets", raw.ipsets.is_some()),
            ("randomizeClientPort", raw.randomize_client_port.is_some()),
            ("derpMap", raw.derp_map.is_some()),
            ("disableIPv4", raw.disable_ipv4.is_some()),
            ("OneCGNATRoute", raw.one_cgnat_route.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, present)| present.then_some(k))
        .collect();
        Ok(Policy {
            groups,
            tag_owners,
            acls,
            auto_routes,
            auto_exit,
            tests,
            ignored,
        })
    }

    /// Parses an alias and checks that groups, tags and hosts are defined; a host becomes
    /// its prefix.
    fn alias(&self, path: &Path, s: &str) -> Res<Alias> {
        let a = parse_alias(s).map_err(|k| self.err(path, s, k))?;
        self.defined(path, s, a)
    }

    fn defined(&self, path: &Path, s: &str, a: Alias) -> Res<Alias> {
        match a {
            Alias::Group(ref g) if !self.groups.contains_key(g) => {
                Err(self.err(path, s, Invalid::UndefinedGroup))
            }
            Alias::Tag(ref t) if !self.tag_owners.contains_key(t) => {
                Err(self.err(path, s, Invalid::UndefinedTag))
            }
            Alias::Host(ref h) => match self.hosts.get(h).map(|v| parse_prefix(v)) {
                Some(Ok(net)) => Ok(Alias::Prefix(net)),
                _ => Err(self.err(path, s, Invalid::UndefinedHost)),
            },
            a => Ok(a),
        }
    }

    fn destination(&self, path: &Path, s: &str) -> Res<Destination> {
        let (alias, ports) = parse_destination(s).map_err(|k| self.err(path, s, k))?;
        let alias = self.defined(path, s, alias)?;
        Ok(Destination { alias, ports })
    }

    fn proto(&self, path: &Path, p: Option<&StrOrNum>) -> Res<Option<u8>> {
        p.map(|p| {
            let t = p.text();
            parse_proto(&t).map_err(|k| self.err(path, &t, k))
        })
        .transpose()
    }

    fn acl(&self, path: &Path, a: &RawAcl) -> Res<Acl> {
        if a.action != "accept" {
            return Err(self.err(&path.key("action"), &a.action, Invalid::Action));
        }
        let mut srcs = Vec::new();
        for (i, s) in a.src.iter().enumerate() {
            let p = path.key("src").index(i);
            let alias = self.alias(&p, s)?;
            match alias {
                Alias::SelfDevices => {
                    return Err(self.err(
                        &p,
                        s,
                        Invalid::Placement("autogroup:self is a destination only"),
                    ))
                }
                Alias::Internet => {
                    return Err(self.err(
                        &p,
                        s,
                        Invalid::Placement("autogroup:internet is a destination only"),
                    ))
                }
                _ => srcs.push(alias),
            }
        }
        let proto = self.proto(&path.key("proto"), a.proto.as_ref())?;
        let mut dsts = Vec::new();
        for (i, d) in a.dst.iter().enumerate() {
            let p = path.key("dst").index(i);
            let dst = self.destination(&p, d)?;
            if let Some(pr) = proto {
                if !proto_has_ports(pr) && dst.ports != [PortRange::ALL] {
                    return Err(self.err(&p, d, Invalid::ProtoPorts));
                }
            }
            if dst.alias == Alias::SelfDevices {
                let bad = srcs.iter().position(|s| {
                    !matches!(
                        s,
                        Alias::User(_) | Alias::Group(_) | Alias::Member | Alias::Any
                    )
                });
                if let Some(j) = bad {
                    let sp = path.key("src").index(j);
                    let text = a.src.get(j).map_or("", String::as_str);
                    return Err(self.err(&sp, text, Invalid::SelfWithSource));
                }
            }
            dsts.push(dst);
        }
        Ok(Acl { srcs, dsts, proto })
    }

    fn approvers(&self, path: &Path, who: &[String]) -> Res<Vec<Alias>> {
        who.iter()
            .enumerate()
            .map(|(i, w)| {
                let p = path.index(i);
                let a = self.alias(&p, w)?;
                match a {
                    Alias::User(_) | Alias::Group(_) | Alias::Tag(_) | Alias::Member | Alias::Tagged => Ok(a),
                    _ => Err(self.err(&p, w, Invalid::Placement("approvers are users, groups, tags, autogroup:member or autogroup:tagged"))),
                }
            })
            .collect()
    }

    fn test(&self, path: &Path, t: &RawTest) -> Res<PolicyTest> {
        let sp = path.key("src");
        let src = self.alias(&sp, &t.src)?;
        if matches!(src, Alias::SelfDevices | Alias::Internet) {
            return Err(self.err(
                &sp,
                &t.src,
                Invalid::Placement(
                    "a test source must be a user, group, tag, host, IP or autogroup:member/tagged",
                ),
            ));
        }
        let proto = self.proto(&path.key("proto"), t.proto.as_ref())?;
        if t.accept.is_empty() && t.deny.is_empty() {
            return Err(self.err(
                path,
                &t.src,
                Invalid::Placement("a test needs \"accept\" or \"deny\" entries"),
            ));
        }
        let list = |key: &str, v: &[String]| -> Res<Vec<(String, Destination)>> {
            v.iter()
                .enumerate()
                .map(|(i, d)| {
                    let p = path.key(key).index(i);
                    let dst = self.destination(&p, d)?;
                    if matches!(dst.alias, Alias::SelfDevices | Alias::Internet) {
                        return Err(self.err(
                            &p,
                            d,
                            Invalid::Placement(
                                "a test destination names devices or addresses, not autogroup:self or autogroup:internet",
                            ),
                        ));
                    }
                    let cidr = matches!(dst.alias, Alias::Prefix(n) if n.prefix_len() != if n.is_v6() { 128 } else { 32 });
                    if cidr || d.contains('/') {
                        return Err(self.err(
                            &p,
                            d,
                            Invalid::Placement("a test destination is one address, not a CIDR"),
                        ));
                    }
                    if !matches!(dst.ports.as_slice(), [r] if r.first == r.last) {
                        return Err(self.err(&p, d, Invalid::Ports("a test names exactly one port")));
                    }
                    Ok((d.clone(), dst))
                })
                .collect()
        };
        Ok(PolicyTest {
            src_text: t.src.clone(),
            src,
            proto,
            accept: list("accept", &t.accept)?,
            deny: list("deny", &t.deny)?,
            at: self.loc.value(path),
        })
    }
}
