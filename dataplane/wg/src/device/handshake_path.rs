//! The handshake path of [`Device`]: MAC checks and cookies on arrival, the queue, consuming
//! initiations and responses, and sending initiations.
//!
//! Kept apart from the data path so that the per-packet code in `mod.rs` stays small, and
//! because everything here may allocate and may cost a Diffie-Hellman.

use std::net::SocketAddr;
use std::time::Instant;

use rand_chacha::rand_core::RngCore;

use super::{
    alloc_index, free_indices, jitter, Decapsulated, Device, QueuedHandshake, Transmit,
    MAX_QUEUED_HANDSHAKES, UNDER_LOAD_HOLD, UNDER_LOAD_QUEUE_LEN,
};
use crate::cookie::MacVerdict;
use crate::handshake::{self, HandshakeError};
use crate::messages::{Message, INITIATION_LEN, RESPONSE_LEN};
use crate::peer::PeerId;
use crate::session::Session;
use crate::stats::RxDrop;
use crate::timers::{HANDSHAKE_INITIATION_RATE, REKEY_TIMEOUT};
use crate::{crypto, Endpoint};

impl Device {
    /// Checks a handshake message's MACs and either answers with a cookie, drops it, or
    /// queues it for [`Device::handle_timeout`].
    pub(super) fn accept_handshake(
        &mut self,
        now: Instant,
        from: Endpoint,
        bytes: &[u8],
    ) -> Decapsulated {
        let under_load = self.queue.len() >= UNDER_LOAD_QUEUE_LEN;
        if under_load {
            self.under_load_until = Some(now + UNDER_LOAD_HOLD);
        }
        let under_load = self.is_under_load(now);
        let Some(checker) = self.checker.as_mut() else {
            return self.rx_drop(RxDrop::NoPrivateKey);
        };
        let udp_src: Option<SocketAddr> = match from {
            Endpoint::Udp(a) => Some(a),
            Endpoint::Derp(_) => None,
        };
        // A relay proves nothing about the source address, so cookies apply only to UDP.
        let demand_cookie = under_load && udp_src.is_some();
        let src_for_mac = udp_src.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        match checker.check(bytes, &src_for_mac, demand_cookie, now) {
            MacVerdict::Invalid => return self.rx_drop(RxDrop::BadMac),
            MacVerdict::ValidNoCookie if demand_cookie => {
                let sender = bytes
                    .get(4..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_le_bytes)
                    .unwrap_or(0);
                let rng = &mut self.rng;
                let reply = checker
                    .make_reply(bytes, sender, &src_for_mac, now, &mut |b| rng.fill_bytes(b));
                self.transmits.push_back(Transmit {
                    endpoint: from,
                    peer: None,
                    payload: reply.to_vec(),
                });
                self.stats.tx_cookie_replies += 1;
                return Decapsulated::Handshake;
            }
            MacVerdict::ValidWithCookie if demand_cookie => {
                if !self.limiter.allow(src_for_mac.ip(), now) {
                    return self.rx_drop(RxDrop::RateLimited);
                }
            }
            MacVerdict::ValidNoCookie | MacVerdict::ValidWithCookie => {}
        }
        if self.queue.len() >= MAX_QUEUED_HANDSHAKES {
            return self.rx_drop(RxDrop::HandshakeQueueFull);
        }
        self.queue.push_back(QueuedHandshake {
            from,
            bytes: bytes.to_vec(),
            forwarded: false,
        });
        Decapsulated::Handshake
    }

    /// Starts a handshake with a peer now (if one was not sent in the last REKEY_TIMEOUT).
    pub fn initiate_handshake(&mut self, id: PeerId, now: Instant) {
        self.send_initiation(id, now, false);
    }

    pub(super) fn send_initiation(&mut self, id: PeerId, now: Instant, retry: bool) {
        let Some(identity) = self.identity.as_ref() else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if !retry {
            peer.timers.handshake_attempts = 0;
        }
        if peer
            .last_initiation_sent
            .is_some_and(|t| now.saturating_duration_since(t) < REKEY_TIMEOUT)
        {
            return;
        }
        let (Some(endpoint), Some(ss)) = (peer.endpoint, peer.static_static.as_ref()) else {
            return;
        };
        if let Some(old) = peer.initiator.take() {
            self.indices.remove(&old.local_index);
        }
        let idx = alloc_index(&mut self.indices, &mut self.rng, self.partition, id);
        let mut eph = [0u8; 32];
        self.rng.fill_bytes(&mut eph);
        let (base, unix) = self.clock_base;
        let timestamp = crypto::tai64n(unix + now.saturating_duration_since(base));
        let mut msg = [0u8; INITIATION_LEN];
        match handshake::create_initiation(
            identity,
            &peer.public,
            ss,
            idx,
            eph,
            timestamp,
            &mut msg,
        ) {
            Ok(state) => peer.initiator = Some(state),
            Err(_) => {
                self.indices.remove(&idx);
                return;
            }
        }
        peer.cookie.add_macs(&mut msg, now);
        peer.last_initiation_sent = Some(now);
        peer.tx_bytes += INITIATION_LEN as u64;
        let j = jitter(&mut self.rng);
        peer.timers.authenticated_traversal(now);
        peer.timers.authenticated_sent();
        peer.timers.handshake_initiated(now, j);
        self.stats.tx_initiations += 1;
        self.transmits.push_back(Transmit {
            endpoint,
            peer: Some(id),
            payload: msg.to_vec(),
        });
    }

    pub(super) fn process_handshake(
        &mut self,
        now: Instant,
        from: Endpoint,
        bytes: &[u8],
        forwarded: bool,
    ) -> Result<(), Rejected> {
        match Message::parse(bytes) {
            Ok(Message::Initiation(m)) => self.process_initiation(now, from, &m, forwarded),
            Ok(Message::Response(m)) => Ok(self.process_response(now, from, &m)?),
            _ => Err(Rejected::Drop(RxDrop::Malformed)),
        }
    }

