//! `/machine/map` messages: the client's `MapRequest` and the server's `MapResponse` stream.
//!
//! In a `MapResponse` almost every field is `omitempty` and an absent field means "unchanged"
//! (the client keeps what it has), so the deltas weft streams after the first full map are just
//! the fields that changed. Three fields need more than "empty = absent", and use [`Option`]:
//! `PacketFilter` (`None` = unchanged; `Some(vec![])` writes `[]`, which clients read as "block
//! everything" — Go's own encoder cannot produce it); `PacketFilters` values (`None` writes
//! `null`, deleting that named filter); and `Health` (`Some(vec![])` clears the messages).
//! Maps keyed by node ID are JSON objects with decimal-string keys.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use weft_filter::FilterRule;

use crate::capver::CapabilityVersion;
use crate::derpmap::DerpMap;
use crate::dns::DnsConfig;
use crate::hostinfo::Hostinfo;
use crate::keys::{DiscoPublic, NodePublic};
use crate::node::{cap_map_de, CapMap, Node, NodeId, UserProfile};
use crate::ssh::SshPolicy;
use crate::time::Time;
use crate::wire::{is_false, is_zero_f64, is_zero_i64, null_as_default, Base64Bytes};

/// Body of `POST /machine/map` (Go `tailcfg.MapRequest`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MapRequest {
    /// Client capability version.
    #[serde(default)]
    pub version: CapabilityVersion,
    /// `"zstd"`: official clients always ask for it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub compress: String,
    /// The client wants keep-alive messages.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_alive: bool,
    /// The node's key.
    #[serde(default)]
    pub node_key: NodePublic,
    /// The node's current disco key.
    #[serde(default)]
    pub disco_key: DiscoPublic,
    /// Long poll: many responses.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stream: bool,
    /// The client's Hostinfo (Go writes `null` when unset).
    #[serde(default)]
    pub hostinfo: Option<Hostinfo>,
    /// Session resumption handle.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub map_session_handle: String,
    /// Session resumption sequence number.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub map_session_seq: i64,
    /// UDP endpoints.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub endpoints: Vec<SocketAddr>,
    /// Kind of each endpoint (0 unknown, 1 local, 2 STUN, 3 port-mapped, 4 STUN4LocalPort, 5 explicit).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub endpoint_types: Vec<i64>,
    /// Tailnet-lock head.
    #[serde(rename = "TKAHead", default, skip_serializing_if = "String::is_empty")]
    pub tka_head: String,
    /// Deprecated; always false from capability version 68.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// The client wants no peers (a "lite update").
    #[serde(default, skip_serializing_if = "is_false")]
    pub omit_peers: bool,
    /// Client debug flags.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub debug_flags: Vec<String>,
    /// Tests only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub connection_handle_for_test: String,
}

/// One message of the map stream (Go `tailcfg.MapResponse`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MapResponse {
    /// Session handle for resumption.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub map_session_handle: String,
    /// Sequence number within the session.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub seq: i64,
    /// A keep-alive: the client ignores most other fields.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_alive: bool,
    /// A URL for the client to open.
    #[serde(
        rename = "PopBrowserURL",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub pop_browser_url: String,
    /// The self node; must be in the first message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    /// Relay map.
    #[serde(rename = "DERPMap", default, skip_serializing_if = "Option::is_none")]
    pub derp_map: Option<DerpMap>,
    /// The complete peer list, sorted by ID (full maps).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub peers: Vec<Node>,
    /// Peers added or changed, as full nodes.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub peers_changed: Vec<Node>,
    /// Peers removed.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub peers_removed: Vec<NodeId>,
    /// Small per-peer patches.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub peers_changed_patch: Vec<PeerChange>,
    /// Node ID → true (seen now) / false (clear LastSeen).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub peer_seen_change: BTreeMap<NodeId, bool>,
    /// Node ID → online.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub online_change: BTreeMap<NodeId, bool>,
    /// DNS settings.
    #[serde(rename = "DNSConfig", default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<DnsConfig>,
    /// Tailnet name (display).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Whether clients should collect services (`opt.Bool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect_services: Option<bool>,
    /// Legacy single filter; `Some(vec![])` = block everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packet_filter: Option<Vec<FilterRule>>,
    /// Named filters; a `None` value deletes that name.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub packet_filters: BTreeMap<String, Option<Vec<FilterRule>>>,
    /// Users (additive).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub user_profiles: Vec<UserProfile>,
    /// Control-side health messages; `Some(vec![])` clears them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Vec<String>>,
    /// Tailscale SSH policy.
    #[serde(rename = "SSHPolicy", default, skip_serializing_if = "Option::is_none")]
    pub ssh_policy: Option<SshPolicy>,
    /// The server's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_time: Option<Time>,
    /// Audit-log ID of the tailnet.
    #[serde(
        rename = "DomainDataPlaneAuditLogID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub domain_data_plane_audit_log_id: String,
    /// Debug settings (weft sets `DisableLogTail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<Debug>,
    /// Deprecated default for auto-updates (`opt.Bool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_auto_update: Option<bool>,
}

impl MapResponse {
    /// The keep-alive message, `{"KeepAlive":true}`.
    pub fn keep_alive() -> Self {
        Self {
            keep_alive: true,
            ..Self::default()
        }
    }
}

/// A small change to one peer (Go `tailcfg.PeerChange`); set fields overwrite the peer's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PeerChange {
    /// The peer (unknown IDs are ignored by clients).
    #[serde(rename = "NodeID", default)]
    pub node_id: NodeId,
    /// New home DERP region.
    #[serde(rename = "DERPRegion", default, skip_serializing_if = "is_zero_i64")]
    pub derp_region: i64,
    /// New capability version.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub cap: i64,
    /// New capability map.
    #[serde(
        default,
        deserialize_with = "cap_map_de",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub cap_map: CapMap,
    /// New endpoints.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub endpoints: Vec<SocketAddr>,
    /// New node key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<NodePublic>,
    /// New tailnet-lock signature.
    #[serde(default, skip_serializing_if = "Base64Bytes::is_empty")]
    pub key_signature: Base64Bytes,
    /// New disco key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disco_key: Option<DiscoPublic>,
    /// New online state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    /// New last-seen time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
    /// New key expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_expiry: Option<Time>,
}

/// Debug settings for the client (Go `tailcfg.Debug`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Debug {
    /// Sleep this long before the next request.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub sleep_seconds: f64,
    /// Stop uploading logs to the log service.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disable_log_tail: bool,
    /// Exit the client with this code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<i64>,
}
