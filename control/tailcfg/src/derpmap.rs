//! `DERPMap`: the relay regions and servers a client may use, and the `/verify` admission
//! messages a DERP server exchanges with the coordination server.
//!
//! Maps keyed by region ID are JSON objects with decimal-string keys (`{"900": {...}}`); serde_json
//! writes and reads integer map keys that way. A `null` region is how Go deletes a region from a
//! client's map, so regions are `Option`s.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::keys::NodePublic;
use crate::wire::{is_false, is_zero_f64, is_zero_i64, null_as_default};

/// A DERP region ID: > 0; 900–999 are for self-hosted regions.
pub type RegionId = i64;

/// The whole relay map (Go `tailcfg.DERPMap`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DerpMap {
    /// Region score tuning; `None` = keep the client's current parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_params: Option<DerpHomeParams>,
    /// Regions by ID; a `None` region is deleted by the client.
    #[serde(default, deserialize_with = "null_as_default")]
    pub regions: BTreeMap<RegionId, Option<DerpRegion>>,
    /// Do not merge Tailscale's default regions.
    #[serde(
        rename = "omitDefaultRegions",
        default,
        skip_serializing_if = "is_false"
    )]
    pub omit_default_regions: bool,
}

/// Region preference scores (Go `tailcfg.DERPHomeParams`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DerpHomeParams {
    /// Region ID → score multiplier (below 1 = preferred).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub region_score: BTreeMap<RegionId, f64>,
}

/// One region (Go `tailcfg.DERPRegion`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DerpRegion {
    /// Region ID.
    #[serde(rename = "RegionID", default)]
    pub region_id: RegionId,
    /// Short name (`"nyc"`).
    #[serde(default)]
    pub region_code: String,
    /// Long name.
    #[serde(default)]
    pub region_name: String,
    /// Latitude in degrees.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub latitude: f64,
    /// Longitude in degrees.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub longitude: f64,
    /// Deprecated.
    #[serde(default, skip_serializing_if = "is_false")]
    pub avoid: bool,
    /// Never measured nor chosen as home (capability version 115).
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_measure_no_home: bool,
    /// Servers in priority order.
    #[serde(default, deserialize_with = "null_as_default")]
    pub nodes: Vec<DerpNode>,
}

/// One DERP server (Go `tailcfg.DERPNode`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DerpNode {
    /// Unique name (`"900a"`).
    #[serde(default)]
    pub name: String,
    /// Region ID.
    #[serde(rename = "RegionID", default)]
    pub region_id: RegionId,
    /// Host name for DNS, SNI and the URL.
    #[serde(default)]
    pub host_name: String,
    /// Expected certificate name; `sha256-raw:<hex>` pins the certificate.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cert_name: String,
    /// IPv4 to dial instead of resolving; `"none"` disables IPv4.
    #[serde(rename = "IPv4", default, skip_serializing_if = "String::is_empty")]
    pub ipv4: String,
    /// IPv6 to dial instead of resolving; `"none"` disables IPv6.
    #[serde(rename = "IPv6", default, skip_serializing_if = "String::is_empty")]
    pub ipv6: String,
    /// STUN port: 0 = 3478, −1 = no STUN.
    #[serde(rename = "STUNPort", default, skip_serializing_if = "is_zero_i64")]
    pub stun_port: i64,
    /// Only STUN, no DERP.
    #[serde(rename = "STUNOnly", default, skip_serializing_if = "is_false")]
    pub stun_only: bool,
    /// DERP port: 0 = 443.
    #[serde(rename = "DERPPort", default, skip_serializing_if = "is_zero_i64")]
    pub derp_port: i64,
    /// Skip TLS verification (tests only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure_for_tests: bool,
    /// STUN destination override (tests).
    #[serde(
        rename = "STUNTestIP",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub stun_test_ip: String,
    /// Serves captive-portal checks on port 80.
    #[serde(rename = "CanPort80", default, skip_serializing_if = "is_false")]
    pub can_port80: bool,
}

/// Body of the DERP server's `POST /verify` (Go `tailcfg.DERPAdmitClientRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DerpAdmitClientRequest {
    /// The connecting client's node key.
    pub node_public: NodePublic,
    /// The client's IP address.
    pub source: IpAddr,
}

/// Reply to `/verify` (Go `tailcfg.DERPAdmitClientResponse`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DerpAdmitClientResponse {
    /// Whether the relay should admit the client.
    #[serde(default)]
    pub allow: bool,
}
