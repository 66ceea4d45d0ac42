//! The coordinator: the tailnet's state and every decision the control server makes about it.
//!
//! One value owns all of it — users, keys, nodes, pending logins, open map sessions — and is
//! driven by calls that carry the time (and, where something must be unguessable, fresh
//! random bytes). Each call returns the [`StoreOp`]s to persist, which the shell writes before
//! it answers, and queues [`Update`]s for open map sessions, which the shell drains with
//! [`Coordinator::take_updates`]. Registration follows the decision order of the protocol
//! reference §3.3; map building and deltas live in [`crate::mapper`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use weft_filter::IpNet;
use weft_policy::{CompiledPolicy, Policy, Tailnet};
use weft_tailcfg::{Hostinfo, IpPrefix, MachinePublic, NodePublic, RegisterResponse, Time};

use crate::config::Config;
use crate::mapper::Session;
use crate::records::{
    KeyId, NextIds, NodeId, NodeRecord, PreAuthKeyRecord, Snapshot, StoreOp, UserId, UserRecord,
};

/// Random bytes the shell passes for an interactive login's id.
pub const AUTH_ID_ENTROPY: usize = 16;

/// Interactive logins waiting at once (anyone may start one; each machine holds at most one).
pub const MAX_PENDING: usize = 1024;

/// Bounds on what a client reports, so that one node cannot make every peer's map huge.
pub const MAX_ROUTES: usize = 1024;
/// See [`MAX_ROUTES`].
pub const MAX_ENDPOINTS: usize = 64;
/// See [`MAX_ROUTES`].
pub const MAX_SERVICES: usize = 256;
/// See [`MAX_ROUTES`]: bytes of hostname (DNS allows 253).
pub const MAX_HOSTNAME: usize = 256;

/// Refuses a Hostinfo over the bounds above.
pub(crate) fn check_hostinfo(h: &Hostinfo) -> Result<(), CoordError> {
    if h.routable_ips.len() > MAX_ROUTES
        || h.services.len() > MAX_SERVICES
        || h.hostname.len() > MAX_HOSTNAME
        || h.request_tags.len() > MAX_ROUTES
    {
        return Err(CoordError::TooLarge);
    }
    Ok(())
}

/// Why a request or an admin command was refused. The text is shown to operators and, for
/// registration, to the client: it never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoordError {
    /// The pre-auth key is unknown, malformed, expired, revoked or spent.
    #[error("invalid, expired or used pre-auth key")]
    BadAuthKey,
    /// The node key is registered to another machine.
    #[error("node key belongs to another machine")]
    MachineMismatch,
    /// No node with that node key (the client must register first).
    #[error("node not registered")]
    NotRegistered,
    /// No such user.
    #[error("no user named {0:?}")]
    UnknownUser(String),
    /// A user with that name exists already.
    #[error("user {0:?} exists already")]
    UserExists(String),
    /// A user still owns nodes or keys.
    #[error("user {0:?} still has nodes or keys")]
    UserInUse(String),
    /// No node with that id.
    #[error("no node with id {0}")]
    UnknownNode(i64),
    /// No pre-auth key with that prefix.
    #[error("no pre-auth key {0:?}")]
    UnknownKey(String),
    /// A new key's public prefix equals an existing one's; try again with fresh entropy.
    #[error("pre-auth key prefix collision; try again")]
    KeyCollision,
    /// Too many interactive logins are waiting; try later.
    #[error("too many pending logins; try again later")]
    TooManyPending,
    /// The request reports more than the server accepts (routes, endpoints, services).
    #[error("request too large")]
    TooLarge,
    /// The node key is zero.
    #[error("invalid node key")]
    BadNodeKey,
    /// No pending login with that id (or it timed out).
    #[error("no pending registration {0:?}")]
    UnknownPending(String),
    /// A tag is not of the form `tag:name`.
    #[error("invalid tag {0:?}")]
    BadTag(String),
    /// A name is not a valid DNS label, or is taken.
    #[error("invalid or taken name {0:?}")]
    BadName(String),
    /// The address ranges are exhausted.
    #[error("no free tailnet address")]
    NoAddress,
    /// The policy does not parse, is invalid, or its tests fail.
    #[error("policy refused: {0}")]
    Policy(String),
}

/// What a registration request gets.
#[derive(Debug, Clone, PartialEq)]
pub enum RegisterReply {
    /// Answer now.
    Done(Box<RegisterResponse>),
    /// Hold the request until the pending login `auth_id` is approved (an
    /// [`Update::Approved`] names it), then ask again; answer the same AuthURL on timeout.
    Wait {
        /// The pending login's id.
        auth_id: String,
        /// Its URL, for the timeout answer.
        auth_url: String,
    },
}

