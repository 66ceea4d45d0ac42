//! What the coordination server persists: users, pre-auth keys and nodes, and the one write
//! operation a store must apply atomically.
//!
//! These are the durable facts only. Everything derived from them — the compiled policy, who
//! is a peer of whom, which router is primary, who is online — is rebuilt from them at start
//! and kept in memory by [`crate::Coordinator`]. A store (SQLite now, PostgreSQL next; crate
//! `weft-coordstore`) persists records and nothing else, so both backends stay small and the
//! server logic is tested without a database.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use weft_tailcfg::{DiscoPublic, Hostinfo, IpPrefix, MachinePublic, NodePublic, Time};

/// A user's id (the store's row id; positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(pub i64);

/// A node's id (the store's row id; positive, never reused, below 2^53).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub i64);

/// A pre-auth key's id (the store's row id; positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub i64);

/// A user of the tailnet. Nodes belong to users; tagged nodes keep the user who tagged them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Its id.
    pub id: UserId,
    /// Login name, unique (`alice` or `alice@example.com`); what policies name.
    pub name: String,
    /// Display name (defaults to the login name).
    pub display_name: String,
    /// When it was created.
    pub created: Time,
}

/// A pre-auth key. Only the SHA-256 of its secret is stored; the full key text is shown once,
/// when it is created.
#[derive(Clone, PartialEq, Eq)]
pub struct PreAuthKeyRecord {
    /// Its id.
    pub id: KeyId,
    /// The public part of the key text (`wkey-auth-<prefix>-<secret>`), unique; lets a key be
    /// found and listed without its secret.
    pub prefix: String,
    /// SHA-256 of the secret part.
    pub secret_hash: [u8; 32],
    /// The user nodes registered with it belong to.
    pub user: UserId,
    /// Usable any number of times (else once).
    pub reusable: bool,
    /// Nodes registered with it are ephemeral.
    pub ephemeral: bool,
    /// Tags given to nodes registered with it.
    pub tags: Vec<String>,
    /// When it was created.
    pub created: Time,
    /// When it stops being usable.
    pub expiration: Time,
    /// Whether a node registered with it (a one-off key is then spent).
    pub used: bool,
    /// Whether an admin revoked it.
    pub revoked: bool,
}

impl fmt::Debug for PreAuthKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreAuthKeyRecord")
            .field("id", &self.id)
            .field("prefix", &self.prefix)
            .field("secret_hash", &"<redacted>")
            .field("user", &self.user)
            .field("reusable", &self.reusable)
            .field("ephemeral", &self.ephemeral)
            .field("tags", &self.tags)
            .field("expiration", &self.expiration)
            .field("used", &self.used)
            .field("revoked", &self.revoked)
            .finish()
    }
}

/// An API key of the HTTP admin API. Only the SHA-256 of its secret is stored; the key text
/// (`wkey-api-<prefix>-<secret>`) is shown once, when it is created.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Its id.
    pub id: KeyId,
    /// The public part of the key text, unique.
    pub prefix: String,
    /// SHA-256 of the secret part.
    pub secret_hash: [u8; 32],
    /// When it was created.
    pub created: Time,
    /// When it stops working.
    pub expiration: Time,
    /// Whether an admin revoked it.
    pub revoked: bool,
}

impl fmt::Debug for ApiKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyRecord")
            .field("id", &self.id)
            .field("prefix", &self.prefix)
            .field("secret_hash", &"<redacted>")
            .field("expiration", &self.expiration)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// A registered node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    /// Its id.
    pub id: NodeId,
    /// Machine key (the ts2021 Noise identity); unique.
    pub machine: MachinePublic,
    /// Current WireGuard node key; unique.
    pub node_key: NodePublic,
    /// Current disco key (zero until the first map request).
    pub disco_key: DiscoPublic,
    /// Owning user.
    pub user: UserId,
    /// ACL tags (from the pre-auth key or an admin); non-empty = a tagged node.
    pub tags: Vec<String>,
    /// The hostname the client reported.
    pub hostname: String,
    /// The MagicDNS label (sanitized, unique in the tailnet; an admin rename sticks).
    pub given_name: String,
    /// Tailnet IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// Tailnet IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// The client's last Hostinfo.
    pub hostinfo: Option<Hostinfo>,
    /// The client's last UDP endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// Node key expiry; [`Time::ZERO`] = never. A logout sets it to the logout time.
    pub key_expiry: Time,
    /// When it registered first.
    pub created: Time,
    /// When its last map session ended (None while never connected).
    pub last_seen: Option<Time>,
    /// Routes an admin or `autoApprovers` approved (subnet and exit routes).
    pub approved_routes: Vec<IpPrefix>,
    /// Deleted once it has been offline for the ephemeral timeout.
    pub ephemeral: bool,
    /// The pre-auth key it registered with, if any.
    pub auth_key: Option<KeyId>,
}

/// One change to persistent state. A store applies a batch of them in one transaction: all
/// or nothing, durable before the call returns.
#[derive(Debug, Clone, PartialEq)]
// A few ops per request, never per packet: boxing the node would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum StoreOp {
    /// Insert or replace a user (by id).
    PutUser(UserRecord),
    /// Delete a user (the coordinator deletes its nodes and keys first).
    DeleteUser(UserId),
    /// Insert or replace a pre-auth key (by id).
    PutKey(PreAuthKeyRecord),
    /// Delete a pre-auth key.
    DeleteKey(KeyId),
    /// Insert or replace a node (by id).
    PutNode(NodeRecord),
    /// Delete a node.
    DeleteNode(NodeId),
    /// Insert or replace an API key (by id; API keys count their ids in [`NextIds::api_key`]).
    PutApiKey(ApiKeyRecord),
    /// Delete an API key.
    DeleteApiKey(KeyId),
}

/// Everything a store holds, as loaded at start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// All users.
    pub users: Vec<UserRecord>,
    /// All pre-auth keys.
    pub keys: Vec<PreAuthKeyRecord>,
    /// All nodes.
    pub nodes: Vec<NodeRecord>,
    /// All API keys.
    pub api_keys: Vec<ApiKeyRecord>,
    /// The next free id for each table (ids are never reused, even after deletes).
    pub next_ids: NextIds,
}

/// The next id each table hands out. Kept by the store so that a deleted node's id is never
/// given to another node (clients cache peers by id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextIds {
    /// Next user id.
    pub user: i64,
    /// Next key id.
    pub key: i64,
    /// Next node id.
    pub node: i64,
    /// Next API key id.
    pub api_key: i64,
}

impl Default for NextIds {
    fn default() -> Self {
        Self {
            user: 1,
            key: 1,
            node: 1,
            api_key: 1,
        }
    }
}
