//! The wire `FilterRule` (as a netmap carries it) and its typed, compiled form.
//!
//! Parsing follows the official client (`MatchesFromFilterRules`):
//! * a rule carrying the legacy `SrcBits`, or a destination carrying `Bits`, makes the whole
//!   list unusable ([`RuleError::LegacyBits`]): no rule is returned;
//! * an invalid `SrcIPs` or `DstPorts[].IP` entry (bad address, unmasked CIDR, backwards or
//!   mixed-family range, `cap:` in a destination) is skipped, the rest of its rule is kept, and
//!   the entry is reported in [`Compiled::skipped`] for the caller to log;
//! * `IPProto` values outside 0–255 are dropped; an absent or empty list means TCP, UDP,
//!   ICMPv4 and ICMPv6, but a list whose every value was dropped matches no protocol;
//! * `CapGrant` is not a packet rule and is ignored, as are unknown fields.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

/// IP protocol numbers the filter treats specially.
pub mod proto {
    /// ICMPv4.
    pub const ICMPV4: u8 = 1;
    /// IGMP.
    pub const IGMP: u8 = 2;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 Fragment extension header.
    pub const IPV6_FRAGMENT: u8 = 44;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// TSMP, the Tailscale message protocol (IANA "any private encryption scheme").
    pub const TSMP: u8 = 99;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// One `FilterRule` of a netmap's `PacketFilter`, as it is on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct FilterRule {
    /// Source sets: `"*"`, an address, a masked CIDR, an inclusive range `a-b`, or `cap:…`.
    #[serde(rename = "SrcIPs", default)]
    pub src_ips: Vec<String>,
    /// The legacy source prefix lengths; a non-empty list makes the rule list unusable.
    #[serde(rename = "SrcBits", default, skip_serializing_if = "Option::is_none")]
    pub src_bits: Option<Vec<IgnoredAnyEq>>,
    /// Destinations with their port ranges.
    #[serde(rename = "DstPorts", default)]
    pub dst_ports: Vec<NetPortRange>,
    /// IANA protocol numbers; empty means TCP, UDP, ICMPv4, ICMPv6.
    #[serde(rename = "IPProto", default, skip_serializing_if = "Vec::is_empty")]
    pub ip_proto: Vec<i64>,
}

/// A value whose content is ignored (the legacy `Bits` fields); only its presence matters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IgnoredAnyEq;

/// Written as `null`: weft never emits the legacy fields (they are skipped when absent), so this
/// only matters for a rule that was read with them and is written back unchanged.
impl Serialize for IgnoredAnyEq {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for IgnoredAnyEq {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d).map(|_| Self)
    }
}

/// One `DstPorts` entry on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct NetPortRange {
    /// The destination set, in the `SrcIPs` syntax (`cap:` not allowed).
    #[serde(rename = "IP", default)]
    pub ip: String,
    /// The legacy prefix length; its presence makes the rule list unusable.
    #[serde(rename = "Bits", default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<IgnoredAnyEq>,
    /// The inclusive port range.
    #[serde(rename = "Ports", default)]
    pub ports: PortRange,
}

/// An inclusive port range; `{0, 65535}` is every port.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize,
)]
pub struct PortRange {
    /// First port in the range.
    #[serde(rename = "First", default)]
    pub first: u16,
    /// Last port in the range (inclusive).
    #[serde(rename = "Last", default)]
    pub last: u16,
}

impl PortRange {
    /// Every port, 0–65535.
    pub const ALL: Self = Self {
        first: 0,
        last: u16::MAX,
    };

    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// A masked IP prefix (address plus prefix length, host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpNet {
    addr: IpAddr,
    len: u8,
}

