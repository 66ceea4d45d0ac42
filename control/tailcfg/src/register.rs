//! `/machine/register` messages and the small messages around the ts2021 channel (`/key`,
//! `EarlyNoise`).
//!
//! `RegisterRequest` fields Go writes even when zero are written here too: `NodeKey`,
//! `OldNodeKey` (a zero key as `nodekey:000…`), `Expiry` (`0001-01-01T00:00:00Z` when unset, a
//! past time meaning logout), `Followup` and `Hostinfo`. `RegisterResponse` has no `omitempty`
//! at all in Go, so every field is always written.

use serde::{Deserialize, Serialize};

use crate::capver::CapabilityVersion;
use crate::hostinfo::Hostinfo;
use crate::keys::{ChallengePublic, MachinePublic, NodePublic};
use crate::node::{Login, User};
use crate::time::Time;
use crate::wire::{is_false, Base64Bytes};

/// Body of `POST /machine/register` (Go `tailcfg.RegisterRequest`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterRequest {
    /// Client capability version.
    #[serde(default)]
    pub version: CapabilityVersion,
    /// The key being registered.
    #[serde(default)]
    pub node_key: NodePublic,
    /// The previous key when rotating; zero otherwise.
    #[serde(default)]
    pub old_node_key: NodePublic,
    /// Tailnet-lock key (`nlpub:…`), kept as text; weft does not implement Tailnet Lock.
    #[serde(rename = "NLKey", default, skip_serializing_if = "String::is_empty")]
    pub nl_key: String,
    /// Pre-auth key, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RegisterResponseAuth>,
    /// Requested key expiry; zero = default; in the past with the current key = logout.
    #[serde(default)]
    pub expiry: Time,
    /// The AuthURL of an earlier response, to wait for its completion.
    #[serde(default)]
    pub followup: String,
    /// The client's Hostinfo.
    #[serde(default)]
    pub hostinfo: Option<Hostinfo>,
    /// Delete the node when it goes away.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ephemeral: bool,
    /// Tailnet-lock signature (Go writes `null` when unset).
    #[serde(default)]
    pub node_key_signature: Option<Base64Bytes>,
    /// Requested tailnet.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tailnet: String,
}

impl RegisterRequest {
    /// Whether this is a logout: a non-zero expiry before `now`.
    pub fn is_logout(&self, now: Time) -> bool {
        !self.expiry.is_zero() && self.expiry.get() < now.get()
    }
}

/// Authentication carried in a register request (Go `tailcfg.RegisterResponseAuth`).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterResponseAuth {
    /// The pre-auth key, verbatim.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth_key: String,
}

impl std::fmt::Debug for RegisterResponseAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The pre-auth key is a secret: never print it.
        f.debug_struct("RegisterResponseAuth")
            .field(
                "auth_key",
                &if self.auth_key.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .finish()
    }
}

/// Reply to `/machine/register` (Go `tailcfg.RegisterResponse`). All fields always written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterResponse {
    /// The owning user.
    #[serde(default)]
    pub user: User,
    /// The login.
    #[serde(default)]
    pub login: Login,
    /// The node key must be replaced.
    #[serde(default)]
    pub node_key_expired: bool,
    /// False = waiting for admin approval.
    #[serde(default)]
    pub machine_authorized: bool,
    /// Non-empty = interactive authentication pending at this URL.
    #[serde(rename = "AuthURL", default)]
    pub auth_url: String,
    /// Tailnet-lock signature (Go writes `null` when unset).
    #[serde(default)]
    pub node_key_signature: Option<Base64Bytes>,
    /// Non-empty = registration failed with this message.
    #[serde(default)]
    pub error: String,
}

/// Reply to `GET /key?v=N` (Go `tailcfg.OverTLSPublicKeyResponse`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverTLSPublicKeyResponse {
    /// The pre-Noise protocol's key; weft sends its Noise key or zero.
    #[serde(rename = "legacyPublicKey", default)]
    pub legacy_public_key: MachinePublic,
    /// The server's ts2021 Noise static key.
    #[serde(rename = "publicKey", default)]
    pub public_key: MachinePublic,
}

/// The optional payload the server sends inside Noise before HTTP/2 (Go `tailcfg.EarlyNoise`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarlyNoise {
    /// A fresh challenge key per connection.
    #[serde(rename = "nodeKeyChallenge", default)]
    pub node_key_challenge: ChallengePublic,
}
