//! The small grammars inside policy strings: aliases, `alias:ports` destinations, port lists
//! and protocols.
//!
//! The forms follow Tailscale's policy syntax (`../shared/docs/tailscale-protocol.md` §9.3,
//! checked against Headscale's policy v2 parser and captures of Tailscale SaaS):
//! * the ports of a destination follow the **last** `:`, so `fd7a:115c:a1e0::1:22` is the
//!   address `fd7a:115c:a1e0::1` with port 22; `[fd7a::1]:22` and `[fd7a::]/48:22` are the
//!   bracketed forms (the bracket must hold an IPv6 address);
//! * ports are `*`, `22`, `80,443`, `1000-2000` or lists of those; a single port is 1–65535, a
//!   range may start at 0 and must not be inverted;
//! * a protocol is a name (`tcp`, `udp`, `icmp` = 1 only, `ipv6-icmp` = 58, `sctp`, …) or a
//!   number 1–255 without leading zero; `*` is not a protocol.
//!
//! Everything here is a total function over `&str`: any input gives a value or an error.

use std::net::IpAddr;

use weft_filter::rules::{parse_ip_set, IpSet};
use weft_filter::{IpNet, PortRange};

use crate::error::Invalid;

/// One policy alias, syntactically classified (whether a group, tag or host is defined is
/// checked by the validator, which knows the policy's tables).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Alias {
    /// `*`: every node (and, as a source, every approved subnet route).
    Any,
    /// A user login, `alice@example.com` (or `alice@`: the user named exactly `alice`).
    User(String),
    /// `group:name`.
    Group(String),
    /// `tag:name`.
    Tag(String),
    /// A name from `hosts`.
    Host(String),
    /// An IP address or a masked CIDR.
    Prefix(IpNet),
    /// `autogroup:member`: devices owned by users (untagged).
    Member,
    /// `autogroup:tagged`: devices with at least one tag.
    Tagged,
    /// `autogroup:self`: the destination's own user's untagged devices (destination only).
    SelfDevices,
    /// `autogroup:internet`: the public internet through exit nodes (destination only).
    Internet,
}

/// Parses an alias (without ports).
///
/// # Errors
/// [`Invalid::Alias`] for an empty string, an unknown `autogroup:`, a bad `group:`/`tag:`
/// name or an unmasked CIDR.
pub fn parse_alias(s: &str) -> Result<Alias, Invalid> {
    if s == "*" {
        return Ok(Alias::Any);
    }
    if let Some(a) = s.strip_prefix("autogroup:") {
        return match a {
            "member" => Ok(Alias::Member),
            "tagged" => Ok(Alias::Tagged),
            "self" => Ok(Alias::SelfDevices),
            "internet" => Ok(Alias::Internet),
            _ => Err(Invalid::Alias("unknown autogroup")),
        };
    }
    if let Some(g) = s.strip_prefix("group:") {
        return name(g).map(|()| Alias::Group(s.to_owned()));
    }
    if let Some(t) = s.strip_prefix("tag:") {
        if !t.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(Invalid::Alias("tag names start with a letter"));
        }
        return name(t).map(|()| Alias::Tag(s.to_owned()));
    }
    if s.contains('@') {
        if s.starts_with('@') || s.chars().any(|c| c.is_whitespace() || c == ':') {
            return Err(Invalid::Alias("bad user name"));
        }
        return Ok(Alias::User(s.to_owned()));
    }
    // Addresses and prefixes; a name starting with a digit is taken for a bad address.
    if s.contains(':') || s.contains('/') || s.starts_with(|c: char| c.is_ascii_digit()) {
        return parse_prefix(s).map(Alias::Prefix);
    }
    // Anything else that is a plain name (dots allowed: `db.internal`) names a host.
    name(s).map(|()| Alias::Host(s.to_owned()))
}

/// A group, tag or host name: non-empty, letters, digits, `-`, `_` and `.`.
fn name(s: &str) -> Result<(), Invalid> {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Ok(())
    } else {
        Err(Invalid::Alias(
            "names are letters, digits, '-', '_' and '.'",
        ))
    }
}

/// Parses one IP address or masked CIDR (no ranges, no `*`).
///
/// # Errors
/// [`Invalid::Alias`] otherwise.
pub fn parse_prefix(s: &str) -> Result<IpNet, Invalid> {
    if s.contains('-') || s == "*" || s.starts_with("cap:") {
        return Err(Invalid::Alias("not an IP address or CIDR"));
    }
    match parse_ip_set(s) {
        Ok(IpSet::Prefixes(p)) => match p.as_slice() {
            [one] => Ok(*one),
            _ => Err(Invalid::Alias("not an IP address or CIDR")),
        },
        Ok(IpSet::Capability(_)) => Err(Invalid::Alias("not an IP address or CIDR")),
        Err(weft_filter::IpSetError::Unmasked) => {
            Err(Invalid::Alias("CIDR has host bits set or a bad length"))
        }
        Err(_) => Err(Invalid::Alias("not an IP address or CIDR")),
    }
}