/// A map stream's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// Something for the shell to deliver.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Send this map response on that session's stream.
    Send(SessionId, Box<weft_tailcfg::MapResponse>),
    /// End that session's stream (its node was deleted or logged out).
    Close(SessionId),
    /// A pending login was approved: release the requests waiting on it.
    Approved(String),
}

/// A login waiting for an admin.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) machine: MachinePublic,
    pub(crate) node_key: NodePublic,
    pub(crate) hostinfo: Option<Hostinfo>,
    pub(crate) ephemeral: bool,
    pub(crate) created: Time,
    /// Set once approved.
    pub(crate) node: Option<NodeId>,
}

/// A node as the admin CLI lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeView {
    /// Id.
    pub id: i64,
    /// MagicDNS label.
    pub name: String,
    /// Reported hostname.
    pub hostname: String,
    /// Owner's login.
    pub user: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Tailnet addresses.
    pub addresses: Vec<IpAddr>,
    /// Whether a map session is open.
    pub online: bool,
    /// Key expired (or logged out).
    pub expired: bool,
    /// Ephemeral.
    pub ephemeral: bool,
    /// Routes advertised.
    pub advertised_routes: Vec<String>,
    /// Routes approved.
    pub approved_routes: Vec<String>,
    /// Routes this node is primary for.
    pub primary_routes: Vec<String>,
}

/// A pre-auth key as the admin CLI lists it (never the secret).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KeyView {
    /// Public prefix.
    pub prefix: String,
    /// Owner's login.
    pub user: String,
    /// Reusable.
    pub reusable: bool,
    /// Ephemeral.
    pub ephemeral: bool,
    /// Tags.
    pub tags: Vec<String>,
    /// Expiration (RFC 3339).
    pub expiration: String,
    /// Used at least once.
    pub used: bool,
    /// Revoked.
    pub revoked: bool,
}

