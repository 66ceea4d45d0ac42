//! Map sessions: the first full map, and deltas after every change, computed for the
//! sessions a change concerns only.
//!
//! Each open session remembers what its client holds: the peer ids and the packet filter it
//! was last sent. When node X changes, the coordinator calls [`Coordinator::refresh`] with X
//! and the nodes whose policy view may differ (from `weft-policy`'s incremental update); the
//! sessions looked at are those of X, of X's peers and of the affected nodes — never every
//! session. For each, the new peer set is diffed against the remembered one: peers that
//! appeared or changed go out whole in `PeersChanged` (the client turns what fits into
//! patches itself), peers that left in `PeersRemoved`, a new filter in `PacketFilters`. This is
//! what keeps weft from Headscale's super-linear rebuilds (protocol reference §4.4, §4.6).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use weft_filter::FilterRule;
use weft_tailcfg::{
    DnsConfig, DnsResolver, IpPrefix, MachinePublic, MapRequest, MapResponse, Node, Time,
    UserProfile,
};

use crate::coordinator::{expired, is_exit_route, Coordinator, SessionId, Update};
use crate::records::{NodeId, StoreOp};

/// What one session's client holds.
#[derive(Debug, Clone)]
pub struct Session {
    pub(crate) node: NodeId,
    pub(crate) peers: BTreeSet<NodeId>,
    pub(crate) filter: Vec<FilterRule>,
    pub(crate) users: BTreeSet<i64>,
}

/// Why a map request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// No node has this node key: the client must register.
    #[error("node not registered")]
    NotRegistered,
    /// The node key is registered to another machine.
    #[error("node key belongs to another machine")]
    MachineMismatch,
    /// The node's key expired (or it logged out): it must log in again.
    #[error("node key expired")]
    KeyExpired,
    /// The request reports more than the server accepts.
    #[error("request too large")]
    TooLarge,
}

/// The answer to a map request.
#[derive(Debug)]
pub enum MapReply {
    /// A stream opened: send `first`, then what [`Coordinator::take_updates`] queues for
    /// `session`, with keep-alives in between; call [`Coordinator::map_close`] when it ends.
    Stream {
        /// The session's id.
        session: SessionId,
        /// The full first map.
        first: Box<MapResponse>,
    },
    /// A single full map (`Stream: false`, `OmitPeers: false`); no session stays open.
    Single(Box<MapResponse>),
    /// A lite update (`OmitPeers: true`) was applied; answer 200 with an empty body.
    Lite,
}

/// The filter name every weft map uses (as Headscale does).
const FILTER_NAME: &str = "base";

impl Coordinator {
    /// Handles `POST /machine/map`: applies what the request reports (disco key, endpoints,
    /// Hostinfo) and opens a stream, answers once, or just records a lite update.
    ///
    /// # Errors
    /// [`MapError`].
    pub fn map_request(
        &mut self,
        now: Time,
        machine: MachinePublic,
        req: &MapRequest,
    ) -> Result<(MapReply, Vec<StoreOp>), MapError> {
        let id = self
            .node_by_key(&req.node_key)
            .map(|n| n.id)
            .ok_or(MapError::NotRegistered)?;
        let mut ops = Vec::new();
        {
            let n = self.nodes.get(&id).ok_or(MapError::NotRegistered)?;
            if n.machine != machine {
                return Err(MapError::MachineMismatch);
            }
            if expired(n.key_expiry, now) {
                return Err(MapError::KeyExpired);
            }
        }
        if req.endpoints.len() > crate::coordinator::MAX_ENDPOINTS
            || req
                .hostinfo
                .as_ref()
                .is_some_and(|h| crate::coordinator::check_hostinfo(h).is_err())
        {
            return Err(MapError::TooLarge);
        }
        let (changed, policy_relevant) = self.apply_report(id, req);
        if !req.stream {
            if changed {
                self.node_updated(now, id, policy_relevant, &mut ops);
            }
            if req.omit_peers {
                return Ok((MapReply::Lite, ops));
            }
            let (first, _) = self.full_map(now, id);
            return Ok((MapReply::Single(Box::new(first)), ops));
        }
        // A new stream replaces the node's older ones (a client polls once at a time; a
        // re-poll after a network change must not leave a dead twin behind).
        let was_online = self.is_online(id);
        if let Some(old) = self.node_sessions.remove(&id) {
            for s in old {
                self.sessions.remove(&s);
                self.outbox.push(Update::Close(s));
            }
        }
        let session = SessionId(self.next_session);
        self.next_session += 1;
        // Online from here on; the new stream itself gets the full map below, so it is not
        // among the sessions this change is pushed to.
        self.node_sessions.entry(id).or_default().insert(session);
        if changed || !was_online {
            // One delta per peer for the report and the online change together; coming online
            // may also make it the primary router of a prefix.
            self.node_updated(now, id, policy_relevant, &mut ops);
        }
        let (first, state) = self.full_map(now, id);
        self.sessions.insert(session, state);
        Ok((
            MapReply::Stream {
                session,
                first: Box::new(first),
            },
            ops,
        ))
    }

