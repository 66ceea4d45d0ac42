//! The timer path of [`Device`]: queued handshakes and expired timers, keepalives, and
//! flushing packets that waited for a session.

use std::time::Instant;

use super::handshake_path::Rejected;
use super::{
    free_indices, jitter, Device, ForeignInitiation, Transmit, HANDSHAKES_PER_TIMEOUT,
    MAX_QUEUED_HANDSHAKES,
};
use crate::messages::TRANSPORT_HEADER_LEN;
use crate::peer::PeerId;
use crate::stats::RxDrop;
use crate::timers::{KEEPALIVE_TIMEOUT, MAX_TIMER_HANDSHAKES, ZERO_KEYS_AFTER};

impl Device {
    /// Processes queued handshakes (a bounded number) and expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        for _ in 0..HANDSHAKES_PER_TIMEOUT {
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            match self.process_handshake(now, q.from, &q.bytes, q.forwarded) {
                Ok(()) => {}
                Err(Rejected::Drop(why)) => self.stats.count_rx(why),
                Err(Rejected::Foreign(initiator)) => {
                    if self.foreign.len() >= MAX_QUEUED_HANDSHAKES {
                        self.stats.count_rx(RxDrop::HandshakeQueueFull);
                    } else {
                        self.stats.rx_foreign_initiations += 1;
                        self.foreign.push_back(ForeignInitiation {
                            initiator,
                            from: q.from,
                            datagram: q.bytes,
                        });
                    }
                }
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
        match self.queue_sealed(id, now, &[]) {
            // No session (or no endpoint): a keepalive's job is done by a handshake.
            None => self.send_initiation(id, now, false),
            // A keepalive is a transport message like any other: an initiator sending on an
            // old session rekeys (the kernel's keep_key_fresh runs after every send).
            Some(true) => self.send_initiation(id, now, false),
            Some(false) => {}
        }
    }

    /// Sends packets that waited for a session, in order. Returns how many were sent.
    pub(super) fn flush_staged(&mut self, id: PeerId, now: Instant) -> usize {
        let mut sent = 0;
        let mut rekey = false;
        while let Some(packet) = self.peers.get_mut(&id).and_then(|p| p.staged.pop_front()) {
            match self.queue_sealed(id, now, &packet) {
                Some(wants_rekey) => {
                    rekey |= wants_rekey;
                    sent += 1;
                }
                None => {
                    // The session went away: keep the packet for the next one.
                    if let Some(p) = self.peers.get_mut(&id) {
                        p.staged.push_front(packet);
                    }
                    break;
                }
            }
        }
        if rekey {
            self.send_initiation(id, now, false);
        }
        sent
    }

    /// Seals `packet` (empty for a keepalive) on the peer's current session into a new
    /// datagram and queues it, with the counters and timers of an authenticated send. Returns
    /// `None` when there is no usable session or no endpoint, else whether the session now
    /// wants a rekey.
    fn queue_sealed(&mut self, id: PeerId, now: Instant, packet: &[u8]) -> Option<bool> {
        let mtu = self.mtu;
        let jitter = (!packet.is_empty()).then(|| jitter(&mut self.rng));
        let peer = self.peers.get_mut(&id)?;
        let endpoint = peer.endpoint?;
        if !peer.can_send(now) {
            return None;
        }
        let session = peer.current.as_mut()?;
        let mut buf = vec![0u8; crate::buffer_len_for(packet.len(), mtu)];
        buf.get_mut(TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + packet.len())?
            .copy_from_slice(packet);
        let n = session.seal(&mut buf, packet.len(), mtu)?;
        let rekey = session.wants_rekey_on_send(now);
        buf.truncate(n);
        peer.tx_bytes += n as u64;
        if let Some(j) = jitter {
            peer.timers.data_sent(now, j);
        }
        peer.timers.authenticated_sent();
        peer.timers.authenticated_traversal(now);
        self.transmits.push_back(Transmit {
            endpoint,
            peer: Some(id),
            payload: buf,
        });
        Some(rekey)
    }
}
