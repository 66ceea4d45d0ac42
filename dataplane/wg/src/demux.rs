//! What arrived on the shared UDP socket: STUN, disco, or WireGuard.
//!
//! Tailscale runs STUN, disco and WireGuard on one UDP port, so the receive path must split them
//! before WireGuard sees a byte (`packetLooksLike` in magicsock; `tailscale-protocol.md` §7.3).
//! The checks run in that order and are cheap: a STUN binding has a zero top two bits, the magic
//! cookie at bytes 4..8 and a binding method; disco starts with the 6-byte magic `TS💬` and is at
//! least magic + sender key long; anything else is handed to WireGuard (which drops and counts
//! what it cannot parse). WireGuard's type byte 1–4 followed by three zero bytes never matches
//! the other two.

/// The STUN magic cookie.
pub const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// The disco magic: "TS" followed by the UTF-8 speech balloon.
pub const DISCO_MAGIC: [u8; 6] = [0x54, 0x53, 0xf0, 0x9f, 0x92, 0xac];
/// Smallest datagram considered disco: magic plus the sender's 32-byte disco key.
pub const DISCO_MIN_LEN: usize = DISCO_MAGIC.len() + 32;

/// The kind of a datagram received on the shared socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// A STUN binding request or success response.
    Stun,
    /// A disco message (sealed).
    Disco,
    /// Anything else: WireGuard, or junk WireGuard will drop.
    WireGuard,
}

/// Classifies a datagram. Never panics.
pub fn classify(datagram: &[u8]) -> PacketKind {
    let stun = datagram.len() >= 20
        && datagram.first().is_some_and(|b| b & 0xc0 == 0)
        && datagram.get(1) == Some(&0x01)
        && datagram.get(4..8) == Some(&STUN_MAGIC_COOKIE[..]);
    if stun {
        PacketKind::Stun
    } else if datagram.len() >= DISCO_MIN_LEN && datagram.starts_with(&DISCO_MAGIC) {
        PacketKind::Disco
    } else {
        PacketKind::WireGuard
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kinds() {
        let mut stun = [0u8; 20];
        stun[1] = 0x01;
        stun[4..8].copy_from_slice(&STUN_MAGIC_COOKIE);
        assert_eq!(classify(&stun), PacketKind::Stun);
        stun[0] = 0x01; // success response 0x0101
        assert_eq!(classify(&stun), PacketKind::Stun);
        stun[0] = 0x40;
        assert_eq!(classify(&stun), PacketKind::WireGuard);

        let mut disco = vec![0u8; DISCO_MIN_LEN];
        disco[..6].copy_from_slice(&DISCO_MAGIC);
        assert_eq!(classify(&disco), PacketKind::Disco);
        assert_eq!(classify(&disco[..DISCO_MIN_LEN - 1]), PacketKind::WireGuard);

        let mut wg = [0u8; 148];
        wg[0] = 1;
        assert_eq!(classify(&wg), PacketKind::WireGuard);
        assert_eq!(classify(&[]), PacketKind::WireGuard);
    }

    proptest! {
        #[test]
        fn wireguard_messages_are_never_misclassified(ty in 1u8..=4, rest in proptest::collection::vec(any::<u8>(), 28..200)) {
            let mut m = vec![ty, 0, 0, 0];
            m.extend(rest);
            prop_assert_eq!(classify(&m), PacketKind::WireGuard);
        }
    }
}