    pub(super) fn process_initiation(
        &mut self,
        now: Instant,
        from: Endpoint,
        msg: &crate::messages::Initiation<'_>,
        forwarded: bool,
    ) -> Result<(), Rejected> {
        let identity = self.identity.as_ref().ok_or(RxDrop::NoPrivateKey)?;
        let half = handshake::consume_initiation_begin(identity, msg).map_err(RxDrop::from)?;
        let Some(&id) = self.by_key.get(&half.initiator) else {
            return Err(if self.partition.is_some() && !forwarded {
                Rejected::Foreign(half.initiator)
            } else {
                Rejected::Drop(RxDrop::UnknownPeer)
            });
        };
        let peer = self.peers.get_mut(&id).ok_or(RxDrop::UnknownPeer)?;
        let ss = peer.static_static.as_ref().ok_or(RxDrop::UnknownPeer)?;
        let consumed = handshake::consume_initiation_finish(half, ss).map_err(RxDrop::from)?;
        if consumed.timestamp <= peer.last_timestamp {
            return Err(RxDrop::from(HandshakeError::ReplayedTimestamp).into());
        }
        if peer
            .last_initiation_consumed
            .is_some_and(|t| now.saturating_duration_since(t) <= HANDSHAKE_INITIATION_RATE)
        {
            return Err(RxDrop::from(HandshakeError::Flood).into());
        }
        peer.last_timestamp = consumed.timestamp;
        peer.last_initiation_consumed = Some(now);
        // One handshake per peer at a time, as in the kernel and wireguard-go: answering the
        // peer's initiation abandons ours. Completing both would leave each side sending on
        // its own session and receiving on the other's `previous` one, which the next rekey
        // frees while the other side still sends on it. The retransmit timer stays armed, so
        // if the peer's handshake fails, ours is retried.
        if let Some(mine) = peer.initiator.take() {
            self.indices.remove(&mine.local_index);
        }
        peer.endpoint = Some(from);
        peer.rx_bytes += INITIATION_LEN as u64;
        peer.timers.authenticated_received();
        peer.timers.authenticated_traversal(now);

        let remote_index = consumed.remote_index;
        let idx = alloc_index(&mut self.indices, &mut self.rng, self.partition, id);
        let mut eph = [0u8; 32];
        self.rng.fill_bytes(&mut eph);
        let mut out = [0u8; RESPONSE_LEN];
        let keys =
            match handshake::create_response(consumed, &peer.public, &peer.psk, idx, eph, &mut out)
            {
                Ok(k) => k,
                Err(e) => {
                    self.indices.remove(&idx);
                    return Err(RxDrop::from(e).into());
                }
            };
        peer.cookie.add_macs(&mut out, now);
        let freed = peer.install(Session::new(keys, idx, remote_index, false, now));
        free_indices(&mut self.indices, freed);
        peer.tx_bytes += RESPONSE_LEN as u64;
        peer.timers.session_derived(now);
        peer.timers.authenticated_sent();
        peer.timers.authenticated_traversal(now);
        self.stats.rx_initiations += 1;
        self.transmits.push_back(Transmit {
            endpoint: from,
            peer: Some(id),
            payload: out.to_vec(),
        });
        Ok(())
    }

    pub(super) fn process_response(
        &mut self,
        now: Instant,
        from: Endpoint,
        msg: &crate::messages::Response<'_>,
    ) -> Result<(), RxDrop> {
        let identity = self.identity.as_ref().ok_or(RxDrop::NoPrivateKey)?;
        let id = *self
            .indices
            .get(&msg.receiver())
            .ok_or(RxDrop::UnknownIndex)?;
        let peer = self.peers.get_mut(&id).ok_or(RxDrop::UnknownIndex)?;
        let state = peer
            .initiator
            .as_ref()
            .ok_or(RxDrop::from(HandshakeError::UnexpectedResponse))?;
        let keys =
            handshake::consume_response(state, identity, &peer.psk, msg).map_err(RxDrop::from)?;
        let local_index = state.local_index;
        peer.initiator = None;
        let freed = peer.install(Session::new(keys, local_index, msg.sender(), true, now));
        free_indices(&mut self.indices, freed);
        peer.endpoint = Some(from);
        peer.rx_bytes += RESPONSE_LEN as u64;
        peer.last_handshake = Some(now);
        peer.sent_lastminute_handshake = false;
        peer.timers.authenticated_received();
        peer.timers.authenticated_traversal(now);
        peer.timers.handshake_complete();
        peer.timers.session_derived(now);
        self.stats.rx_responses += 1;
        // Confirm the session to the responder: with queued data, or with a keepalive.
        if self.flush_staged(id, now) == 0 {
            self.send_keepalive(id, now);
        }
        Ok(())
    }
}

/// Why a queued handshake was not consumed.
#[derive(Debug)]
pub(super) enum Rejected {
    /// Dropped and to be counted.
    Drop(RxDrop),
    /// An initiation from a key another partition may hold.
    Foreign(weft_keys::PublicKey),
}

impl From<RxDrop> for Rejected {
    fn from(why: RxDrop) -> Self {
        Rejected::Drop(why)
    }
}

impl From<HandshakeError> for RxDrop {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::ReplayedTimestamp => RxDrop::ReplayedInitiation,
            HandshakeError::Flood => RxDrop::InitiationFlood,
            HandshakeError::UnexpectedResponse => RxDrop::UnknownIndex,
            HandshakeError::NoPrivateKey => RxDrop::NoPrivateKey,
            _ => RxDrop::HandshakeFailed,
        }
    }
}
