//! Server counters, kept as plain integers the shell turns into `/metrics`.

use crate::frame::looks_like_disco;

/// Why the server dropped a packet (upstream's `dropReason` labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// No local client and no mesh peer has the destination key.
    UnknownDest,
    /// A packet forwarded by a mesh peer for a key not connected here.
    UnknownDestOnForward,
    /// The destination disconnected before the packet was written.
    GoneDisconnected,
    /// The destination's queue was full; its oldest packet was dropped.
    QueueHead,
    /// The destination key has several connections and none is active.
    DuplicateClient,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [Self; 5] = [
        Self::UnknownDest,
        Self::UnknownDestOnForward,
        Self::GoneDisconnected,
        Self::QueueHead,
        Self::DuplicateClient,
    ];

    /// The Prometheus label upstream uses.
    pub const fn label(self) -> &'static str {
        match self {
            Self::UnknownDest => "unknown_dest",
            Self::UnknownDestOnForward => "unknown_dest_on_fwd",
            Self::GoneDisconnected => "gone_disconnected",
            Self::QueueHead => "queue_head",
            Self::DuplicateClient => "dup_client",
        }
    }

    const fn index(self) -> usize {
        match self {
            Self::UnknownDest => 0,
            Self::UnknownDestOnForward => 1,
            Self::GoneDisconnected => 2,
            Self::QueueHead => 3,
            Self::DuplicateClient => 4,
        }
    }
}

/// Packets and bytes dropped for one reason and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DropCount {
    /// Packets.
    pub packets: u64,
    /// Payload bytes.
    pub bytes: u64,
}

/// Drops by reason and by kind (disco or other), as upstream's `derp_packets_dropped`.
#[derive(Debug, Clone, Default)]
pub struct DropStats {
    counts: [[DropCount; 2]; 5],
}

impl DropStats {
    /// Drops for `reason` of disco packets (`disco`) or of other packets.
    pub fn get(&self, reason: DropReason, disco: bool) -> DropCount {
        self.counts
            .get(reason.index())
            .and_then(|r| r.get(usize::from(disco)))
            .copied()
            .unwrap_or_default()
    }

    /// Drops for `reason`, both kinds.
    pub fn by_reason(&self, reason: DropReason) -> DropCount {
        let (a, b) = (self.get(reason, false), self.get(reason, true));
        DropCount {
            packets: a.packets + b.packets,
            bytes: a.bytes + b.bytes,
        }
    }

    /// All dropped packets.
    pub fn total_packets(&self) -> u64 {
        DropReason::ALL
            .iter()
            .map(|r| self.by_reason(*r).packets)
            .sum()
    }

    pub(crate) fn record(&mut self, reason: DropReason, packet: &[u8]) {
        if let Some(c) = self
            .counts
            .get_mut(reason.index())
            .and_then(|r| r.get_mut(usize::from(looks_like_disco(packet))))
        {
            c.packets += 1;
            c.bytes += packet.len() as u64;
        }
    }
}

/// Everything the server counts.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections accepted.
    pub accepts: u64,
    /// Connections open now.
    pub current_clients: u64,
    /// Connections that said this is their home (NotePreferred(1)).
    pub current_home_clients: u64,
    /// Keys with more than one connection now.
    pub duplicate_client_keys: u64,
    /// Connections sharing a key now.
    pub duplicate_client_conns: u64,
    /// SendPacket frames received.
    pub packets_received: u64,
    /// Packet bytes in them.
    pub bytes_received: u64,
    /// RecvPacket frames written to clients.
    pub packets_sent: u64,
    /// Packet bytes in them.
    pub bytes_sent: u64,
    /// Packets handed to a mesh peer server.
    pub packets_forwarded_out: u64,
    /// ForwardPacket frames received from mesh peers.
    pub packets_forwarded_in: u64,
    /// Dropped packets by reason and kind.
    pub drops: DropStats,
    /// PeerGone(Disconnected) frames written.
    pub peer_gone_disconnected_frames: u64,
    /// PeerGone(NotHere) frames written.
    pub peer_gone_not_here_frames: u64,
    /// Ping frames received.
    pub pings_received: u64,
    /// Pings ignored because a pong was still waiting to be written.
    pub pings_ignored: u64,
    /// Pong frames written.
    pub pongs_sent: u64,
    /// KeepAlive frames written.
    pub keep_alives_sent: u64,
    /// Frames of types the server does not handle, skipped.
    pub unknown_frames: u64,
    /// Times a client's reading paused on its receive rate limit.
    pub rate_limit_pauses: u64,
}
