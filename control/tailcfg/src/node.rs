//! `Node` (a tailnet member as the map describes it), users and logins.
//!
//! Omission follows Go's tags field by field: `ID`, `StableID`, `Name`, `User`, `Key` and
//! `Addresses` are always written; everything tagged `omitzero`/`omitempty` is skipped when zero.
//! Two fields need more than a bool: `AllowedIPs` is `omitzero` on a slice, so only nil is left
//! out and an explicit empty list is sent (an [`Option`] here: `None` means "same as Addresses",
//! capability version 112); `Online`, `LastSeen` and `Hostinfo` are absent when unknown.
//! Go writes a nil `Addresses` as `null`; weft writes `[]`, which Go reads the same way.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::dns::DnsResolver;
use crate::hostinfo::Hostinfo;
use crate::keys::{DiscoPublic, MachinePublic, NodePublic};
use crate::time::Time;
use crate::wire::{is_false, is_zero_i64, null_as_default, Base64Bytes, IpPrefix};

/// A node's numeric ID: positive, never reused, kept below 2^53.
pub type NodeId = i64;
/// A user's numeric ID.
pub type UserId = i64;

/// Node capabilities and attributes: capability name → raw JSON values (Go `NodeCapMap`).
pub type CapMap = BTreeMap<String, Vec<serde_json::Value>>;

/// Reads a [`CapMap`], taking Go's `null` (a nil value list, or a nil map) as empty.
///
/// # Errors
/// When the JSON is not an object of arrays.
pub fn cap_map_de<'de, D: serde::Deserializer<'de>>(d: D) -> Result<CapMap, D::Error> {
    let raw: Option<BTreeMap<String, Option<Vec<serde_json::Value>>>> = Option::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

/// One node of the tailnet: the self node or a peer (Go `tailcfg.Node`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    /// Numeric ID (> 0).
    #[serde(rename = "ID", default)]
    pub id: NodeId,
    /// Opaque stable ID.
    #[serde(rename = "StableID", default)]
    pub stable_id: String,
    /// MagicDNS FQDN with a trailing dot (`host.example.com.`).
    #[serde(default)]
    pub name: String,
    /// Owning user; needs a matching `UserProfiles` entry.
    #[serde(default)]
    pub user: UserId,
    /// Sharer of a shared-in node.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub sharer: UserId,
    /// WireGuard public key.
    #[serde(default)]
    pub key: NodePublic,
    /// Key expiry; zero = never.
    #[serde(default, skip_serializing_if = "Time::is_zero")]
    pub key_expiry: Time,
    /// Tailnet-lock signature.
    #[serde(default, skip_serializing_if = "Base64Bytes::is_empty")]
    pub key_signature: Base64Bytes,
    /// Machine key.
    #[serde(default, skip_serializing_if = "MachinePublic::is_zero")]
    pub machine: MachinePublic,
    /// Disco key; zero = the peer cannot do disco.
    #[serde(default, skip_serializing_if = "DiscoPublic::is_zero")]
    pub disco_key: DiscoPublic,
    /// The node's own addresses (/32 and /128).
    #[serde(default, deserialize_with = "null_as_default")]
    pub addresses: Vec<IpPrefix>,
    /// WireGuard allowed IPs; `None` = same as `addresses`.
    #[serde(
        rename = "AllowedIPs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allowed_ips: Option<Vec<IpPrefix>>,
    /// UDP endpoint candidates.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub endpoints: Vec<SocketAddr>,
    /// Legacy home DERP as `"127.3.3.40:<region>"`.
    #[serde(rename = "DERP", default, skip_serializing_if = "String::is_empty")]
    pub legacy_derp: String,
    /// Home DERP region (capability version 111).
    #[serde(rename = "HomeDERP", default, skip_serializing_if = "is_zero_i64")]
    pub home_derp: i64,
    /// The node's Hostinfo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostinfo: Option<Hostinfo>,
    /// Creation time.
    #[serde(default, skip_serializing_if = "Time::is_zero")]
    pub created: Time,
    /// The node's capability version.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub cap: i64,
    /// ACL tags.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tags: Vec<String>,
    /// Subnet routes this node is currently primary for.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub primary_routes: Vec<IpPrefix>,
    /// Last time the node was seen (offline nodes only); absent = unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
    /// Online state; absent = unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    /// False = waiting for admin approval.
    #[serde(default, skip_serializing_if = "is_false")]
    pub machine_authorized: bool,
    /// Deprecated capability list (superseded by `CapMap`).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub capabilities: Vec<String>,
    /// Node attributes and capabilities.
    #[serde(
        default,
        deserialize_with = "cap_map_de",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub cap_map: CapMap,
    /// Only PeerAPI traffic is accepted unsigned.
    #[serde(
        rename = "UnsignedPeerAPIOnly",
        default,
        skip_serializing_if = "is_false"
    )]
    pub unsigned_peer_api_only: bool,
    /// Filled in by clients; servers leave it empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub computed_name: String,
    /// Filled in by clients; servers leave it empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub computed_name_with_host: String,
    /// Audit-log ID.
    #[serde(
        rename = "DataPlaneAuditLogID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub data_plane_audit_log_id: String,
    /// The node's key has expired.
    #[serde(default, skip_serializing_if = "is_false")]
    pub expired: bool,
    /// Masquerade address (IPv4) the self node uses towards this peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_node_v4_masq_addr_for_this_peer: Option<IpAddr>,
    /// Masquerade address (IPv6) the self node uses towards this peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_node_v6_masq_addr_for_this_peer: Option<IpAddr>,
    /// A plain WireGuard peer (no disco, no DERP).
    #[serde(default, skip_serializing_if = "is_false")]
    pub is_wire_guard_only: bool,
    /// The peer may not initiate connections.
    #[serde(default, skip_serializing_if = "is_false")]
    pub is_jailed: bool,
    /// DNS resolvers to use when this node is the exit node.
    #[serde(
        rename = "ExitNodeDNSResolvers",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub exit_node_dns_resolvers: Vec<DnsResolver>,
}

/// A user as `RegisterResponse` carries it (Go `tailcfg.User`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct User {
    /// User ID; the client stores it in its profile.
    #[serde(rename = "ID", default)]
    pub id: UserId,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// Picture URL.
    #[serde(
        rename = "ProfilePicURL",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub profile_pic_url: String,
    /// Creation time.
    #[serde(default, skip_serializing_if = "Time::is_zero")]
    pub created: Time,
}

/// A login identity (Go `tailcfg.Login`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Login {
    /// Login ID (unused by clients).
    #[serde(rename = "ID", default)]
    pub id: i64,
    /// Identity provider (`google`, `github`...).
    #[serde(default)]
    pub provider: String,
    /// Email-ish login name.
    #[serde(default)]
    pub login_name: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// Picture URL.
    #[serde(
        rename = "ProfilePicURL",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub profile_pic_url: String,
}

/// A user as the map describes it (Go `tailcfg.UserProfile`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserProfile {
    /// User ID, matching `Node.User`.
    #[serde(rename = "ID", default)]
    pub id: UserId,
    /// Login name, for display.
    #[serde(default)]
    pub login_name: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// Picture URL.
    #[serde(
        rename = "ProfilePicURL",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub profile_pic_url: String,
    /// Groups the user belongs to.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub groups: Vec<String>,
}
