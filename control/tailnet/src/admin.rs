//! Admin commands (the `weft-coordd` CLI, through the admin socket): users, pre-auth keys,
//! pending logins, nodes, routes. Each returns the [`StoreOp`]s to persist and queues the
//! map deltas its change causes, like every other coordinator call.

use std::collections::BTreeSet;
use std::net::IpAddr;

use weft_tailcfg::{IpPrefix, Time};

use crate::authkey::{self, NewKey, KEY_ENTROPY};
use crate::coordinator::{
    add_secs, expired, valid_tag, CoordError, Coordinator, KeyView, NodeView, Update,
};
use crate::dnsname;
use crate::mapper::from_policy_id;
use crate::records::{ApiKeyRecord, KeyId, NodeId, PreAuthKeyRecord, StoreOp, UserId, UserRecord};
use crate::register::Enroll;

impl Coordinator {
    // --------------------------------------------------------------------------

    /// Creates a user.
    ///
    /// # Errors
    /// [`CoordError::UserExists`], or [`CoordError::BadName`] for an empty name.
    pub fn create_user(&mut self, now: Time, name: &str) -> Result<Vec<StoreOp>, CoordError> {
        let name = name.trim();
        if name.is_empty() || name.chars().any(char::is_whitespace) {
            return Err(CoordError::BadName(name.to_owned()));
        }
        if self.users.values().any(|u| u.name == name) {
            return Err(CoordError::UserExists(name.to_owned()));
        }
        let u = UserRecord {
            id: UserId(self.next.user),
            name: name.to_owned(),
            display_name: name.to_owned(),
            created: now,
        };
        self.next.user += 1;
        self.users.insert(u.id, u.clone());
        Ok(vec![StoreOp::PutUser(u)])
    }

    /// Deletes a user that owns no nodes and no keys.
    ///
    /// # Errors
    /// [`CoordError::UnknownUser`] or [`CoordError::UserInUse`].
    pub fn delete_user(&mut self, name: &str) -> Result<Vec<StoreOp>, CoordError> {
        let id = self.user_id(name)?;
        if self.nodes.values().any(|n| n.user == id) || self.keys.values().any(|k| k.user == id) {
            return Err(CoordError::UserInUse(name.to_owned()));
        }
        self.users.remove(&id);
        Ok(vec![StoreOp::DeleteUser(id)])
    }

    fn user_id(&self, name: &str) -> Result<UserId, CoordError> {
        self.users
            .values()
            .find(|u| u.name == name)
            .map(|u| u.id)
            .ok_or_else(|| CoordError::UnknownUser(name.to_owned()))
    }

    /// The users, by id.
    pub fn users(&self) -> Vec<UserRecord> {
        self.users.values().cloned().collect()
    }

    /// Creates a pre-auth key for `user`, valid for `valid_secs`. The returned text is the
    /// only copy of the secret.
    ///
    /// # Errors
    /// [`CoordError::UnknownUser`], [`CoordError::BadTag`].
    #[allow(clippy::too_many_arguments)]
    pub fn create_key(
        &mut self,
        now: Time,
        user: &str,
        reusable: bool,
        ephemeral: bool,
        tags: Vec<String>,
        valid_secs: i64,
        entropy: &[u8; KEY_ENTROPY],
    ) -> Result<(NewKey, Vec<StoreOp>), CoordError> {
        let user = self.user_id(user)?;
        if let Some(bad) = tags.iter().find(|t| !valid_tag(t)) {
            return Err(CoordError::BadTag(bad.clone()));
        }
        let new = authkey::new_key(entropy);
        if self.keys.values().any(|k| k.prefix == new.prefix) {
            // 48 random bits collided (or the caller reused its entropy): refuse rather than
            // make a key that would find another key's record.
            return Err(CoordError::KeyCollision);
        }
        let rec = PreAuthKeyRecord {
            id: KeyId(self.next.key),
            prefix: new.prefix.clone(),
            secret_hash: new.secret_hash,
            user,
            reusable,
            ephemeral,
            tags,
            created: now,
            expiration: add_secs(now, valid_secs.max(1)),
            used: false,
            revoked: false,
        };
        self.next.key += 1;
        self.keys.insert(rec.id, rec.clone());
        Ok((new, vec![StoreOp::PutKey(rec)]))
    }