impl IpNet {
    /// A prefix; `None` if `len` exceeds the address width or host bits are set.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        let width = width(&addr);
        if len > width {
            return None;
        }
        let net = Self { addr, len };
        (net.bits() & !mask(width, len) == 0).then_some(net)
    }

    /// The single-address prefix of `addr`.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            len: width(&addr),
        }
    }

    /// All of IPv4 (`0.0.0.0/0`).
    pub const ANY_V4: Self = Self {
        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        len: 0,
    };
    /// All of IPv6 (`::/0`).
    pub const ANY_V6: Self = Self {
        addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        len: 0,
    };

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether this is an IPv6 prefix.
    pub fn is_v6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// Whether `addr` is inside the prefix (an IPv4 address is never inside an IPv6 prefix,
    /// IPv4-mapped or not, and the reverse).
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(_), IpAddr::V4(a)) => self.contains_bits(false, u128::from(u32::from(a))),
            (IpAddr::V6(_), IpAddr::V6(a)) => self.contains_bits(true, u128::from(a)),
            _ => false,
        }
    }

    /// The address as a number (IPv4 in the low 32 bits).
    pub(crate) fn bits(&self) -> u128 {
        addr_bits(self.addr)
    }

    /// Whether the address `a` of family `v6` (as [`bits`](Self::bits)) is inside.
    pub(crate) fn contains_bits(&self, v6: bool, a: u128) -> bool {
        v6 == self.is_v6() && (a & mask(width(&self.addr), self.len)) == self.bits()
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn width(a: &IpAddr) -> u8 {
    if a.is_ipv4() {
        32
    } else {
        128
    }
}

pub(crate) fn addr_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The mask of the first `len` bits of a `width`-bit address, in the low `width` bits.
fn mask(width: u8, len: u8) -> u128 {
    let all: u128 = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    all & !all.checked_shr(u32::from(len)).unwrap_or(0)
}

fn from_bits(v6: bool, a: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::from(a as u32))
    }
}

/// A set of IP protocol numbers (a 256-bit map).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ProtoSet([u64; 4]);

impl ProtoSet {
    /// The set an empty `IPProto` stands for: TCP, UDP, ICMPv4, ICMPv6.
    pub fn default_protocols() -> Self {
        let mut s = Self::default();
        for p in [proto::TCP, proto::UDP, proto::ICMPV4, proto::ICMPV6] {
            s.insert(p);
        }
        s
    }

    /// Adds protocol `p`.
    pub fn insert(&mut self, p: u8) {
        if let Some(w) = self.0.get_mut(usize::from(p >> 6)) {
            *w |= 1 << (p & 63);
        }
    }

    /// Whether protocol `p` is in the set.
    pub fn contains(&self, p: u8) -> bool {
        self.0
            .get(usize::from(p >> 6))
            .is_some_and(|w| w & (1 << (p & 63)) != 0)
    }

    /// The set as four 64-bit words (protocol `p` is bit `p % 64` of word `p / 64`), the
    /// layout an eBPF map value can take as is.
    pub fn words(&self) -> [u64; 4] {
        self.0
    }
}

/// One destination of a compiled rule: a prefix and an inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dst {
    /// The destination prefix.
    pub net: IpNet,
    /// The destination ports.
    pub ports: PortRange,
}

/// A compiled rule: ranges already split into prefixes, `*` into the two family-wide ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The protocols it applies to.
    pub protocols: ProtoSet,
    /// Source prefixes.
    pub srcs: Vec<IpNet>,
    /// `cap:` sources (matched only through a peer-capability lookup, which this crate does
    /// not have yet: they never match).
    pub src_caps: Vec<String>,
    /// Destinations.
    pub dsts: Vec<Dst>,
}

/// The rules of a rule list, and the entries that were skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    /// The rules, in order.
    pub rules: Vec<Rule>,
    /// The entries left out of their rule, for the caller to log.
    pub skipped: Vec<EntryError>,
}

/// Why a whole rule list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// Rule `rule` carries the legacy `SrcBits` or a `DstPorts[].Bits`, which the official
    /// client refuses outright (the control server speaks a format this client predates).
    #[error("rule {rule}: legacy SrcBits/Bits field; the control plane should not send it")]
    LegacyBits {
        /// Index of the rule in the list.
        rule: usize,
    },
}

/// One `SrcIPs` or `DstPorts[].IP` entry that was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule}: {field} entry {entry:?}: {kind}")]
pub struct EntryError {
    /// Index of the rule in the list.
    pub rule: usize,
    /// `"SrcIPs"` or `"DstPorts"`.
    pub field: &'static str,
    /// The entry as given.
    pub entry: String,
    /// What is wrong with it.
    #[source]
    pub kind: IpSetError,
}