/// The tailnet's state machine.
pub struct Coordinator {
    pub(crate) cfg: Config,
    pub(crate) users: BTreeMap<UserId, UserRecord>,
    pub(crate) keys: BTreeMap<KeyId, PreAuthKeyRecord>,
    pub(crate) api_keys: BTreeMap<KeyId, crate::records::ApiKeyRecord>,
    pub(crate) nodes: BTreeMap<NodeId, NodeRecord>,
    pub(crate) by_machine: BTreeMap<MachinePublic, NodeId>,
    pub(crate) by_node_key: BTreeMap<NodePublic, NodeId>,
    pub(crate) labels: BTreeMap<String, NodeId>,
    /// Addresses in use, and the last ones handed out (allocation continues after them).
    pub(crate) used4: BTreeSet<std::net::Ipv4Addr>,
    pub(crate) used6: BTreeSet<std::net::Ipv6Addr>,
    pub(crate) last4: Option<std::net::Ipv4Addr>,
    pub(crate) last6: Option<std::net::Ipv6Addr>,
    pub(crate) next: NextIds,
    pub(crate) policy: CompiledPolicy,
    pub(crate) pending: BTreeMap<String, Pending>,
    pub(crate) sessions: BTreeMap<SessionId, Session>,
    pub(crate) node_sessions: BTreeMap<NodeId, BTreeSet<SessionId>>,
    /// Primary router of each subnet route (§11.2).
    pub(crate) primaries: BTreeMap<IpPrefix, NodeId>,
    /// Nodes that advertise at least one approved subnet route (the election's candidates).
    pub(crate) routers: BTreeSet<NodeId>,
    pub(crate) next_session: u64,
    pub(crate) outbox: Vec<Update>,
    /// Expiry times already acted on (so a passing expiry is announced once).
    last_tick: Option<Time>,
    /// The first housekeeping time after start (offline time of ephemeral nodes counts from
    /// here at the earliest).
    started: Option<Time>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("users", &self.users.len())
            .field("nodes", &self.nodes.len())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// `t` plus `secs` seconds (saturating at the representable range).
pub(crate) fn add_secs(t: Time, secs: i64) -> Time {
    Time::from_unix(t.unix_seconds().saturating_add(secs), 0).unwrap_or(t)
}

/// Whether `expiry` (zero = never) lies at or before `now`.
pub(crate) fn expired(expiry: Time, now: Time) -> bool {
    !expiry.is_zero() && expiry.get() <= now.get()
}

pub(crate) fn valid_tag(t: &str) -> bool {
    t.strip_prefix("tag:").is_some_and(|n| {
        n.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

pub(crate) fn exit_routes() -> [IpPrefix; 2] {
    [
        IpPrefix::new(IpAddr::from([0u8; 4]), 0)
            .unwrap_or_else(|| IpPrefix::host(IpAddr::from([0u8; 4]))),
        IpPrefix::new(IpAddr::from([0u16; 8]), 0)
            .unwrap_or_else(|| IpPrefix::host(IpAddr::from([0u16; 8]))),
    ]
}

pub(crate) fn is_exit_route(p: &IpPrefix) -> bool {
    p.is_empty()
}

pub(crate) fn to_net(p: &IpPrefix) -> Option<IpNet> {
    IpNet::new(p.addr(), p.len())
}

impl Coordinator {
    /// Builds the coordinator from what the store holds and the policy text.
    ///
    /// # Errors
    /// [`CoordError::Policy`] when the policy is refused (the caller should not start).
    pub fn new(cfg: Config, snapshot: Snapshot, policy_text: &str) -> Result<Self, CoordError> {
        let policy = Policy::parse(policy_text).map_err(|e| CoordError::Policy(e.to_string()))?;
        let mut c = Self {
            cfg,
            users: snapshot.users.into_iter().map(|u| (u.id, u)).collect(),
            keys: snapshot.keys.into_iter().map(|k| (k.id, k)).collect(),
            api_keys: snapshot.api_keys.into_iter().map(|k| (k.id, k)).collect(),
            nodes: BTreeMap::new(),
            by_machine: BTreeMap::new(),
            by_node_key: BTreeMap::new(),
            labels: BTreeMap::new(),
            used4: BTreeSet::new(),
            used6: BTreeSet::new(),
            last4: None,
            last6: None,
            next: snapshot.next_ids,
            policy: policy.compile(&Tailnet::new(Vec::new())),
            pending: BTreeMap::new(),
            sessions: BTreeMap::new(),
            node_sessions: BTreeMap::new(),
            primaries: BTreeMap::new(),
            routers: BTreeSet::new(),
            next_session: 1,
            outbox: Vec::new(),
            last_tick: None,
            started: None,
        };
        for n in snapshot.nodes {
            c.index_node(&n);
            c.nodes.insert(n.id, n);
        }
        c.last4 = c.used4.iter().next_back().copied();
        c.last6 = c.used6.iter().next_back().copied();
        let tailnet = c.policy_tailnet();
        c.policy = policy.compile(&tailnet);
        c.policy
            .run_tests()
            .map_err(|e| CoordError::Policy(e.to_string()))?;
        c.routers = c
            .nodes
            .values()
            .filter(|n| !c.subnet_routes(n).is_empty())
            .map(|n| n.id)
            .collect();
        Ok(c)
    }

    /// The deployment settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub(crate) fn index_node(&mut self, n: &NodeRecord) {
        self.used4.extend(n.ipv4);
        self.used6.extend(n.ipv6);
        self.by_machine.insert(n.machine, n.id);
        self.by_node_key.insert(n.node_key, n.id);
        self.labels.insert(n.given_name.clone(), n.id);
    }

    pub(crate) fn unindex_node(&mut self, n: &NodeRecord) {
        if let Some(a) = n.ipv4 {
            self.used4.remove(&a);
        }
        if let Some(a) = n.ipv6 {
            self.used6.remove(&a);
        }
        if self.by_machine.get(&n.machine) == Some(&n.id) {
            self.by_machine.remove(&n.machine);
        }
        if self.by_node_key.get(&n.node_key) == Some(&n.id) {
            self.by_node_key.remove(&n.node_key);
        }
        if self.labels.get(&n.given_name) == Some(&n.id) {
            self.labels.remove(&n.given_name);
        }
    }

    pub(crate) fn user_name(&self, id: UserId) -> String {
        self.users
            .get(&id)
            .map(|u| u.name.clone())
            .unwrap_or_default()
    }

    /// Advertised ∩ approved, without the exit routes.
    pub(crate) fn subnet_routes(&self, n: &NodeRecord) -> Vec<IpPrefix> {
        let advertised = n
            .hostinfo
            .as_ref()
            .map(|h| h.routable_ips.as_slice())
            .unwrap_or_default();
        advertised
            .iter()
            .filter(|p| !is_exit_route(p) && n.approved_routes.contains(p))
            .copied()
            .collect()
    }

    /// Both exit routes advertised and approved.
    pub(crate) fn is_exit_node(&self, n: &NodeRecord) -> bool {
        let advertised = n
            .hostinfo
            .as_ref()
            .map(|h| h.routable_ips.as_slice())
            .unwrap_or_default();
        exit_routes()
            .iter()
            .all(|e| advertised.contains(e) && n.approved_routes.contains(e))
    }

    pub(crate) fn policy_node(&self, n: &NodeRecord) -> weft_policy::Node {
        let mut addresses = Vec::new();
        addresses.extend(n.ipv4.map(IpAddr::from));
        addresses.extend(n.ipv6.map(IpAddr::from));
        weft_policy::Node {
            id: weft_policy::NodeId(n.id.0.unsigned_abs()),
            user: self.user_name(n.user),
            tags: n.tags.clone(),
            addresses,
            routes: self.subnet_routes(n).iter().filter_map(to_net).collect(),
            exit_node: self.is_exit_node(n),
        }
    }

    fn policy_tailnet(&self) -> Tailnet {
        let mut t = Tailnet::new(self.nodes.values().map(|n| self.policy_node(n)).collect());
        let v4 = IpNet::new(IpAddr::from(self.cfg.v4.net), self.cfg.v4.len);
        let v6 = IpNet::new(IpAddr::from(self.cfg.v6.net), self.cfg.v6.len);
        t.ranges = v4.into_iter().chain(v6).collect();
        t
    }

    /// Checks a policy against the current tailnet (parse, validate, compile, run its
    /// `tests`) without making it live.
    ///
    /// # Errors
    /// [`CoordError::Policy`], naming the line and the reason.
    pub fn check_policy(&self, text: &str) -> Result<(), CoordError> {
        Policy::load(text, &self.policy_tailnet())
            .map(|_| ())
            .map_err(|e| CoordError::Policy(e.to_string()))
    }

    /// Replaces the policy. The new one must parse, validate and pass its `tests`; otherwise
    /// the old one stays in force and the error says why. Every open session gets the filter
    /// and peer changes.
    ///
    /// # Errors
    /// [`CoordError::Policy`].
    pub fn set_policy(&mut self, now: Time, text: &str) -> Result<(), CoordError> {
        let compiled = Policy::load(text, &self.policy_tailnet())
            .map_err(|e| CoordError::Policy(e.to_string()))?;
        self.policy = compiled;
        self.refresh_all(now);
        Ok(())
    }

    // ---- time ---------------------------------------------------------------------------

    /// Housekeeping, called every few seconds: deletes ephemeral nodes offline for longer than
    /// the timeout, forgets stale pending logins, and announces keys that expired since the
    /// last call (expired nodes leave their peers' maps).
    pub fn tick(&mut self, now: Time) -> Vec<StoreOp> {
        let mut ops = Vec::new();
        let timeout = self.cfg.ephemeral_timeout_secs;
        // Offline time counts from this server's start at the earliest: a node whose session
        // was cut by a restart gets the whole timeout to come back.
        let started = *self.started.get_or_insert(now);
        let gone: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.ephemeral && !self.is_online(n.id))
            .filter(|n| {
                let mut since = n.last_seen.unwrap_or(n.created);
                if since.get() < started.get() {
                    since = started;
                }
                add_secs(since, timeout).get() <= now.get()
            })
            .map(|n| n.id)
            .collect();
        for id in gone {
            self.delete_node_inner(now, id, &mut ops);
        }
        let pending_timeout = self.cfg.pending_timeout_secs;
        self.pending
            .retain(|_, p| add_secs(p.created, pending_timeout).get() > now.get());
        // After a start, everything that expired while the server was down is announced once
        // (sessions cannot predate the start, so this only re-elects and refreshes).
        {
            let last = self.last_tick.unwrap_or(Time::ZERO);
            let newly: Vec<NodeId> = self
                .nodes
                .values()
                .filter(|n| expired(n.key_expiry, now) && !expired(n.key_expiry, last))
                .map(|n| n.id)
                .collect();
            for id in newly {
                self.expired_now(now, id);
            }
        }
        self.last_tick = Some(now);
        ops
    }

    /// A node's key just expired (time passed, or an admin expired it): its sessions end, it
    /// stops being anyone's primary router, and it leaves its peers' maps.
    pub(crate) fn expired_now(&mut self, now: Time, id: NodeId) {
        self.close_sessions_of(id);
        let mut changed = vec![id];
        changed.extend(self.elect_primaries());
        self.refresh(now, &changed, &BTreeSet::new());
    }

    /// Session ids continue from `next` (after a rebuild, so that ids of streams still
    /// winding down are never reused).
    pub fn continue_sessions_from(&mut self, next: u64) {
        self.next_session = self.next_session.max(next);
    }

    /// The next session id.
    pub fn next_session_id(&self) -> u64 {
        self.next_session
    }

    /// Everything the shell must deliver, in order.
    pub fn take_updates(&mut self) -> Vec<Update> {
        std::mem::take(&mut self.outbox)
    }

    /// Whether the node has an open map session.
    pub fn is_online(&self, id: NodeId) -> bool {
        self.node_sessions.get(&id).is_some_and(|s| !s.is_empty())
    }

    /// The node with this node key.
    pub fn node_by_key(&self, key: &NodePublic) -> Option<&NodeRecord> {
        self.by_node_key.get(key).and_then(|id| self.nodes.get(id))
    }

    /// Whether a DERP relay should admit the node with this key (`/verify`): registered and
    /// not expired.
    pub fn admits(&self, key: &NodePublic, now: Time) -> bool {
        self.node_by_key(key)
            .is_some_and(|n| !expired(n.key_expiry, now))
    }
}