    /// Revokes the key with this prefix.
    ///
    /// # Errors
    /// [`CoordError::UnknownKey`].
    pub fn revoke_key(&mut self, prefix: &str) -> Result<Vec<StoreOp>, CoordError> {
        let k = self
            .keys
            .values_mut()
            .find(|k| k.prefix == prefix)
            .ok_or_else(|| CoordError::UnknownKey(prefix.to_owned()))?;
        k.revoked = true;
        Ok(vec![StoreOp::PutKey(k.clone())])
    }

    /// The pre-auth keys (without secrets).
    pub fn keys(&self) -> Vec<KeyView> {
        self.keys
            .values()
            .map(|k| KeyView {
                prefix: k.prefix.clone(),
                user: self.user_name(k.user),
                reusable: k.reusable,
                ephemeral: k.ephemeral,
                tags: k.tags.clone(),
                expiration: k.expiration.format().unwrap_or_default(),
                used: k.used,
                revoked: k.revoked,
            })
            .collect()
    }

    /// Approves pending login `auth_id` as `user`'s node; the waiting client is released.
    ///
    /// # Errors
    /// [`CoordError::UnknownPending`], [`CoordError::UnknownUser`].
    pub fn approve_pending(
        &mut self,
        now: Time,
        auth_id: &str,
        user: &str,
    ) -> Result<(NodeId, Vec<StoreOp>), CoordError> {
        let user = self.user_id(user)?;
        let p = self
            .pending
            .get(auth_id)
            .filter(|p| p.node.is_none())
            .cloned()
            .ok_or_else(|| CoordError::UnknownPending(auth_id.to_owned()))?;
        let mut ops = Vec::new();
        let id = self.enroll(
            now,
            Enroll {
                machine: p.machine,
                node_key: p.node_key,
                user,
                tags: Vec::new(),
                ephemeral: p.ephemeral,
                hostinfo: p.hostinfo,
                auth_key: None,
            },
            &mut ops,
        )?;
        if let Some(p) = self.pending.get_mut(auth_id) {
            p.node = Some(id);
        }
        self.outbox.push(Update::Approved(auth_id.to_owned()));
        Ok((id, ops))
    }

