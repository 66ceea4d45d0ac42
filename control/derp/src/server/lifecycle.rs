//! Connections ending, mesh peers coming and going, timers and shutdown.

use std::time::{Duration, Instant};

use weft_keys::PublicKey;

use super::{ConnId, DropReason, MeshLinkId, Server};
use crate::frame::PeerGoneReason;

impl Server {
    /// Forgets a connection (closed by either side, or refused by [`Server::handle_input`]).
    /// Its queued packets count as dropped; if it was the key's last connection in the region,
    /// clients that received from it get PeerGone and watchers hear it left.
    pub fn disconnect(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.timers.remove(&(c.next_keep_alive, conn));
        self.watchers.remove(&conn);
        for q in c.packets.iter().chain(c.disco.iter()) {
            self.stats
                .drops
                .record(DropReason::GoneDisconnected, &q.data);
        }
        for src in &c.saw_src {
            if let Some(set) = self.peer_gone_watchers.get_mut(src) {
                set.remove(&conn);
                if set.is_empty() {
                    self.peer_gone_watchers.remove(src);
                }
            }
        }
        self.stats.current_clients = self.stats.current_clients.saturating_sub(1);
        if c.preferred {
            self.stats.current_home_clients = self.stats.current_home_clients.saturating_sub(1);
        }

        let key = c.key;
        let Some(set) = self.clients.get_mut(&key) else {
            return;
        };
        let before = set.conns.len();
        set.conns.retain(|x| *x != conn);
        if set.conns.len() == before {
            return;
        }
        match set.conns.as_slice() {
            [] => {
                self.clients.remove(&key);
                if !self.forwarders.contains_key(&key) {
                    self.peer_gone_from_region(key);
                }
                self.broadcast(key, None);
            }
            [remain] => {
                // Back to a single connection: it is the active one.
                set.active = Some(*remain);
                set.last = None;
                set.send_history.clear();
                self.stats.duplicate_client_keys =
                    self.stats.duplicate_client_keys.saturating_sub(1);
                self.stats.duplicate_client_conns =
                    self.stats.duplicate_client_conns.saturating_sub(2);
            }
            _ => {
                if set.last == Some(conn) {
                    set.last = None;
                }
                let conns = set.conns.clone();
                set.send_history.retain(|x| conns.contains(x));
                set.send_history.dedup();
                if set.last.is_none() {
                    set.last = set.send_history.last().copied();
                }
                set.active = set.last;
                self.stats.duplicate_client_conns =
                    self.stats.duplicate_client_conns.saturating_sub(1);
            }
        }
    }

    /// Tells every client that received packets from `key` that it left the region.
    fn peer_gone_from_region(&mut self, key: PublicKey) {
        let Some(watchers) = self.peer_gone_watchers.remove(&key) else {
            return;
        };
        for w in watchers {
            if let Some(c) = self.conns.get_mut(&w) {
                c.saw_src.remove(&key);
                c.peer_gone.push_back((key, PeerGoneReason::Disconnected));
                self.wake(w);
            }
        }
    }

    /// A mesh peer server reported `key` connected to it (PeerPresent on the link's watch).
    pub fn mesh_peer_present(&mut self, link: MeshLinkId, key: PublicKey) {
        let links = self.forwarders.entry(key).or_default();
        if !links.contains(&link) {
            links.push(link);
        }
    }

    /// A mesh peer server reported `key` gone (PeerGone on the link's watch).
    pub fn mesh_peer_gone(&mut self, link: MeshLinkId, key: PublicKey) {
        let Some(links) = self.forwarders.get_mut(&key) else {
            return;
        };
        links.retain(|l| *l != link);
        if links.is_empty() {
            self.forwarders.remove(&key);
            if !self.clients.contains_key(&key) {
                self.peer_gone_from_region(key);
            }
        }
    }

    /// The mesh link broke: everything learnt through it is forgotten (upstream's
    /// MeshConnBroke).
    pub fn mesh_link_lost(&mut self, link: MeshLinkId) {
        let keys: Vec<PublicKey> = self
            .forwarders
            .iter()
            .filter(|(_, links)| links.contains(&link))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.mesh_peer_gone(link, k);
        }
    }

    /// When [`Server::handle_timeout`] next has work (the earliest keep-alive).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Queues the keep-alives due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(t, conn)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, conn));
            if let Some(c) = self.conns.get_mut(&conn) {
                c.keep_alive_due = true;
                // A ticker: the next one is a period after this one, not after `now`.
                c.next_keep_alive = t + c.keep_alive_period;
                if c.next_keep_alive <= now {
                    c.next_keep_alive = now + c.keep_alive_period;
                }
                self.timers.insert((c.next_keep_alive, conn));
                self.wake(conn);
            }
        }
    }

    /// Queues a Restarting frame to every client: reconnect after `reconnect_in`, keep trying
    /// for `try_for`. The shell then flushes and closes the connections.
    pub fn shutdown(&mut self, reconnect_in: Duration, try_for: Duration) {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.conns.get_mut(&id) {
                c.restarting = Some((ms(reconnect_in), ms(try_for)));
                self.wake(id);
            }
        }
    }

    /// Queues a Health frame: a problem text for the client to show, or `""` to clear it.
    pub fn set_health(&mut self, conn: ConnId, problem: &str) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.health = Some(problem.as_bytes().to_vec());
            self.wake(conn);
        }
    }
}