    /// A stream ended. When it was the node's last, the node goes offline: its last-seen time
    /// is stored and its peers are told.
    pub fn map_close(&mut self, now: Time, session: SessionId) -> Vec<StoreOp> {
        let Some(s) = self.sessions.remove(&session) else {
            return Vec::new();
        };
        let id = s.node;
        if let Some(set) = self.node_sessions.get_mut(&id) {
            set.remove(&session);
            if set.is_empty() {
                self.node_sessions.remove(&id);
            }
        }
        let mut ops = Vec::new();
        if !self.is_online(id) {
            if let Some(n) = self.nodes.get_mut(&id) {
                n.last_seen = Some(now);
                ops.push(StoreOp::PutNode(n.clone()));
                let mut changed = vec![id];
                changed.extend(self.elect_primaries());
                self.refresh(now, &changed, &BTreeSet::new());
            }
        }
        ops
    }

    pub(crate) fn close_sessions_of(&mut self, id: NodeId) {
        if let Some(set) = self.node_sessions.remove(&id) {
            for s in set {
                self.sessions.remove(&s);
                self.outbox.push(Update::Close(s));
            }
        }
    }

    /// Applies the disco key, endpoints and Hostinfo a map request carries. Returns whether
    /// the node changed, and whether the change matters to the policy (advertised routes).
    fn apply_report(&mut self, id: NodeId, req: &MapRequest) -> (bool, bool) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return (false, false);
        };
        let mut changed = false;
        let mut policy_relevant = false;
        if !req.disco_key.is_zero() && n.disco_key != req.disco_key {
            n.disco_key = req.disco_key;
            changed = true;
        }
        if !req.endpoints.is_empty() && n.endpoints != req.endpoints {
            n.endpoints.clone_from(&req.endpoints);
            changed = true;
        }
        if let Some(h) = &req.hostinfo {
            if n.hostinfo.as_ref() != Some(h) {
                let old_routes = n
                    .hostinfo
                    .as_ref()
                    .map(|o| o.routable_ips.clone())
                    .unwrap_or_default();
                policy_relevant = old_routes != h.routable_ips;
                if !h.hostname.is_empty() {
                    n.hostname.clone_from(&h.hostname);
                }
                n.hostinfo = Some(h.clone());
                changed = true;
            }
        }
        if policy_relevant {
            self.auto_approve(id);
        }
        (changed, policy_relevant)
    }

    /// The full map for node `id`, and the session state that matches it.
    fn full_map(&self, now: Time, id: NodeId) -> (MapResponse, Session) {
        let peers = self.visible_peers(id, now);
        let filter = self.policy.filter_for(policy_id(id));
        let mut users: BTreeSet<i64> = BTreeSet::new();
        let mut peer_nodes = Vec::with_capacity(peers.len());
        for p in &peers {
            if let Some(n) = self.wire_node(*p, now, false) {
                users.insert(n.user);
                peer_nodes.push(n);
            }
        }
        let self_node = self.wire_node(id, now, true);
        if let Some(n) = &self_node {
            users.insert(n.user);
        }
        let mut filters = BTreeMap::new();
        filters.insert(FILTER_NAME.to_owned(), Some(filter.clone()));
        let resp = MapResponse {
            node: self_node,
            derp_map: Some(self.cfg.derp_map.clone()),
            peers: peer_nodes,
            dns_config: Some(self.dns_config()),
            domain: self.cfg.base_domain.clone(),
            collect_services: Some(false),
            packet_filters: filters,
            user_profiles: self.profiles(&users),
            control_time: Some(now),
            debug: Some(weft_tailcfg::Debug {
                disable_log_tail: true,
                ..weft_tailcfg::Debug::default()
            }),
            ..MapResponse::default()
        };
        (
            resp,
            Session {
                node: id,
                peers,
                filter,
                users,
            },
        )
    }

    /// The peers node `id` may see: the policy's answer, without nodes whose key expired (a
    /// logged-out node disappears from its peers' maps).
    pub(crate) fn visible_peers(&self, id: NodeId, now: Time) -> BTreeSet<NodeId> {
        let Some(me) = self.nodes.get(&id) else {
            return BTreeSet::new();
        };
        if expired(me.key_expiry, now) {
            return BTreeSet::new();
        }
        self.policy
            .peers_of(policy_id(id))
            .into_iter()
            .map(from_policy_id)
            .filter(|p| {
                self.nodes
                    .get(p)
                    .is_some_and(|n| !expired(n.key_expiry, now))
            })
            .collect()
    }

    /// Queues the deltas after an event about the nodes in `changed` (their wire form changed,
    /// or they joined, left or expired) that made the policy engine report `affected` (nodes
    /// whose filter or peers may differ).
    ///
    /// Cost: one event about node X can change another node's peer set only by X itself —
    /// whether two other nodes see each other depends on those two alone — so every session
    /// other than X's own is updated from X's peer set, computed once, with a membership test;
    /// X's wire form is built once and cloned. Only X's own sessions, and nodes whose filter
    /// may differ, do more. So one change costs O(its peers), not O(peers²).
    pub(crate) fn refresh(&mut self, now: Time, changed: &[NodeId], affected: &BTreeSet<NodeId>) {
        self.refresh_scoped(now, changed, affected, false);
    }

    /// After a policy change: every session's peers and filter are recomputed and diffed.
    pub(crate) fn refresh_all(&mut self, now: Time) {
        let all: BTreeSet<NodeId> = self.nodes.keys().copied().collect();
        self.refresh_scoped(now, &[], &all, true);
    }

    fn refresh_scoped(
        &mut self,
        now: Time,
        changed: &[NodeId],
        affected: &BTreeSet<NodeId>,
        full: bool,
    ) {
        // Who sees each changed node now (visibility is symmetric), and its wire form.
        let seen_by: BTreeMap<NodeId, BTreeSet<NodeId>> = changed
            .iter()
            .map(|x| (*x, self.visible_peers(*x, now)))
            .collect();
        let wires: BTreeMap<NodeId, Node> = changed
            .iter()
            .filter_map(|x| self.wire_node(*x, now, false).map(|w| (*x, w)))
            .collect();
        // Sessions to look at: the affected nodes, and everyone the policy lets see a changed
        // node, expired or not (an expired node's former peers must drop it; a deleted one's
        // are in `affected`, from the policy engine's view before the removal).
        let mut look: BTreeSet<NodeId> = affected.clone();
        for x in changed {
            look.insert(*x);
            look.extend(
                self.policy
                    .peers_of(policy_id(*x))
                    .into_iter()
                    .map(from_policy_id),
            );
        }
        for n in look {
            let Some(sessions) = self.node_sessions.get(&n).cloned() else {
                continue;
            };
            let policy_affected = full || affected.contains(&n);
            for sid in sessions {
                let resp = if full || seen_by.contains_key(&n) {
                    self.delta_full(now, sid, &seen_by, &wires, policy_affected)
                } else {
                    self.delta_incremental(now, sid, &seen_by, &wires, policy_affected)
                };
                if let Some(resp) = resp {
                    self.outbox.push(Update::Send(sid, Box::new(resp)));
                }
            }
        }
    }

    /// The delta for a session whose own peer set may have changed as a whole.
    fn delta_full(
        &mut self,
        now: Time,
        sid: SessionId,
        seen_by: &BTreeMap<NodeId, BTreeSet<NodeId>>,
        wires: &BTreeMap<NodeId, Node>,
        policy_affected: bool,
    ) -> Option<MapResponse> {
        let s = self.sessions.get(&sid)?;
        let me = s.node;
        let new_peers = self.visible_peers(me, now);
        let removed: Vec<i64> = s.peers.difference(&new_peers).map(|p| p.0).collect();
        let send: Vec<NodeId> = new_peers
            .iter()
            .filter(|p| !s.peers.contains(p) || seen_by.contains_key(p))
            .copied()
            .collect();
        let mut resp = MapResponse::default();
        for p in &send {
            let w = match wires.get(p) {
                Some(w) => Some(w.clone()),
                None => self.wire_node(*p, now, false),
            };
            resp.peers_changed.extend(w);
        }
        resp.peers_removed = removed;
        if seen_by.contains_key(&me) {
            resp.node = self.wire_node(me, now, true);
        }
        self.finish_delta(now, sid, resp, Some(new_peers), policy_affected)
    }

    /// The delta for a session whose peer set can change only by the changed nodes.
    fn delta_incremental(
        &mut self,
        now: Time,
        sid: SessionId,
        seen_by: &BTreeMap<NodeId, BTreeSet<NodeId>>,
        wires: &BTreeMap<NodeId, Node>,
        policy_affected: bool,
    ) -> Option<MapResponse> {
        let s = self.sessions.get_mut(&sid)?;
        let me = s.node;
        let mut resp = MapResponse::default();
        for (x, px) in seen_by {
            if *x == me {
                continue;
            }
            if px.contains(&me) {
                s.peers.insert(*x);
                resp.peers_changed.extend(wires.get(x).cloned());
            } else if s.peers.remove(x) {
                resp.peers_removed.push(x.0);
            }
        }
        self.finish_delta(now, sid, resp, None, policy_affected)
    }

    /// Adds the filter (when it may have changed) and the new users' profiles, updates what the
    /// session holds, and returns the response unless it is empty.
    fn finish_delta(
        &mut self,
        now: Time,
        sid: SessionId,
        mut resp: MapResponse,
        new_peers: Option<BTreeSet<NodeId>>,
        policy_affected: bool,
    ) -> Option<MapResponse> {
        let me = self.sessions.get(&sid)?.node;
        let filter = policy_affected.then(|| self.policy.filter_for(policy_id(me)));
        let s = self.sessions.get_mut(&sid)?;
        let mut new_users = BTreeSet::new();
        for n in &resp.peers_changed {
            if !s.users.contains(&n.user) {
                new_users.insert(n.user);
            }
        }
        if let Some(f) = filter {
            if f != s.filter {
                resp.packet_filters
                    .insert(FILTER_NAME.to_owned(), Some(f.clone()));
                s.filter = f;
            }
        }
        if let Some(p) = new_peers {
            s.peers = p;
        }
        s.users.extend(new_users.iter().copied());
        resp.user_profiles = self.profiles(&new_users);
        let empty = resp.peers_changed.is_empty()
            && resp.peers_removed.is_empty()
            && resp.node.is_none()
            && resp.packet_filters.is_empty();
        if empty {
            return None;
        }
        resp.control_time = Some(now);
        Some(resp)
    }

    /// Node `id` as the wire shows it, to itself (`is_self`) or to a peer.
    fn wire_node(&self, id: NodeId, now: Time, is_self: bool) -> Option<Node> {
        let n = self.nodes.get(&id)?;
        let mut addresses = Vec::new();
        addresses.extend(n.ipv4.map(|a| IpPrefix::host(IpAddr::from(a))));
        addresses.extend(n.ipv6.map(|a| IpPrefix::host(IpAddr::from(a))));
        let primary: Vec<IpPrefix> = self
            .primaries
            .iter()
            .filter(|(_, p)| **p == id)
            .map(|(r, _)| *r)
            .collect();
        let mut allowed = addresses.clone();
        allowed.extend(primary.iter().copied());
        if self.is_exit_node(n) {
            allowed.extend(n.approved_routes.iter().filter(|r| is_exit_route(r)));
        }
        allowed.sort();
        allowed.dedup();
        let online = self.is_online(id);
        let mut cap_map = weft_tailcfg::CapMap::new();
        if is_self {
            cap_map.insert("https://tailscale.com/cap/file-sharing".into(), Vec::new());
            cap_map.insert("https://tailscale.com/cap/is-admin".into(), Vec::new());
        }
        Some(Node {
            id: id.0,
            stable_id: id.0.to_string(),
            name: format!(
                "{}.{}.",
                n.given_name,
                self.cfg.base_domain.trim_end_matches('.')
            ),
            user: n.user.0,
            key: n.node_key,
            key_expiry: n.key_expiry,
            machine: n.machine,
            disco_key: n.disco_key,
            addresses,
            allowed_ips: Some(allowed),
            endpoints: n.endpoints.clone(),
            home_derp: n
                .hostinfo
                .as_ref()
                .and_then(|h| h.net_info.as_ref())
                .map(|ni| ni.preferred_derp)
                .unwrap_or(0),
            hostinfo: n.hostinfo.clone(),
            created: n.created,
            tags: n.tags.clone(),
            primary_routes: primary,
            last_seen: if online { None } else { n.last_seen },
            online: Some(online),
            machine_authorized: true,
            cap_map,
            expired: expired(n.key_expiry, now),
            ..Node::default()
        })
    }

    fn profiles(&self, users: &BTreeSet<i64>) -> Vec<UserProfile> {
        users
            .iter()
            .filter_map(|u| self.users.get(&crate::records::UserId(*u)))
            .map(|u| UserProfile {
                id: u.id.0,
                login_name: u.name.clone(),
                display_name: u.display_name.clone(),
                ..UserProfile::default()
            })
            .collect()
    }

    fn dns_config(&self) -> DnsConfig {
        let d = &self.cfg.dns;
        let resolver = |a: &String| DnsResolver {
            addr: a.clone(),
            ..DnsResolver::default()
        };
        let mut domains = Vec::new();
        if d.magic_dns {
            domains.push(self.cfg.base_domain.trim_end_matches('.').to_owned());
        }
        domains.extend(d.search_domains.iter().cloned());
        DnsConfig {
            resolvers: d.nameservers.iter().map(resolver).collect(),
            routes: d
                .split
                .iter()
                .map(|(dom, ns)| (dom.clone(), ns.iter().map(resolver).collect()))
                .collect(),
            domains,
            proxied: d.magic_dns,
            extra_records: d.extra_records.clone(),
            ..DnsConfig::default()
        }
    }

    /// Elects the primary router of every subnet route among the online routers (keep the
    /// current primary while it is online, else the lowest id; §11.2). Returns the nodes whose
    /// primary routes changed.
    pub(crate) fn elect_primaries(&mut self) -> Vec<NodeId> {
        let mut candidates: BTreeMap<IpPrefix, Vec<NodeId>> = BTreeMap::new();
        for id in &self.routers {
            // Online means a live stream, and streams of expired nodes are closed: an expired
            // router is never elected.
            if !self.is_online(*id) {
                continue;
            }
            if let Some(n) = self.nodes.get(id) {
                for r in self.subnet_routes(n) {
                    candidates.entry(r).or_default().push(*id);
                }
            }
        }
        let mut next = BTreeMap::new();
        for (route, nodes) in &candidates {
            let keep = self.primaries.get(route).filter(|p| nodes.contains(p));
            if let Some(p) = keep.or(nodes.first()) {
                next.insert(*route, *p);
            }
        }
        let mut changed = BTreeSet::new();
        for (r, p) in &self.primaries {
            if next.get(r) != Some(p) {
                changed.insert(*p);
            }
        }
        for (r, p) in &next {
            if self.primaries.get(r) != Some(p) {
                changed.insert(*p);
            }
        }
        self.primaries = next;
        changed.into_iter().collect()
    }
}

pub(crate) fn policy_id(id: NodeId) -> weft_policy::NodeId {
    weft_policy::NodeId(id.0.unsigned_abs())
}

pub(crate) fn from_policy_id(id: weft_policy::NodeId) -> NodeId {
    NodeId(i64::try_from(id.0).unwrap_or(i64::MAX))
}
