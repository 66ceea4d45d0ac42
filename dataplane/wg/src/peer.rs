//! The state WireGuard keeps per peer: configuration, handshake progress, the three session
//! slots, timers, the queue of packets waiting for a session, and counters.
//!
//! Session slots follow the kernel: `current` sends and receives; `previous` only receives (so
//! packets in flight during a rekey are not lost); `next` is a session the responder derived but
//! may not send on until the initiator proves it has it by sending data with it.
//!
//! The orchestration (who sends what, when) lives in [`crate::device`], which owns the index
//! table these slots must stay consistent with; this module only mutates the peer.

use std::collections::VecDeque;
use std::time::Instant;

use weft_keys::{PresharedKey, PublicKey};

use crate::cookie::CookieState;
use crate::crypto::Secret;
use crate::handshake::InitiatorState;
use crate::session::Session;
use crate::timers::Timers;
use crate::Endpoint;

/// Packets kept per peer while a handshake is pending (wireguard-go's bound).
pub const MAX_STAGED_PACKETS: usize = 128;

/// A peer's identity within one device: small, copyable, stable while the peer exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub(crate) u32);

impl PeerId {
    /// The raw number, for logs.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// Which session slot a receiver index belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Current,
    Previous,
    Next,
}

#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) public: PublicKey,
    pub(crate) psk: PresharedKey,
    pub(crate) static_static: Option<Secret>,
    pub(crate) cookie: CookieState,
    pub(crate) endpoint: Option<Endpoint>,
    pub(crate) initiator: Option<InitiatorState>,
    pub(crate) last_initiation_sent: Option<Instant>,
    pub(crate) last_timestamp: [u8; 12],
    pub(crate) last_initiation_consumed: Option<Instant>,
    pub(crate) current: Option<Session>,
    pub(crate) previous: Option<Session>,
    pub(crate) next: Option<Session>,
    pub(crate) timers: Timers,
    pub(crate) sent_lastminute_handshake: bool,
    pub(crate) staged: VecDeque<Vec<u8>>,
    pub(crate) rx_bytes: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) last_handshake: Option<Instant>,
}

impl Peer {
    pub(crate) fn new(public: PublicKey, static_static: Option<Secret>) -> Self {
        Self {
            cookie: CookieState::new(&public),
            public,
            psk: PresharedKey::default(),
            static_static,
            endpoint: None,
            initiator: None,
            last_initiation_sent: None,
            last_timestamp: [0; 12],
            last_initiation_consumed: None,
            current: None,
            previous: None,
            next: None,
            timers: Timers::default(),
            sent_lastminute_handshake: false,
            staged: VecDeque::new(),
            rx_bytes: 0,
            tx_bytes: 0,
            last_handshake: None,
        }
    }

    /// The session with local index `idx`, if any.
    pub(crate) fn session_mut(&mut self, idx: u32) -> Option<(Slot, &mut Session)> {
        if let Some(s) = self.current.as_mut().filter(|s| s.local_index == idx) {
            return Some((Slot::Current, s));
        }
        if let Some(s) = self.previous.as_mut().filter(|s| s.local_index == idx) {
            return Some((Slot::Previous, s));
        }
        if let Some(s) = self.next.as_mut().filter(|s| s.local_index == idx) {
            return Some((Slot::Next, s));
        }
        None
    }

    /// Installs a new session and returns the local indices it displaced (to free).
    /// As initiator the session becomes current at once; as responder it waits in `next`.
    pub(crate) fn install(&mut self, session: Session) -> Vec<u32> {
        let mut freed = Vec::new();
        let mut free = |s: Option<Session>| {
            if let Some(s) = s {
                freed.push(s.local_index);
            }
        };
        if session.initiator {
            if let Some(next) = self.next.take() {
                free(self.previous.replace(next));
                free(self.current.take());
            } else {
                free(self.previous.take());
                self.previous = self.current.take();
            }
            self.current = Some(session);
        } else {
            free(self.next.replace(session));
            free(self.previous.take());
        }
        freed
    }

    /// The responder's `next` session was used by the initiator: make it current.
    /// Returns the displaced local index, if any.
    pub(crate) fn confirm_next(&mut self) -> Option<u32> {
        let next = self.next.take()?;
        let old_prev = self.previous.take().map(|s| s.local_index);
        self.previous = self.current.take();
        self.current = Some(next);
        old_prev
    }

    /// Drops every session and handshake; returns all local indices to free.
    pub(crate) fn clear_sessions(&mut self) -> Vec<u32> {
        let mut freed: Vec<u32> = [self.current.take(), self.previous.take(), self.next.take()]
            .into_iter()
            .flatten()
            .map(|s| s.local_index)
            .collect();
        if let Some(st) = self.initiator.take() {
            freed.push(st.local_index);
        }
        freed
    }

    /// Queues a packet for when a session exists, dropping the oldest beyond the bound.
    /// Returns whether an old packet was dropped.
    pub(crate) fn stage(&mut self, packet: Vec<u8>) -> bool {
        let dropped = if self.staged.len() >= MAX_STAGED_PACKETS {
            self.staged.pop_front();
            true
        } else {
            false
        };
        self.staged.push_back(packet);
        dropped
    }

    /// Whether the current session can send at `now`.
    pub(crate) fn can_send(&self, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|s| s.can_send(now))
    }
}
