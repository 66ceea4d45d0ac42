//! `SSHPolicy`: Tailscale SSH rules pushed in the map.
//!
//! Unlike the rest of the protocol these types use lower camel case field names (Go tags them
//! explicitly). `principals`, `sshUsers` and `action` are written even when empty, as in Go.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::time::{GoDuration, Time};
use crate::wire::{is_false, null_as_default};

/// The SSH policy of a node (Go `tailcfg.SSHPolicy`); the first matching rule wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshPolicy {
    /// Rules in order.
    #[serde(default, deserialize_with = "null_as_default")]
    pub rules: Vec<SshRule>,
}

/// One SSH rule (Go `tailcfg.SSHRule`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshRule {
    /// When the rule stops applying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_expires: Option<Time>,
    /// Who the rule matches.
    #[serde(default, deserialize_with = "null_as_default")]
    pub principals: Vec<SshPrincipal>,
    /// Requested user → local user (`"="` same name, `""` deny).
    #[serde(default, deserialize_with = "null_as_default")]
    pub ssh_users: BTreeMap<String, String>,
    /// What to do on a match.
    #[serde(default)]
    pub action: Option<SshAction>,
    /// Environment variables the client may pass.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub accept_env: Vec<String>,
}

/// A principal an SSH rule matches (Go `tailcfg.SSHPrincipal`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshPrincipal {
    /// A node's stable ID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// A node IP.
    #[serde(rename = "nodeIP", default, skip_serializing_if = "String::is_empty")]
    pub node_ip: String,
    /// A login name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_login: String,
    /// Any connection.
    #[serde(default, skip_serializing_if = "is_false")]
    pub any: bool,
}

/// What an SSH rule does (Go `tailcfg.SSHAction`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshAction {
    /// Message shown to the user.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Reject the connection.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reject: bool,
    /// Accept the connection.
    #[serde(default, skip_serializing_if = "is_false")]
    pub accept: bool,
    /// Maximum session length (nanoseconds).
    #[serde(default, skip_serializing_if = "GoDuration::is_zero")]
    pub session_duration: GoDuration,
    /// Allow agent forwarding.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_agent_forwarding: bool,
    /// URL to ask for a decision ("check" mode).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hold_and_delegate: String,
    /// Allow local port forwarding.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_local_port_forwarding: bool,
    /// Allow remote port forwarding.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_remote_port_forwarding: bool,
    /// Session recorders.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub recorders: Vec<SocketAddr>,
}
