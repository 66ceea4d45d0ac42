//! Counters of what the device processed and, above all, what it dropped and why.
//!
//! The kernel counts its silent drops (`rx_errors`, `rx_frame_errors`, …); we keep one counter
//! per reason so that an operator can tell a misconfigured peer (`decrypt_failed`,
//! `source_not_allowed`) from an attack (`bad_mac`, `rate_limited`).

/// Why a datagram from the network was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RxDrop {
    /// Not a well-formed WireGuard message (type, reserved bytes, length).
    Malformed,
    /// A handshake message with a wrong `mac1`.
    BadMac,
    /// A handshake message arrived while no private key is set.
    NoPrivateKey,
    /// Under load, the source exceeded its handshake rate.
    RateLimited,
    /// The handshake queue was full.
    HandshakeQueueFull,
    /// A handshake message failed to decrypt or used a low-order key.
    HandshakeFailed,
    /// An initiation from a public key that is not a peer.
    UnknownPeer,
    /// An initiation whose timestamp is not newer than the last one.
    ReplayedInitiation,
    /// Initiations from one peer closer together than 20 ms.
    InitiationFlood,
    /// A receiver index that matches no session or pending handshake.
    UnknownIndex,
    /// A cookie reply that did not decrypt or matched nothing we sent.
    BadCookieReply,
    /// Transport data on a session older than REJECT_AFTER_TIME.
    Expired,
    /// A counter already seen, too old for the window, or past the limit.
    Replay,
    /// Transport data whose tag did not verify.
    DecryptFailed,
    /// A decrypted packet that is not a well-formed IPv4 or IPv6 packet.
    BadInnerPacket,
    /// A decrypted packet whose source address is not in the peer's allowed IPs.
    SourceNotAllowed,
}

/// Why a packet from the TUN was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxDrop {
    /// Not an IPv4 or IPv6 packet, or shorter than its header.
    Malformed,
    /// No peer's allowed IPs contain the destination.
    NoRoute,
    /// The peer has no endpoint to send to.
    NoEndpoint,
    /// No session although one was expected (should not happen; counted to be sure).
    NoSession,
    /// The caller's buffer has no room for padding and tag.
    BufferTooSmall,
}

/// The device's counters. They only grow.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // Each field counts the `RxDrop`/`TxDrop` variant of the same name.
pub struct DeviceStats {
    pub rx_malformed: u64,
    pub rx_bad_mac: u64,
    pub rx_no_private_key: u64,
    pub rx_rate_limited: u64,
    pub rx_handshake_queue_full: u64,
    pub rx_handshake_failed: u64,
    pub rx_unknown_peer: u64,
    pub rx_replayed_initiation: u64,
    pub rx_initiation_flood: u64,
    pub rx_unknown_index: u64,
    pub rx_bad_cookie_reply: u64,
    pub rx_expired: u64,
    pub rx_replay: u64,
    pub rx_decrypt_failed: u64,
    pub rx_bad_inner_packet: u64,
    pub rx_source_not_allowed: u64,
    pub tx_malformed: u64,
    pub tx_no_route: u64,
    pub tx_no_endpoint: u64,
    pub tx_no_session: u64,
    pub tx_buffer_too_small: u64,
    /// Staged packets dropped because the per-peer queue was full.
    pub tx_staged_overflow: u64,
    /// Initiations sent.
    pub tx_initiations: u64,
    /// Cookie replies sent while under load.
    pub tx_cookie_replies: u64,
    /// Handshakes given up after REKEY_ATTEMPT_TIME.
    pub tx_handshake_gave_up: u64,
    /// Initiations consumed (a response was sent).
    pub rx_initiations: u64,
    /// Responses consumed (a session was established as initiator).
    pub rx_responses: u64,
    /// Cookie replies accepted.
    pub rx_cookie_replies: u64,
    /// Initiations from a key this partition does not hold, handed out to the partition that
    /// may (see `Device::set_index_partition`).
    pub rx_foreign_initiations: u64,
}

impl DeviceStats {
    pub(crate) fn count_rx(&mut self, why: RxDrop) {
        let c = match why {
            RxDrop::Malformed => &mut self.rx_malformed,
            RxDrop::BadMac => &mut self.rx_bad_mac,
            RxDrop::NoPrivateKey => &mut self.rx_no_private_key,
            RxDrop::RateLimited => &mut self.rx_rate_limited,
            RxDrop::HandshakeQueueFull => &mut self.rx_handshake_queue_full,
            RxDrop::HandshakeFailed => &mut self.rx_handshake_failed,
            RxDrop::UnknownPeer => &mut self.rx_unknown_peer,
            RxDrop::ReplayedInitiation => &mut self.rx_replayed_initiation,
            RxDrop::InitiationFlood => &mut self.rx_initiation_flood,
            RxDrop::UnknownIndex => &mut self.rx_unknown_index,
            RxDrop::BadCookieReply => &mut self.rx_bad_cookie_reply,
            RxDrop::Expired => &mut self.rx_expired,
            RxDrop::Replay => &mut self.rx_replay,
            RxDrop::DecryptFailed => &mut self.rx_decrypt_failed,
            RxDrop::BadInnerPacket => &mut self.rx_bad_inner_packet,
            RxDrop::SourceNotAllowed => &mut self.rx_source_not_allowed,
        };
        *c += 1;
    }

    pub(crate) fn count_tx(&mut self, why: TxDrop) {
        let c = match why {
            TxDrop::Malformed => &mut self.tx_malformed,
            TxDrop::NoRoute => &mut self.tx_no_route,
            TxDrop::NoEndpoint => &mut self.tx_no_endpoint,
            TxDrop::NoSession => &mut self.tx_no_session,
            TxDrop::BufferTooSmall => &mut self.tx_buffer_too_small,
        };
        *c += 1;
    }

    /// Sum of every receive-side drop counter.
    pub fn rx_dropped(&self) -> u64 {
        self.rx_malformed
            + self.rx_bad_mac
            + self.rx_no_private_key
            + self.rx_rate_limited
            + self.rx_handshake_queue_full
            + self.rx_handshake_failed
            + self.rx_unknown_peer
            + self.rx_replayed_initiation
            + self.rx_initiation_flood
            + self.rx_unknown_index
            + self.rx_bad_cookie_reply
            + self.rx_expired
            + self.rx_replay
            + self.rx_decrypt_failed
            + self.rx_bad_inner_packet
            + self.rx_source_not_allowed
    }
}