/// What is wrong with one IP-set entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpSetError {
    /// Not an address, a prefix, a range, `*` or `cap:…`.
    #[error("not an IP address, prefix or range")]
    Syntax,
    /// A prefix with host bits set (`10.0.0.1/8`), or a length beyond the address width.
    #[error("prefix has host bits set or a bad length")]
    Unmasked,
    /// A range whose ends are of different families or in the wrong order.
    #[error("invalid range")]
    Range,
    /// A `cap:` entry where only addresses may stand (`DstPorts`).
    #[error("capability not allowed here")]
    CapabilityInDestination,
}

/// A parsed IP-set entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpSet {
    /// A list of prefixes (`*` is `0.0.0.0/0` and `::/0`; a range is its minimal cover).
    Prefixes(Vec<IpNet>),
    /// `cap:<name>`.
    Capability(String),
}

/// Parses one entry of `SrcIPs` / `DstPorts[].IP`.
///
/// # Errors
/// [`IpSetError`] when the entry is none of the accepted forms.
pub fn parse_ip_set(s: &str) -> Result<IpSet, IpSetError> {
    if s == "*" {
        return Ok(IpSet::Prefixes(vec![IpNet::ANY_V4, IpNet::ANY_V6]));
    }
    if let Some(cap) = s.strip_prefix("cap:") {
        return Ok(IpSet::Capability(cap.to_owned()));
    }
    if let Some((a, len)) = s.split_once('/') {
        // Like Go's netip.ParsePrefix: no zone, decimal length without sign or leading zero.
        if a.contains('%')
            || len.is_empty()
            || len.len() > 3
            || !len.bytes().all(|b| b.is_ascii_digit())
            || (len.len() > 1 && len.starts_with('0'))
        {
            return Err(IpSetError::Syntax);
        }
        let addr = parse_addr(a)?;
        let len: u8 = len.parse().map_err(|_| IpSetError::Unmasked)?;
        return IpNet::new(addr, len)
            .map(|n| IpSet::Prefixes(vec![n]))
            .ok_or(IpSetError::Unmasked);
    }
    if s.matches('-').count() == 1 {
        let (a, b) = s.split_once('-').ok_or(IpSetError::Syntax)?;
        let (a, b) = (parse_addr(a)?, parse_addr(b)?);
        if a.is_ipv4() != b.is_ipv4() || addr_bits(a) > addr_bits(b) {
            return Err(IpSetError::Range);
        }
        return Ok(IpSet::Prefixes(range_prefixes(
            a.is_ipv6(),
            addr_bits(a),
            addr_bits(b),
        )));
    }
    Ok(IpSet::Prefixes(vec![IpNet::host(parse_addr(s)?)]))
}

/// Parses an address; an IPv6 zone (`%eth0`) is accepted and dropped, as Go's netip does
/// when it turns an address into a prefix.
fn parse_addr(s: &str) -> Result<IpAddr, IpSetError> {
    if let Some((a, zone)) = s.split_once('%') {
        if zone.is_empty() {
            return Err(IpSetError::Syntax);
        }
        return a
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| IpSetError::Syntax);
    }
    s.parse().map_err(|_| IpSetError::Syntax)
}

/// The minimal list of prefixes covering `lo..=hi` (`lo <= hi`), in address order.
fn range_prefixes(v6: bool, mut lo: u128, hi: u128) -> Vec<IpNet> {
    let w: u8 = if v6 { 128 } else { 32 };
    let mut out = Vec::new();
    loop {
        // Largest block starting at `lo` (alignment) that does not pass `hi`.
        let mut host_bits = lo.trailing_zeros().min(u32::from(w)) as u8;
        while host_bits > 0 {
            let size_minus_1 = if host_bits >= 128 {
                u128::MAX
            } else {
                (1u128 << host_bits) - 1
            };
            if lo.checked_add(size_minus_1).is_some_and(|end| end <= hi) {
                break;
            }
            host_bits -= 1;
        }
        out.push(IpNet {
            addr: from_bits(v6, lo),
            len: w - host_bits,
        });
        let size_minus_1 = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let end = lo.saturating_add(size_minus_1);
        if end >= hi {
            return out;
        }
        lo = end + 1;
    }
}

