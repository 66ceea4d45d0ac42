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
use weft_tailcfg::{
    Hostinfo, IpPrefix, Login, MachinePublic, NodePublic, RegisterRequest, RegisterResponse, Time,
    User,
};

use crate::authkey;
use crate::config::Config;
use crate::dnsname;
use crate::mapper::{from_policy_id, Session};
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
    used4: BTreeSet<std::net::Ipv4Addr>,
    used6: BTreeSet<std::net::Ipv6Addr>,
    last4: Option<std::net::Ipv4Addr>,
    last6: Option<std::net::Ipv6Addr>,
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

fn exit_routes() -> [IpPrefix; 2] {
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

fn to_net(p: &IpPrefix) -> Option<IpNet> {
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

    fn index_node(&mut self, n: &NodeRecord) {
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

    // ---- registration -------------------------------------------------------------------

    /// Handles `POST /machine/register` from `machine` (the Noise-proven key).
    /// `entropy` is fresh random bytes, used when an interactive login starts.
    ///
    /// # Errors
    /// A [`CoordError`] to show the client (in `RegisterResponse.Error`, status 200, as the
    /// client expects; or 400/403 by the shell's choice).
    pub fn register(
        &mut self,
        now: Time,
        machine: MachinePublic,
        req: &RegisterRequest,
        entropy: &[u8; AUTH_ID_ENTROPY],
    ) -> Result<(RegisterReply, Vec<StoreOp>), CoordError> {
        let mut ops = Vec::new();
        if req.node_key.is_zero() {
            return Err(CoordError::BadNodeKey);
        }
        if let Some(h) = &req.hostinfo {
            check_hostinfo(h)?;
        }
        // 1. Logout: before any auth-key handling (clients may send a key along).
        if req.is_logout(now) {
            if let Some(&id) = self.by_node_key.get(&req.node_key) {
                if self.nodes.get(&id).map(|n| n.machine) != Some(machine) {
                    return Err(CoordError::MachineMismatch);
                }
                self.logout(now, id, &mut ops);
            }
            return Ok((
                RegisterReply::Done(Box::new(RegisterResponse {
                    node_key_expired: true,
                    machine_authorized: false,
                    ..RegisterResponse::default()
                })),
                ops,
            ));
        }
        let auth_key = req
            .auth
            .as_ref()
            .map(|a| a.auth_key.as_str())
            .filter(|k| !k.is_empty());
        // 2. A known node key without a pre-auth key: a restart, or a key rotation.
        if auth_key.is_none() {
            let known = self.by_node_key.get(&req.node_key).copied().or_else(|| {
                (!req.old_node_key.is_zero())
                    .then(|| self.by_node_key.get(&req.old_node_key).copied())
                    .flatten()
            });
            if let Some(id) = known {
                let node = self.nodes.get(&id).ok_or(CoordError::NotRegistered)?;
                if node.machine != machine {
                    return Err(CoordError::MachineMismatch);
                }
                if !expired(node.key_expiry, now) {
                    if node.node_key != req.node_key {
                        self.rekey(now, id, req.node_key, &mut ops);
                    }
                    return Ok((RegisterReply::Done(Box::new(self.authorized(id, now))), ops));
                }
                // Expired: the client must log in again (interactive below).
                if req.followup.is_empty() && node.node_key == req.node_key {
                    return Ok((
                        RegisterReply::Done(Box::new(RegisterResponse {
                            node_key_expired: true,
                            ..self.authorized(id, now)
                        })),
                        ops,
                    ));
                }
            }
        }
        // 3. Follow-up of an interactive login.
        if !req.followup.is_empty() {
            let id = req
                .followup
                .rsplit_once("/register/")
                .map(|(_, id)| id.trim_end_matches('/').to_owned())
                .unwrap_or_default();
            if let Some(p) = self.pending.get(&id) {
                if p.machine != machine {
                    return Err(CoordError::MachineMismatch);
                }
                return Ok(match p.node {
                    Some(node) => {
                        self.pending.remove(&id);
                        (
                            RegisterReply::Done(Box::new(self.authorized(node, now))),
                            ops,
                        )
                    }
                    None => (
                        RegisterReply::Wait {
                            auth_url: self.auth_url(&id),
                            auth_id: id,
                        },
                        ops,
                    ),
                });
            }
        }
        // 4. Pre-auth key.
        if let Some(text) = auth_key {
            let key_id = self.check_auth_key(text, now)?;
            let key = self
                .keys
                .get(&key_id)
                .cloned()
                .ok_or(CoordError::BadAuthKey)?;
            let id = self.enroll(
                now,
                Enroll {
                    machine,
                    node_key: req.node_key,
                    user: key.user,
                    tags: key.tags.clone(),
                    ephemeral: key.ephemeral || req.ephemeral,
                    hostinfo: req.hostinfo.clone(),
                    auth_key: Some(key_id),
                },
                &mut ops,
            )?;
            let mut spent = key;
            spent.used = true;
            ops.push(StoreOp::PutKey(spent.clone()));
            self.keys.insert(key_id, spent);
            return Ok((RegisterReply::Done(Box::new(self.authorized(id, now))), ops));
        }
        // 5. Interactive: a pending login an admin approves with the CLI. One per machine (a
        // new attempt replaces the old), and a bound on all of them: anyone can ask.
        self.pending
            .retain(|_, p| p.machine != machine || p.node.is_some());
        if self.pending.len() >= MAX_PENDING {
            return Err(CoordError::TooManyPending);
        }
        let auth_id = hex::encode(entropy);
        if self.pending.contains_key(&auth_id) {
            return Err(CoordError::TooManyPending);
        }
        self.pending.insert(
            auth_id.clone(),
            Pending {
                machine,
                node_key: req.node_key,
                hostinfo: req.hostinfo.clone(),
                ephemeral: req.ephemeral,
                created: now,
                node: None,
            },
        );
        Ok((
            RegisterReply::Done(Box::new(RegisterResponse {
                auth_url: self.auth_url(&auth_id),
                ..RegisterResponse::default()
            })),
            ops,
        ))
    }

    fn auth_url(&self, id: &str) -> String {
        format!(
            "{}/register/{id}",
            self.cfg.server_url.trim_end_matches('/')
        )
    }

    fn check_auth_key(&self, text: &str, now: Time) -> Result<KeyId, CoordError> {
        let (prefix, secret) = authkey::parse(text).ok_or(CoordError::BadAuthKey)?;
        let key = self
            .keys
            .values()
            .find(|k| k.prefix == prefix)
            .ok_or(CoordError::BadAuthKey)?;
        let usable = authkey::secret_matches(secret, &key.secret_hash)
            && !key.revoked
            && !expired(key.expiration, now)
            && (key.reusable || !key.used);
        if usable {
            Ok(key.id)
        } else {
            Err(CoordError::BadAuthKey)
        }
    }

    /// The answer to a registered, authorized node.
    fn authorized(&self, id: NodeId, now: Time) -> RegisterResponse {
        let Some(node) = self.nodes.get(&id) else {
            return RegisterResponse {
                error: CoordError::NotRegistered.to_string(),
                ..RegisterResponse::default()
            };
        };
        let user = self.users.get(&node.user);
        let name = user.map(|u| u.name.clone()).unwrap_or_default();
        let display = user.map(|u| u.display_name.clone()).unwrap_or_default();
        RegisterResponse {
            user: User {
                id: node.user.0,
                display_name: display.clone(),
                created: user.map(|u| u.created).unwrap_or(Time::ZERO),
                ..User::default()
            },
            login: Login {
                id: node.user.0,
                provider: "weft".into(),
                login_name: name,
                display_name: display,
                ..Login::default()
            },
            node_key_expired: expired(node.key_expiry, now),
            machine_authorized: true,
            ..RegisterResponse::default()
        }
    }

    fn key_expiry_for(&self, now: Time, tags: &[String]) -> Time {
        match self.cfg.key_expiry_secs {
            Some(secs) if tags.is_empty() => add_secs(now, secs),
            _ => Time::ZERO,
        }
    }

    /// Creates a node, or re-keys the machine's existing one, owned as `e` says.
    pub(crate) fn enroll(
        &mut self,
        now: Time,
        e: Enroll,
        ops: &mut Vec<StoreOp>,
    ) -> Result<NodeId, CoordError> {
        if let Some(&other) = self.by_node_key.get(&e.node_key) {
            if self.nodes.get(&other).map(|n| n.machine) != Some(e.machine) {
                return Err(CoordError::MachineMismatch);
            }
        }
        let key_expiry = self.key_expiry_for(now, &e.tags);
        let hostname = e
            .hostinfo
            .as_ref()
            .map(|h| h.hostname.clone())
            .unwrap_or_default();
        let existing = self.by_machine.get(&e.machine).copied();
        let record = if let Some(id) = existing {
            let Some(old) = self.nodes.get(&id).cloned() else {
                return Err(CoordError::NotRegistered);
            };
            self.unindex_node(&old);
            // Routes were approved for this owner and these tags: a new owner or new tags
            // start without them (autoApprovers may grant them again below).
            let approved_routes = if old.user == e.user && old.tags == e.tags {
                old.approved_routes.clone()
            } else {
                Vec::new()
            };
            NodeRecord {
                approved_routes,
                node_key: e.node_key,
                user: e.user,
                tags: e.tags,
                hostname,
                hostinfo: e.hostinfo.or(old.hostinfo.clone()),
                key_expiry,
                ephemeral: e.ephemeral,
                auth_key: e.auth_key,
                ..old
            }
        } else {
            let ipv4 = self
                .cfg
                .v4
                .allocate_after(&self.used4, self.last4)
                .ok_or(CoordError::NoAddress)?;
            let ipv6 = self
                .cfg
                .v6
                .allocate_after(&self.used6, self.last6)
                .ok_or(CoordError::NoAddress)?;
            self.last4 = Some(ipv4);
            self.last6 = Some(ipv6);
            let label = dnsname::unique(&dnsname::sanitize(&hostname), |l| {
                self.labels.contains_key(l)
            });
            let id = NodeId(self.next.node);
            self.next.node += 1;
            NodeRecord {
                id,
                machine: e.machine,
                node_key: e.node_key,
                disco_key: weft_tailcfg::DiscoPublic::ZERO,
                user: e.user,
                tags: e.tags,
                hostname,
                given_name: label,
                ipv4: Some(ipv4),
                ipv6: Some(ipv6),
                hostinfo: e.hostinfo,
                endpoints: Vec::new(),
                key_expiry,
                created: now,
                last_seen: None,
                approved_routes: Vec::new(),
                ephemeral: e.ephemeral,
                auth_key: e.auth_key,
            }
        };
        let id = record.id;
        self.index_node(&record);
        self.nodes.insert(id, record);
        self.auto_approve(id);
        self.node_updated(now, id, true, ops);
        Ok(id)
    }

    fn rekey(&mut self, now: Time, id: NodeId, key: NodePublic, ops: &mut Vec<StoreOp>) {
        if let Some(n) = self.nodes.get_mut(&id) {
            let old = n.node_key;
            n.node_key = key;
            if self.by_node_key.get(&old) == Some(&id) {
                self.by_node_key.remove(&old);
            }
            self.by_node_key.insert(key, id);
        }
        self.node_updated(now, id, false, ops);
    }

    fn logout(&mut self, now: Time, id: NodeId, ops: &mut Vec<StoreOp>) {
        let ephemeral = self.nodes.get(&id).is_some_and(|n| n.ephemeral);
        if ephemeral {
            self.delete_node_inner(now, id, ops);
            return;
        }
        if let Some(n) = self.nodes.get_mut(&id) {
            n.key_expiry = now;
        }
        ops.extend(self.nodes.get(&id).map(|n| StoreOp::PutNode(n.clone())));
        self.expired_now(now, id);
    }

    /// Approves the advertised routes `autoApprovers` allow.
    pub(crate) fn auto_approve(&mut self, id: NodeId) {
        let Some(n) = self.nodes.get(&id) else {
            return;
        };
        let pn = self.policy_node(n);
        let advertised = n
            .hostinfo
            .as_ref()
            .map(|h| h.routable_ips.clone())
            .unwrap_or_default();
        let mut approve: Vec<IpPrefix> = advertised
            .iter()
            .filter(|p| !is_exit_route(p) && !n.approved_routes.contains(p))
            .filter(|p| {
                to_net(p).is_some_and(|net| self.policy.policy().auto_approves_route(&pn, net))
            })
            .copied()
            .collect();
        let exits = exit_routes();
        if exits.iter().all(|e| advertised.contains(e))
            && !exits.iter().all(|e| n.approved_routes.contains(e))
            && self.policy.policy().auto_approves_exit_node(&pn)
        {
            approve.extend(exits.iter().filter(|e| !n.approved_routes.contains(e)));
        }
        if let Some(n) = self.nodes.get_mut(&id) {
            n.approved_routes.extend(approve);
            n.approved_routes.sort();
            n.approved_routes.dedup();
        }
    }

    /// After a node record changed: persist it, update the policy index, re-elect primary
    /// routers, and queue the deltas for every session it concerns.
    pub(crate) fn node_updated(
        &mut self,
        now: Time,
        id: NodeId,
        policy_relevant: bool,
        ops: &mut Vec<StoreOp>,
    ) {
        let Some(n) = self.nodes.get(&id) else {
            return;
        };
        ops.push(StoreOp::PutNode(n.clone()));
        let mut affected = BTreeSet::new();
        let mut changed = vec![id];
        if policy_relevant {
            let pn = self.policy_node(n);
            let has_routes = !pn.routes.is_empty();
            affected.extend(self.policy.upsert_node(pn).into_iter().map(from_policy_id));
            if has_routes {
                self.routers.insert(id);
            } else {
                self.routers.remove(&id);
            }
        }
        // Also when only the online state changed: it may move a primary route.
        changed.extend(self.elect_primaries());
        self.refresh(now, &changed, &affected);
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

/// Who a new or re-keyed node is.
pub(crate) struct Enroll {
    pub(crate) machine: MachinePublic,
    pub(crate) node_key: NodePublic,
    pub(crate) user: UserId,
    pub(crate) tags: Vec<String>,
    pub(crate) ephemeral: bool,
    pub(crate) hostinfo: Option<Hostinfo>,
    pub(crate) auth_key: Option<KeyId>,
}
