//! Registration (`POST /machine/register`) in the decision order of the protocol reference
//! §3.3 — logout, restart or key rotation, follow-up of an interactive login, pre-auth key,
//! new interactive login — and what it does to the tailnet: enrolment (address, MagicDNS
//! label, key expiry, autoApprovers), re-keying, logout.

use std::collections::BTreeSet;

use weft_tailcfg::{
    Hostinfo, IpPrefix, Login, MachinePublic, NodePublic, RegisterRequest, RegisterResponse, Time,
    User,
};

use crate::authkey;
use crate::coordinator::{
    add_secs, check_hostinfo, exit_routes, expired, is_exit_route, to_net, CoordError, Coordinator,
    Pending, RegisterReply, AUTH_ID_ENTROPY, MAX_PENDING,
};
use crate::dnsname;
use crate::mapper::from_policy_id;
use crate::records::{KeyId, NodeId, NodeRecord, StoreOp, UserId};

impl Coordinator {
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