/// Writes a prefix as the wire does: a single address without its length.
pub fn prefix_text(n: &IpNet) -> String {
    if n.prefix_len() == if n.is_v6() { 128 } else { 32 } {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

/// Parses a destination `alias:ports` into its alias and port ranges. The ports follow the
/// last `:`; an IPv6 address may be bracketed (`[addr]:ports`, `[addr]/len:ports`).
///
/// # Errors
/// [`Invalid::Ports`] without a `:` or with a bad port list; as [`parse_alias`] for the alias;
/// [`Invalid::Alias`] for brackets that do not hold exactly an IPv6 address.
pub fn parse_destination(s: &str) -> Result<(Alias, Vec<PortRange>), Invalid> {
    let (alias, ports) = s
        .rsplit_once(':')
        .ok_or(Invalid::Ports("missing ':ports'"))?;
    let ports = parse_ports(ports)?;
    if let Some(rest) = alias.strip_prefix('[') {
        let (addr, len) = rest
            .split_once(']')
            .ok_or(Invalid::Alias("'[' without ']'"))?;
        if !matches!(addr.parse::<IpAddr>(), Ok(IpAddr::V6(_))) {
            return Err(Invalid::Alias("brackets must hold an IPv6 address"));
        }
        if !(len.is_empty() || len.starts_with('/')) {
            return Err(Invalid::Alias("unexpected text after ']'"));
        }
        return Ok((Alias::Prefix(parse_prefix(&format!("{addr}{len}"))?), ports));
    }
    if alias.is_empty() {
        return Err(Invalid::Alias("empty alias"));
    }
    Ok((parse_alias(alias)?, ports))
}

/// Parses a port list: `*`, or comma-separated ports and `first-last` ranges.
///
/// # Errors
/// [`Invalid::Ports`] for anything else (empty parts, signs, leading `+`, values above
/// 65535, a single port 0, inverted ranges).
pub fn parse_ports(s: &str) -> Result<Vec<PortRange>, Invalid> {
    if s == "*" {
        return Ok(vec![PortRange::ALL]);
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        let range = match part.split_once('-') {
            Some((a, b)) => {
                let (first, last) = (port(a)?, port(b)?);
                if first > last {
                    return Err(Invalid::Ports("inverted range"));
                }
                PortRange { first, last }
            }
            None => {
                let p = port(part)?;
                if p == 0 {
                    return Err(Invalid::Ports("port 0"));
                }
                PortRange { first: p, last: p }
            }
        };
        out.push(range);
    }
    Ok(out)
}

fn port(s: &str) -> Result<u16, Invalid> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Invalid::Ports("not a port number"));
    }
    s.parse().map_err(|_| Invalid::Ports("port above 65535"))
}

/// IANA numbers of the protocol names Tailscale accepts in `proto`.
const PROTO_NAMES: &[(&str, u8)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("ipv4", 4),
    ("ip-in-ip", 4),
    ("tcp", 6),
    ("egp", 8),
    ("igp", 9),
    ("udp", 17),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("ipv6-icmp", 58),
    ("sctp", 132),
    ("fc", 133),
];

/// Parses `proto`: a name from the list above or a number 1–255 without leading zero.
///
/// # Errors
/// [`Invalid::Proto`] otherwise (including `*` and `0`).
pub fn parse_proto(s: &str) -> Result<u8, Invalid> {
    if let Some(&(_, n)) = PROTO_NAMES.iter().find(|(name, _)| *name == s) {
        return Ok(n);
    }
    if s.is_empty() || s.len() > 3 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Invalid::Proto);
    }
    match s.parse::<u8>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(Invalid::Proto),
    }
}

