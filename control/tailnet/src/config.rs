//! What the coordinator needs to know about its deployment. The binary reads it from its
//! config file; tests build it directly.

use weft_tailcfg::{DerpMap, DnsRecord};

use crate::addr::{V4Range, V6Range, DEFAULT_V4, DEFAULT_V6};

/// Deployment settings of a tailnet.
#[derive(Debug, Clone)]
pub struct Config {
    /// The URL clients use for this server (`http://127.0.0.1:8080`); AuthURLs are built on it.
    pub server_url: String,
    /// MagicDNS base domain: node `web` is `web.<base_domain>.`.
    pub base_domain: String,
    /// IPv4 addresses come from here.
    pub v4: V4Range,
    /// IPv6 addresses come from here.
    pub v6: V6Range,
    /// DNS settings sent to every node.
    pub dns: DnsSettings,
    /// The DERP map sent to every node.
    pub derp_map: DerpMap,
    /// Node key lifetime for user-owned nodes, in seconds; `None` = keys never expire.
    /// Tagged nodes' keys never expire (as in Tailscale).
    pub key_expiry_secs: Option<i64>,
    /// An ephemeral node is deleted after this long without a map session, in seconds.
    pub ephemeral_timeout_secs: i64,
    /// A pending interactive registration is forgotten after this long, in seconds.
    pub pending_timeout_secs: i64,
}

/// DNS settings (protocol reference §10).
#[derive(Debug, Clone, Default)]
pub struct DnsSettings {
    /// MagicDNS on (`Proxied`).
    pub magic_dns: bool,
    /// Global nameservers (`Resolvers`): IPs or DoH URLs. Empty = the node keeps its own.
    pub nameservers: Vec<String>,
    /// Split DNS: domain → nameservers (an empty list answers locally).
    pub split: Vec<(String, Vec<String>)>,
    /// Search domains, after the base domain.
    pub search_domains: Vec<String>,
    /// Extra A/AAAA records.
    pub extra_records: Vec<DnsRecord>,
}

/// 180 days, Tailscale's default node key lifetime.
pub const DEFAULT_KEY_EXPIRY_SECS: i64 = 180 * 24 * 3600;
/// 30 minutes.
pub const DEFAULT_EPHEMERAL_TIMEOUT_SECS: i64 = 30 * 60;

impl Config {
    /// A config with the defaults: Tailscale's ranges, MagicDNS on under `base_domain`, no
    /// DERP map (set one), 180-day keys, 30-minute ephemeral timeout.
    pub fn new(server_url: impl Into<String>, base_domain: impl Into<String>) -> Self {
        Self {
            server_url: server_url.into(),
            base_domain: base_domain.into(),
            v4: DEFAULT_V4,
            v6: DEFAULT_V6,
            dns: DnsSettings {
                magic_dns: true,
                ..DnsSettings::default()
            },
            derp_map: DerpMap::default(),
            key_expiry_secs: Some(DEFAULT_KEY_EXPIRY_SECS),
            ephemeral_timeout_secs: DEFAULT_EPHEMERAL_TIMEOUT_SECS,
            pending_timeout_secs: 15 * 60,
        }
    }
}