/// Turns the wire rules into [`Rule`]s, as the official client does (see the module doc).
///
/// # Errors
/// [`RuleError::LegacyBits`] if any rule carries `SrcBits` or `Bits`.
pub fn compile(rules: &[FilterRule]) -> Result<Compiled, RuleError> {
    let mut out = Compiled::default();
    for (i, r) in rules.iter().enumerate() {
        if r.src_bits.as_ref().is_some_and(|b| !b.is_empty())
            || r.dst_ports.iter().any(|d| d.bits.is_some())
        {
            return Err(RuleError::LegacyBits { rule: i });
        }
        let protocols = if r.ip_proto.is_empty() {
            ProtoSet::default_protocols()
        } else {
            let mut s = ProtoSet::default();
            for p in &r.ip_proto {
                if let Ok(p) = u8::try_from(*p) {
                    s.insert(p);
                }
            }
            s
        };
        let mut rule = Rule {
            protocols,
            srcs: Vec::new(),
            src_caps: Vec::new(),
            dsts: Vec::new(),
        };
        let skip = |field, entry: &str, kind| EntryError {
            rule: i,
            field,
            entry: entry.to_owned(),
            kind,
        };
        for s in &r.src_ips {
            match parse_ip_set(s) {
                Ok(IpSet::Prefixes(p)) => rule.srcs.extend(p),
                Ok(IpSet::Capability(c)) => rule.src_caps.push(c),
                Err(e) => out.skipped.push(skip("SrcIPs", s, e)),
            }
        }
        for d in &r.dst_ports {
            match parse_ip_set(&d.ip) {
                Ok(IpSet::Prefixes(p)) => rule.dsts.extend(p.into_iter().map(|net| Dst {
                    net,
                    ports: d.ports,
                })),
                Ok(IpSet::Capability(_)) => {
                    out.skipped
                        .push(skip("DstPorts", &d.ip, IpSetError::CapabilityInDestination))
                }
                Err(e) => out.skipped.push(skip("DstPorts", &d.ip, e)),
            }
        }
        out.rules.push(rule);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &str) -> Vec<String> {
        match parse_ip_set(s).unwrap() {
            IpSet::Prefixes(p) => p.iter().map(ToString::to_string).collect(),
            IpSet::Capability(c) => vec![format!("cap:{c}")],
        }
    }

    #[test]
    fn ip_set_forms() {
        assert_eq!(nets("*"), ["0.0.0.0/0", "::/0"]);
        assert_eq!(nets("100.64.0.1"), ["100.64.0.1/32"]);
        assert_eq!(nets("10.0.0.0/8"), ["10.0.0.0/8"]);
        assert_eq!(nets("fd7a:115c:a1e0::/48"), ["fd7a:115c:a1e0::/48"]);
        assert_eq!(nets("fe80::1%eth0"), ["fe80::1/128"]);
        assert_eq!(nets("cap:foo"), ["cap:foo"]);
        assert_eq!(nets("1.2.3.4-1.2.3.9"), ["1.2.3.4/30", "1.2.3.8/31"]);
        assert_eq!(nets("0.0.0.0-255.255.255.255"), ["0.0.0.0/0"]);
        assert_eq!(nets("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), ["::/0"]);
        assert_eq!(nets("10.0.0.5-10.0.0.5"), ["10.0.0.5/32"]);
        assert_eq!(
            nets("10.0.0.255-10.0.1.0"),
            ["10.0.0.255/32", "10.0.1.0/32"]
        );
    }

    #[test]
    fn ip_set_errors() {
        for (s, e) in [
            ("10.0.0.1/8", IpSetError::Unmasked),
            ("10.0.0.0/33", IpSetError::Unmasked),
            ("10.0.0.0/", IpSetError::Syntax),
            ("10.0.0.0/+8", IpSetError::Syntax),
            ("10.0.0.0/08", IpSetError::Syntax),
            ("fe80::/10%x", IpSetError::Syntax),
            ("1.2.3.9-1.2.3.4", IpSetError::Range),
            ("1.2.3.4-::1", IpSetError::Range),
            ("1.2.3.4-1.2.3.5-1.2.3.6", IpSetError::Syntax),
            ("host", IpSetError::Syntax),
            ("", IpSetError::Syntax),
            ("010.0.0.1", IpSetError::Syntax),
        ] {
            assert_eq!(parse_ip_set(s), Err(e), "{s}");
        }
    }

    #[test]
    fn range_cover_is_exact_and_minimal() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let a = (x & 0xffff) as u128;
            let b = ((x >> 16) & 0xffff) as u128;
            let (lo, hi) = (a.min(b), a.max(b));
            let p = range_prefixes(false, lo, hi);
            let mut next = lo;
            for n in &p {
                assert_eq!(n.bits(), next);
                next = n.bits() + (1u128 << (32 - n.prefix_len()));
            }
            assert_eq!(next, hi + 1);
            // Minimal: no two neighbours could merge into one aligned block.
            for w in p.windows(2) {
                let merged = IpNet::new(w[0].addr(), w[0].prefix_len() - 1);
                assert!(
                    !(w[0].prefix_len() == w[1].prefix_len() && merged.is_some()),
                    "{p:?}"
                );
            }
        }
    }

    #[test]
    fn compile_follows_official_client() {
        let rules: Vec<FilterRule> = serde_json::from_str(
            r#"[
            {"SrcIPs":["100.64.0.1","bogus","cap:x"],"DstPorts":[{"IP":"100.64.0.2","Ports":{"First":22,"Last":22}},{"IP":"cap:y","Ports":{"First":0,"Last":1}}],"IPProto":[6,-1,300]},
            {"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}],"CapGrant":[{"Dsts":["1.2.3.4/32"]}],"Other":1},
            {"SrcIPs":["*"],"DstPorts":[],"IPProto":[300]}
        ]"#,
        )
        .unwrap();
        let c = compile(&rules).unwrap();
        assert_eq!(c.rules.len(), 3);
        assert_eq!(c.skipped.len(), 2);
        assert_eq!(c.skipped[0].kind, IpSetError::Syntax);
        assert_eq!(c.skipped[1].kind, IpSetError::CapabilityInDestination);
        assert!(c.rules[0].protocols.contains(6));
        assert!(!c.rules[0].protocols.contains(17));
        assert_eq!(c.rules[0].src_caps, ["x"]);
        assert_eq!(c.rules[1].protocols, ProtoSet::default_protocols());
        assert_eq!(c.rules[2].protocols, ProtoSet::default());

        let legacy: Vec<FilterRule> =
            serde_json::from_str(r#"[{"SrcIPs":["*"],"SrcBits":[32]}]"#).unwrap();
        assert_eq!(compile(&legacy), Err(RuleError::LegacyBits { rule: 0 }));
        let legacy: Vec<FilterRule> =
            serde_json::from_str(r#"[{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Bits":8}]}]"#).unwrap();
        assert_eq!(compile(&legacy), Err(RuleError::LegacyBits { rule: 0 }));
        let empty_bits: Vec<FilterRule> = serde_json::from_str(
            r#"[{"SrcIPs":["*"],"SrcBits":[],"DstPorts":[{"IP":"*","Bits":null}]}]"#,
        )
        .unwrap();
        assert!(compile(&empty_bits).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn parse_ip_set_never_panics(s in "\\PC{0,40}") {
            let _ = parse_ip_set(&s);
        }

        #[test]
        fn range_entries_cover_exactly(a in proptest::prelude::any::<u128>(), b in proptest::prelude::any::<u128>(), probe in proptest::prelude::any::<u128>()) {
            let (lo, hi) = (a.min(b), a.max(b));
            let text = format!("{}-{}", Ipv6Addr::from(lo), Ipv6Addr::from(hi));
            let IpSet::Prefixes(nets) = parse_ip_set(&text).unwrap() else { panic!("{text}") };
            proptest::prop_assert!(nets.len() <= 2 * 128);
            for x in [lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1), probe] {
                let inside = lo <= x && x <= hi;
                let covered = nets.iter().any(|n| n.contains(IpAddr::V6(Ipv6Addr::from(x))));
                proptest::prop_assert_eq!(inside, covered, "{} in {}", Ipv6Addr::from(x), text);
            }
        }
    }
}