    /// Ids of the pending logins, oldest first.
    pub fn pending(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| p.node.is_none())
            .map(|(id, p)| {
                // Client-supplied: no control characters reach the admin's terminal.
                let host: String = p
                    .hostinfo
                    .as_ref()
                    .map(|h| {
                        h.hostname
                            .chars()
                            .filter(|c| !c.is_control())
                            .take(64)
                            .collect()
                    })
                    .unwrap_or_default();
                (p.created.unix_seconds(), id.clone(), host)
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, id, host)| (id, host)).collect()
    }

    /// The nodes, by id.
    pub fn nodes(&self, now: Time) -> Vec<NodeView> {
        self.nodes
            .values()
            .map(|n| NodeView {
                id: n.id.0,
                name: n.given_name.clone(),
                hostname: n.hostname.clone(),
                user: self.user_name(n.user),
                tags: n.tags.clone(),
                addresses: n
                    .ipv4
                    .map(IpAddr::from)
                    .into_iter()
                    .chain(n.ipv6.map(IpAddr::from))
                    .collect(),
                online: self.is_online(n.id),
                expired: expired(n.key_expiry, now),
                ephemeral: n.ephemeral,
                advertised_routes: n
                    .hostinfo
                    .as_ref()
                    .map(|h| h.routable_ips.iter().map(ToString::to_string).collect())
                    .unwrap_or_default(),
                approved_routes: n.approved_routes.iter().map(ToString::to_string).collect(),
                primary_routes: self
                    .primaries
                    .iter()
                    .filter(|(_, p)| **p == n.id)
                    .map(|(r, _)| r.to_string())
                    .collect(),
            })
            .collect()
    }

    /// Deletes a node; it disappears from its peers' maps and its sessions end.
    ///
    /// # Errors
    /// [`CoordError::UnknownNode`].
    pub fn delete_node(&mut self, now: Time, id: i64) -> Result<Vec<StoreOp>, CoordError> {
        let id = NodeId(id);
        if !self.nodes.contains_key(&id) {
            return Err(CoordError::UnknownNode(id.0));
        }
        let mut ops = Vec::new();
        self.delete_node_inner(now, id, &mut ops);
        Ok(ops)
    }

    pub(crate) fn delete_node_inner(&mut self, now: Time, id: NodeId, ops: &mut Vec<StoreOp>) {
        self.close_sessions_of(id);
        let Some(n) = self.nodes.remove(&id) else {
            return;
        };
        self.unindex_node(&n);
        self.routers.remove(&id);
        let affected: BTreeSet<NodeId> = self
            .policy
            .remove_node(weft_policy::NodeId(id.0.unsigned_abs()))
            .into_iter()
            .map(from_policy_id)
            .collect();
        // The deleted node is among the changed ones: sessions holding it drop it.
        let mut changed = vec![id];
        changed.extend(self.elect_primaries());
        ops.push(StoreOp::DeleteNode(id));
        self.refresh(now, &changed, &affected);
    }

    /// Expires a node's key now (as a logout does, without deleting an ephemeral node).
    ///
    /// # Errors
    /// [`CoordError::UnknownNode`].
    pub fn expire_node(&mut self, now: Time, id: i64) -> Result<Vec<StoreOp>, CoordError> {
        let id = NodeId(id);
        let n = self
            .nodes
            .get_mut(&id)
            .ok_or(CoordError::UnknownNode(id.0))?;
        n.key_expiry = now;
        let ops = vec![StoreOp::PutNode(n.clone())];
        self.expired_now(now, id);
        Ok(ops)
    }

    /// Sets the routes approved for a node (replacing the previous approval).
    ///
    /// # Errors
    /// [`CoordError::UnknownNode`].
    pub fn approve_routes(
        &mut self,
        now: Time,
        id: i64,
        mut routes: Vec<IpPrefix>,
    ) -> Result<Vec<StoreOp>, CoordError> {
        let id = NodeId(id);
        let n = self
            .nodes
            .get_mut(&id)
            .ok_or(CoordError::UnknownNode(id.0))?;
        routes.sort();
        routes.dedup();
        n.approved_routes = routes;
        let mut ops = Vec::new();
        self.node_updated(now, id, true, &mut ops);
        Ok(ops)
    }

    /// Replaces a node's tags (`tag:name` each; empty makes it a user's device again). Tagged
    /// nodes' keys do not expire; a node that loses its tags gets the default key lifetime
    /// from now.
    ///
    /// # Errors
    /// [`CoordError::UnknownNode`], [`CoordError::BadTag`].
    pub fn set_tags(
        &mut self,
        now: Time,
        id: i64,
        mut tags: Vec<String>,
    ) -> Result<Vec<StoreOp>, CoordError> {
        if let Some(bad) = tags.iter().find(|t| !valid_tag(t)) {
            return Err(CoordError::BadTag(bad.clone()));
        }
        tags.sort();
        tags.dedup();
        let id = NodeId(id);
        let default_expiry = self.cfg.key_expiry_secs;
        let n = self
            .nodes
            .get_mut(&id)
            .ok_or(CoordError::UnknownNode(id.0))?;
        if tags.is_empty() && !n.tags.is_empty() {
            n.key_expiry = default_expiry.map_or(Time::ZERO, |s| add_secs(now, s));
        } else if !tags.is_empty() {
            n.key_expiry = Time::ZERO;
        }
        n.tags = tags;
        let mut ops = Vec::new();
        self.node_updated(now, id, true, &mut ops);
        Ok(ops)
    }

    /// Turns a node's key expiry off (`None`: the key never expires) or sets it to expire
    /// `secs` from now.
    ///
    /// # Errors
    /// [`CoordError::UnknownNode`].
    pub fn set_key_expiry(
        &mut self,
        now: Time,
        id: i64,
        secs: Option<i64>,
    ) -> Result<Vec<StoreOp>, CoordError> {
        let id = NodeId(id);
        let n = self
            .nodes
            .get_mut(&id)
            .ok_or(CoordError::UnknownNode(id.0))?;
        n.key_expiry = secs.map_or(Time::ZERO, |s| add_secs(now, s.max(1)));
        let mut ops = Vec::new();
        self.node_updated(now, id, false, &mut ops);
        Ok(ops)
    }

    /// Renames a node's MagicDNS label (sticks across hostname changes).
    ///
    /// # Errors
    /// [`CoordError::UnknownNode`], [`CoordError::BadName`].
    pub fn rename_node(
        &mut self,
        now: Time,
        id: i64,
        label: &str,
    ) -> Result<Vec<StoreOp>, CoordError> {
        let id = NodeId(id);
        let label = label.to_ascii_lowercase();
        let label = label.as_str();
        if !dnsname::valid_label(label) || self.labels.get(label).is_some_and(|o| *o != id) {
            return Err(CoordError::BadName(label.to_owned()));
        }
        let n = self
            .nodes
            .get_mut(&id)
            .ok_or(CoordError::UnknownNode(id.0))?;
        let old = std::mem::replace(&mut n.given_name, label.to_ascii_lowercase());
        let new = n.given_name.clone();
        if self.labels.get(&old) == Some(&id) {
            self.labels.remove(&old);
        }
        self.labels.insert(new, id);
        let mut ops = Vec::new();
        self.node_updated(now, id, false, &mut ops);
        Ok(ops)
    }

    // ---- API keys (the HTTP admin API) ----------------------------------------------------

    /// Creates an API key valid for `valid_secs`. The returned text is the only copy of the
    /// secret.
    ///
    /// # Errors
    /// [`CoordError::KeyCollision`] (try again with fresh entropy).
    pub fn create_api_key(
        &mut self,
        now: Time,
        valid_secs: i64,
        entropy: &[u8; KEY_ENTROPY],
    ) -> Result<(NewKey, Vec<StoreOp>), CoordError> {
        let new = authkey::new_api_key(entropy);
        if self.api_keys.values().any(|k| k.prefix == new.prefix) {
            return Err(CoordError::KeyCollision);
        }
        let rec = ApiKeyRecord {
            id: KeyId(self.next.api_key),
            prefix: new.prefix.clone(),
            secret_hash: new.secret_hash,
            created: now,
            expiration: add_secs(now, valid_secs.max(1)),
            revoked: false,
        };
        self.next.api_key += 1;
        self.api_keys.insert(rec.id, rec.clone());
        Ok((new, vec![StoreOp::PutApiKey(rec)]))
    }

    /// Revokes the API key with this prefix.
    ///
    /// # Errors
    /// [`CoordError::UnknownKey`].
    pub fn revoke_api_key(&mut self, prefix: &str) -> Result<Vec<StoreOp>, CoordError> {
        let k = self
            .api_keys
            .values_mut()
            .find(|k| k.prefix == prefix)
            .ok_or_else(|| CoordError::UnknownKey(prefix.to_owned()))?;
        k.revoked = true;
        Ok(vec![StoreOp::PutApiKey(k.clone())])
    }

    /// The API keys: (prefix, expiration, revoked) — never their secrets.
    pub fn api_keys(&self) -> Vec<(String, String, bool)> {
        self.api_keys
            .values()
            .map(|k| {
                (
                    k.prefix.clone(),
                    k.expiration.format().unwrap_or_default(),
                    k.revoked,
                )
            })
            .collect()
    }

    /// Whether `text` is a valid, unrevoked, unexpired API key (checked in constant time
    /// against the stored hash).
    pub fn api_key_valid(&self, text: &str, now: Time) -> bool {
        let Some((prefix, secret)) = authkey::parse_api(text) else {
            return false;
        };
        self.api_keys.values().any(|k| {
            k.prefix == prefix
                && authkey::secret_matches(secret, &k.secret_hash)
                && !k.revoked
                && !expired(k.expiration, now)
        })
    }
}