/// Whether a protocol has ports (TCP, UDP, SCTP); the others only take `*`.
pub fn proto_has_ports(p: u8) -> bool {
    matches!(p, 6 | 17 | 132)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        parse_prefix(s).unwrap()
    }

    #[test]
    fn alias_kinds() {
        for (s, want) in [
            ("*", Alias::Any),
            ("alice@example.com", Alias::User("alice@example.com".into())),
            ("alice@", Alias::User("alice@".into())),
            ("group:eng", Alias::Group("group:eng".into())),
            ("tag:server", Alias::Tag("tag:server".into())),
            ("db", Alias::Host("db".into())),
            ("db.internal", Alias::Host("db.internal".into())),
            ("100.64.0.1", Alias::Prefix(net("100.64.0.1"))),
            ("10.0.0.0/8", Alias::Prefix(net("10.0.0.0/8"))),
            ("fd7a:115c:a1e0::1", Alias::Prefix(net("fd7a:115c:a1e0::1"))),
            ("autogroup:member", Alias::Member),
            ("autogroup:tagged", Alias::Tagged),
            ("autogroup:self", Alias::SelfDevices),
            ("autogroup:internet", Alias::Internet),
        ] {
            assert_eq!(parse_alias(s), Ok(want), "{s}");
        }
        for s in [
            "",
            "autogroup:nonroot",
            "group:",
            "tag:1x",
            "tag:a b",
            "10.0.0.1/8",
            "1.2.3.4-1.2.3.5",
            "@example.com",
            "bad name",
        ] {
            assert!(parse_alias(s).is_err(), "{s}");
        }
    }

    #[test]
    fn port_forms() {
        let r = |a, b| PortRange { first: a, last: b };
        assert_eq!(parse_ports("*"), Ok(vec![PortRange::ALL]));
        assert_eq!(parse_ports("22"), Ok(vec![r(22, 22)]));
        assert_eq!(parse_ports("80,443"), Ok(vec![r(80, 80), r(443, 443)]));
        assert_eq!(parse_ports("1000-2000"), Ok(vec![r(1000, 2000)]));
        assert_eq!(parse_ports("0-65535"), Ok(vec![PortRange::ALL]));
        assert_eq!(
            parse_ports("22,8000-8100"),
            Ok(vec![r(22, 22), r(8000, 8100)])
        );
        for s in [
            "",
            "0",
            "65536",
            "-1",
            "+22",
            "22,",
            "2000-1000",
            "1-2-3",
            "ssh",
            "*,22",
            " 22",
        ] {
            assert!(parse_ports(s).is_err(), "{s}");
        }
    }

    #[test]
    fn destination_forms() {
        let one = |p| vec![PortRange { first: p, last: p }];
        assert_eq!(
            parse_destination("tag:server:22"),
            Ok((Alias::Tag("tag:server".into()), one(22)))
        );
        assert_eq!(
            parse_destination("alice@example.com:*"),
            Ok((
                Alias::User("alice@example.com".into()),
                vec![PortRange::ALL]
            ))
        );
        assert_eq!(
            parse_destination("fd7a:115c:a1e0::1:22"),
            Ok((Alias::Prefix(net("fd7a:115c:a1e0::1")), one(22)))
        );
        assert_eq!(
            parse_destination("[fd7a:115c:a1e0::1]:22"),
            Ok((Alias::Prefix(net("fd7a:115c:a1e0::1")), one(22)))
        );
        assert_eq!(
            parse_destination("[fd7a:115c:a1e0::]/48:443"),
            Ok((Alias::Prefix(net("fd7a:115c:a1e0::/48")), one(443)))
        );
        assert_eq!(
            parse_destination("*:*"),
            Ok((Alias::Any, vec![PortRange::ALL]))
        );
        for s in [
            "tag:server",
            "[100.64.0.1]:22",
            "[fd7a::1:22",
            "[fd7a::1]x:22",
            ":22",
            "autogroup:self",
        ] {
            assert!(parse_destination(s).is_err(), "{s}");
        }
    }

    #[test]
    fn protocols() {
        assert_eq!(parse_proto("tcp"), Ok(6));
        assert_eq!(parse_proto("udp"), Ok(17));
        assert_eq!(parse_proto("icmp"), Ok(1));
        assert_eq!(parse_proto("ipv6-icmp"), Ok(58));
        assert_eq!(parse_proto("sctp"), Ok(132));
        assert_eq!(parse_proto("47"), Ok(47));
        assert_eq!(parse_proto("255"), Ok(255));
        for s in ["*", "0", "256", "017", "TCP", "", "-1", "ping"] {
            assert_eq!(parse_proto(s), Err(Invalid::Proto), "{s}");
        }
        assert!(proto_has_ports(6) && proto_has_ports(17) && proto_has_ports(132));
        assert!(!proto_has_ports(1) && !proto_has_ports(47));
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = parse_alias(&s);
            let _ = parse_destination(&s);
            let _ = parse_ports(&s);
            let _ = parse_proto(&s);
        }

        #[test]
        fn port_ranges_round_trip(a in 0u16.., b in 0u16..) {
            let (lo, hi) = (a.min(b), a.max(b));
            proptest::prop_assert_eq!(
                parse_ports(&format!("{lo}-{hi}")),
                Ok(vec![PortRange { first: lo, last: hi }])
            );
        }
    }
}
