//! The timer path of [`Device`]: queued handshakes and expired timers, keepalives, and
//! flushing packets that waited for a session.

use std::time::Instant;

use super::{free_indices, jitter, Device, Transmit, HANDSHAKES_PER_TIMEOUT};
use crate::messages::{TAG_LEN, TRANSPORT_HEADER_LEN};
use crate::peer::PeerId;
use crate::timers::{KEEPALIVE_TIMEOUT, MAX_TIMER_HANDSHAKES, ZERO_KEYS_AFTER};

impl Device {
    /// Processes queued handshakes (a bounded number) and expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        for _ in 0..HANDSHAKES_PER_TIMEOUT {
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            if let Err(why) = self.process_handshake(now, q.from, &q.bytes) {
                self.stats.count_rx(why);
            }
        }
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.timers.next_deadline().is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.fire_timers(id, now);
        }
    }

    pub(super) fn fire_timers(&mut self, id: PeerId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let fired = peer.timers.due(now);
        if fired.retransmit {
            if peer.timers.handshake_attempts > MAX_TIMER_HANDSHAKES {
                // Give up: drop what waited for this handshake; erase keys later.
                self.stats.tx_handshake_gave_up += 1;
                peer.staged.clear();
                peer.timers.send_keepalive = None;
                if peer.timers.zero_keys.is_none() {
                    peer.timers.zero_keys = Some(now + ZERO_KEYS_AFTER);
                }
            } else {
                peer.timers.handshake_attempts += 1;
                self.send_initiation(id, now, true);
            }
        }
        if fired.send_keepalive {
            self.send_keepalive(id, now);
            if let Some(p) = self.peers.get_mut(&id) {
                if p.timers.need_another_keepalive {
                    p.timers.need_another_keepalive = false;
                    p.timers.send_keepalive = Some(now + KEEPALIVE_TIMEOUT);
                }
            }
        }
        if fired.persistent_keepalive {
            self.send_keepalive(id, now);
        }
        if fired.new_handshake {
            self.send_initiation(id, now, false);
        }
        if fired.zero_keys {
            if let Some(p) = self.peers.get_mut(&id) {
                let freed = p.clear_sessions();
                free_indices(&mut self.indices, freed);
            }
        }
    }

    pub(super) fn send_keepalive(&mut self, id: PeerId, now: Instant) {
        let mtu = self.mtu;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let (Some(endpoint), true) = (peer.endpoint, peer.can_send(now)) else {
            self.send_initiation(id, now, false);
            return;
        };
        let mut buf = vec![0u8; TRANSPORT_HEADER_LEN + TAG_LEN];
        let Some(session) = peer.current.as_mut() else {
            return;
        };
        let Some(n) = session.seal(&mut buf, 0, mtu) else {
            return;
        };
        // A keepalive is a transport message like any other: an initiator sending on an old
        // session rekeys (the kernel's keep_key_fresh runs after every send).
        let rekey = session.wants_rekey_on_send(now);
        buf.truncate(n);
        peer.tx_bytes += n as u64;
        peer.timers.authenticated_sent();
        peer.timers.authenticated_traversal(now);
        self.transmits.push_back(Transmit {
            endpoint,
            peer: Some(id),
            payload: buf,
        });
        if rekey {
            self.send_initiation(id, now, false);
        }
    }

    /// Sends packets that waited for a session. Returns how many were sent.
    pub(super) fn flush_staged(&mut self, id: PeerId, now: Instant) -> usize {
        let mtu = self.mtu;
        let mut sent = 0;
        let Some(peer) = self.peers.get_mut(&id) else {
            return 0;
        };
        let Some(endpoint) = peer.endpoint else {
            return 0;
        };
        while peer.can_send(now) {
            let Some(packet) = peer.staged.pop_front() else {
                break;
            };
            let mut buf = vec![0u8; crate::buffer_len_for(packet.len(), mtu)];
            if let Some(body) =
                buf.get_mut(TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + packet.len())
            {
                body.copy_from_slice(&packet);
            }
            let Some(n) = peer
                .current
                .as_mut()
                .and_then(|s| s.seal(&mut buf, packet.len(), mtu))
            else {
                break;
            };
            buf.truncate(n);
            peer.tx_bytes += n as u64;
            let j = jitter(&mut self.rng);
            if !packet.is_empty() {
                peer.timers.data_sent(now, j);
            }
            peer.timers.authenticated_sent();
            peer.timers.authenticated_traversal(now);
            self.transmits.push_back(Transmit {
                endpoint,
                peer: Some(id),
                payload: buf,
            });
            sent += 1;
        }
        sent
    }
}
