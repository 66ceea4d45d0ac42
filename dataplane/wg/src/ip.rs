//! The little of IP that cryptokey routing needs: the destination of an outgoing packet, and the
//! length and source of a decrypted one (decrypted packets carry padding that the IP header's
//! length field tells us to strip).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The destination address of an IPv4 or IPv6 packet, or `None` if the header is truncated or
/// the version is neither.
pub fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 => {
            let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// The length the IP header claims and the source address, for a decrypted packet. `None` if
/// the header is malformed or claims more bytes than were received.
pub fn length_and_source(packet: &[u8]) -> Option<(usize, IpAddr)> {
    match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet.first()? & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes(packet.get(2..4)?.try_into().ok()?));
            if ihl < 20 || total < ihl || total > packet.len() {
                return None;
            }
            let b: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            Some((total, IpAddr::V4(Ipv4Addr::from(b))))
        }
        6 => {
            let payload = usize::from(u16::from_be_bytes(packet.get(4..6)?.try_into().ok()?));
            let total = 40 + payload;
            if total > packet.len() {
                return None;
            }
            let b: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            Some((total, IpAddr::V6(Ipv6Addr::from(b))))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ipv4_and_ipv6_headers() {
        let mut v4 = [0u8; 28];
        v4[0] = 0x45;
        v4[2..4].copy_from_slice(&28u16.to_be_bytes());
        v4[12..16].copy_from_slice(&[10, 0, 0, 1]);
        v4[16..20].copy_from_slice(&[10, 0, 0, 2]);
        assert_eq!(destination(&v4), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(
            length_and_source(&v4),
            Some((28, "10.0.0.1".parse().unwrap()))
        );
        v4[2..4].copy_from_slice(&29u16.to_be_bytes());
        assert_eq!(length_and_source(&v4), None, "claims more than received");

        let mut v6 = [0u8; 48];
        v6[0] = 0x60;
        v6[4..6].copy_from_slice(&8u16.to_be_bytes());
        v6[23] = 1;
        v6[39] = 2;
        assert_eq!(destination(&v6), Some("::2".parse().unwrap()));
        assert_eq!(length_and_source(&v6), Some((48, "::1".parse().unwrap())));
        assert_eq!(destination(&[0x50; 40]), None);
        assert_eq!(destination(&[0x45; 19]), None);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = destination(&bytes);
            if let Some((len, _)) = length_and_source(&bytes) {
                prop_assert!(len <= bytes.len());
            }
        }
    }
}
