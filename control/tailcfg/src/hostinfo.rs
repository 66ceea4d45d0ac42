//! `Hostinfo`, `NetInfo` and `Service`: what a client says about itself.
//!
//! The server reads a few of these fields (`Hostname` for the MagicDNS name, `RoutableIPs` for
//! advertised routes, `RequestTags`, `NetInfo.PreferredDERP` for the home DERP) and passes the
//! whole object on to peers as `Node.Hostinfo`, so the fields peers use (services, SSH host keys,
//! OS, location) are kept too. Fields weft does not model are dropped on input; Go ignores unknown
//! fields the same way, and every Hostinfo field is optional. All fields are `omitzero`/
//! `omitempty` in Go, so every one is skipped here when empty.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::wire::{is_false, is_zero_f64, is_zero_i64, null_as_default, IpPrefix};

/// A client's description of itself (Go `tailcfg.Hostinfo`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Hostinfo {
    /// Version of the client, in Tailscale's long form.
    #[serde(
        rename = "IPNVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub ipn_version: String,
    /// Logtail ID of the frontend.
    #[serde(
        rename = "FrontendLogID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub frontend_log_id: String,
    /// Logtail ID of the backend (the client refuses to poll without it).
    #[serde(
        rename = "BackendLogID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub backend_log_id: String,
    /// Operating system (`linux`, `windows`, `macOS`, `iOS`, `android`...).
    #[serde(rename = "OS", default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    /// Operating system version.
    #[serde(
        rename = "OSVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    /// Whether the client runs in a container (`opt.Bool`: absent = unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<bool>,
    /// Environment type (`k8s`, `lm`...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub env: String,
    /// Linux distribution.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub distro: String,
    /// Distribution version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub distro_version: String,
    /// Distribution code name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub distro_code_name: String,
    /// Application embedding tsnet, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app: String,
    /// Whether a desktop was detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desktop: Option<bool>,
    /// Package the client came from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub package: String,
    /// Device model of a phone.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device_model: String,
    /// Host name: the source of the node's MagicDNS name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// The host blocks incoming connections.
    #[serde(default, skip_serializing_if = "is_false")]
    pub shields_up: bool,
    /// The node is in the map only because it is shared to this user.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sharee_node: bool,
    /// The user opted out of logs.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_logs_no_support: bool,
    /// Funnel ingress is wired.
    #[serde(default, skip_serializing_if = "is_false")]
    pub wire_ingress: bool,
    /// A funnel endpoint is enabled.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ingress_enabled: bool,
    /// The client can update itself.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allows_update: bool,
    /// Machine type (`uname -m`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub machine: String,
    /// GOARCH of the client binary.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub go_arch: String,
    /// GOARM/GOAMD64 variant.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub go_arch_var: String,
    /// Go version of the client binary.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub go_version: String,
    /// Advertised subnet and exit routes.
    #[serde(
        rename = "RoutableIPs",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub routable_ips: Vec<IpPrefix>,
    /// Tags the node asks for.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub request_tags: Vec<String>,
    /// Wake-on-LAN MAC addresses.
    #[serde(
        rename = "WoLMACs",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub wol_macs: Vec<String>,
    /// Services the node offers.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub services: Vec<Service>,
    /// Network conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_info: Option<NetInfo>,
    /// SSH host keys, when Tailscale SSH is on.
    #[serde(
        rename = "sshHostKeys",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ssh_host_keys: Vec<String>,
    /// Cloud provider.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cloud: String,
    /// Runs in userspace (netstack) mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userspace: Option<bool>,
    /// Its subnet router runs in userspace mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userspace_router: Option<bool>,
    /// Runs the app-connector service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_connector: Option<bool>,
    /// Opaque hash of the tailnet services list.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub services_hash: String,
    /// Willing to relay traffic for peers.
    #[serde(default, skip_serializing_if = "is_false")]
    pub peer_relay: bool,
    /// The exit node the client selected (a `StableNodeID`).
    #[serde(
        rename = "ExitNodeID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub exit_node_id: String,
    /// Location (for exit-node suggestions and route priority).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// The client's state file is encrypted at rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_encrypted: Option<bool>,
}

/// A service a node offers (Go `tailcfg.Service`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    /// `tcp`, `udp`, `peerapi4`, `peerapi6` or `peerapi-dns-proxy`.
    #[serde(default)]
    pub proto: String,
    /// Port number.
    #[serde(default)]
    pub port: u16,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// Where a node is (Go `tailcfg.Location`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Location {
    /// Country name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub country: String,
    /// ISO 3166-1 alpha-2 code.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub country_code: String,
    /// City name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub city: String,
    /// City code.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub city_code: String,
    /// Latitude in degrees.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub latitude: f64,
    /// Longitude in degrees.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub longitude: f64,
    /// Route priority.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub priority: i64,
}

/// A client's view of its network (Go `tailcfg.NetInfo`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetInfo {
    /// The NAT maps differently per destination (hard NAT).
    #[serde(
        rename = "MappingVariesByDestIP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mapping_varies_by_dest_ip: Option<bool>,
    /// IPv6 works.
    #[serde(
        rename = "WorkingIPv6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_ipv6: Option<bool>,
    /// The OS has IPv6.
    #[serde(rename = "OSHasIPv6", default, skip_serializing_if = "Option::is_none")]
    pub os_has_ipv6: Option<bool>,
    /// UDP works.
    #[serde(
        rename = "WorkingUDP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_udp: Option<bool>,
    /// ICMPv4 works.
    #[serde(
        rename = "WorkingICMPv4",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_icmpv4: Option<bool>,
    /// A port mapping service exists.
    #[serde(default, skip_serializing_if = "is_false")]
    pub have_port_map: bool,
    /// UPnP is available.
    #[serde(rename = "UPnP", default, skip_serializing_if = "Option::is_none")]
    pub upnp: Option<bool>,
    /// NAT-PMP is available.
    #[serde(rename = "PMP", default, skip_serializing_if = "Option::is_none")]
    pub pmp: Option<bool>,
    /// PCP is available.
    #[serde(rename = "PCP", default, skip_serializing_if = "Option::is_none")]
    pub pcp: Option<bool>,
    /// Home DERP region; echoed to peers as `Node.HomeDERP`.
    #[serde(rename = "PreferredDERP", default, skip_serializing_if = "is_zero_i64")]
    pub preferred_derp: i64,
    /// `wired`, `wifi` or `mobile`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub link_type: String,
    /// Latency per `"<regionID>-v4"`/`"-v6"`, in seconds.
    #[serde(
        rename = "DERPLatency",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub derp_latency: BTreeMap<String, f64>,
    /// Linux firewall mode.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub firewall_mode: String,
}
