//! `DNSConfig`: the MagicDNS and resolver settings sent in the map.
//!
//! One Go subtlety matters here: in `Routes`, a suffix mapped to an empty list means "answer
//! locally at 100.100.100.100" (used for extra records and names that must get NXDOMAIN). Go
//! writes that as `[]` or `null`; both are read as an empty list and written as `[]`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::wire::{is_false, null_as_default};

/// DNS configuration for a node (Go `tailcfg.DNSConfig`). Every field is `omitempty`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsConfig {
    /// Global upstream resolvers ("override local DNS").
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resolvers: Vec<DnsResolver>,
    /// Split DNS: suffix → resolvers; an empty list = answer locally.
    #[serde(
        default,
        deserialize_with = "routes_de",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub routes: BTreeMap<String, Vec<DnsResolver>>,
    /// Resolvers used only when split DNS needs a default.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub fallback_resolvers: Vec<DnsResolver>,
    /// Search domains (no trailing dot).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub domains: Vec<String>,
    /// Enables MagicDNS.
    #[serde(default, skip_serializing_if = "is_false")]
    pub proxied: bool,
    /// Deprecated plain nameservers.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub nameservers: Vec<IpAddr>,
    /// Names the control plane helps get certificates for.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cert_domains: Vec<String>,
    /// Extra A/AAAA records served by quad-100.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub extra_records: Vec<DnsRecord>,
    /// Suffixes an exit node's DNS proxy must not answer.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub exit_node_filtered_set: Vec<String>,
}

fn routes_de<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Vec<DnsResolver>>, D::Error> {
    let raw: Option<BTreeMap<String, Option<Vec<DnsResolver>>>> = Option::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

/// One resolver (Go `dnstype.Resolver`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsResolver {
    /// A plain IP (port 53), `IP:port`, or a DoH URL.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub addr: String,
    /// Addresses of a DoH server's host name.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub bootstrap_resolution: Vec<IpAddr>,
    /// Also use this resolver while an exit node is in use (capability version 125).
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_with_exit_node: bool,
}

/// An extra DNS record (Go `tailcfg.DNSRecord`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsRecord {
    /// Fully qualified name.
    #[serde(default)]
    pub name: String,
    /// `""` (inferred), `"A"` or `"AAAA"`.
    #[serde(rename = "Type", default, skip_serializing_if = "String::is_empty")]
    pub record_type: String,
    /// The address.
    #[serde(default)]
    pub value: String,
}
