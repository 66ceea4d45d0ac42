//! Applying UAPI requests to a running device, and reading its state back for `get`.
//!
//! The UAPI parser ([`crate::uapi`]) turns text into a [`SetRequest`]; this module is the one
//! place that knows how each field maps onto [`weft_wg::Device`] commands and onto the socket
//! (listen port, fwmark), in the order wireguard-go applies them.

use std::net::{IpAddr, SocketAddr};

use weft_keys::PublicKey;
use weft_wg::allowedips::AllowedIps;
use weft_wg::{Device, Endpoint, PeerId};

use crate::socket::SocketGroup;
use crate::uapi::{DeviceSnapshot, PeerSnapshot, SetRequest, UapiError};

/// The partition that holds (or will hold) peer `key` among `parts`: a peer stays where it was
/// added; a new one goes where a hash of its key says, so that placement needs no table.
pub(crate) fn owner_of(key: &PublicKey, parts: usize) -> usize {
    let b = key.as_bytes();
    let h = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    // `parts` is at most 64, so both conversions are lossless.
    (h % u32::try_from(parts.max(1)).unwrap_or(1)) as usize
}

/// Applies a `set` request to a device split into `parts` (one per shard; one part for an
/// unsharded device). On error, the changes made before the failing field stay applied, as in
/// wireguard-go. Device-wide settings go to every part, a peer to its owner only; an allowed
/// IP given to one peer is taken from whichever part held it before, so routes stay unique.
pub(crate) fn apply_set(
    parts: &mut [&mut Device],
    sockets: &mut SocketGroup,
    req: SetRequest,
    now: std::time::Instant,
) -> Result<(), UapiError> {
    if let Some(key) = req.private_key {
        for d in parts.iter_mut() {
            d.set_private_key(Some(key.clone()));
        }
    }
    if let Some(port) = req.listen_port {
        if port == 0 || port != sockets.port() {
            sockets.rebind(port).map_err(|e| UapiError::AddressInUse {
                reason: e.to_string(),
            })?;
        }
    }
    if let Some(mark) = req.fwmark {
        sockets.set_fwmark(mark).map_err(|e| UapiError::Io {
            reason: e.to_string(),
        })?;
    }
    if req.replace_peers {
        for d in parts.iter_mut() {
            d.remove_all_peers();
        }
    }
    let own = parts.first().and_then(|d| d.public_key());
    let n = parts.len();
    for p in req.peers {
        if Some(p.public_key) == own {
            continue;
        }
        let owner = owner_of(&p.public_key, n);
        let Some(device) = parts.get_mut(owner) else {
            continue;
        };
        let existing = device.peer_id(&p.public_key);
        if p.remove {
            if let Some(id) = existing {
                device.remove_peer(id);
            }
            continue;
        }
        if p.update_only && existing.is_none() {
            continue;
        }
        let id = device.add_peer(p.public_key);
        if let Some(psk) = p.preshared_key {
            device.set_preshared_key(id, psk);
        }
        if let Some(ep) = p.endpoint {
            device.set_endpoint(id, Some(Endpoint::Udp(normalize(ep))));
        }
        if p.replace_allowed_ips {
            device.clear_allowed_ips(id);
        }
        for (addr, cidr) in p.remove_allowed_ips {
            device.remove_allowed_ip(id, addr, cidr);
        }
        for (addr, cidr) in p.allowed_ips {
            for (k, other) in parts.iter_mut().enumerate() {
                if k != owner {
                    other.unroute(addr, cidr);
                }
            }
            add_allowed_ip(parts, owner, id, addr, cidr)?;
        }
        // Last, so that a keepalive sent at once already has the endpoint.
        if let Some(secs) = p.persistent_keepalive_interval {
            if let Some(device) = parts.get_mut(owner) {
                device.set_persistent_keepalive(id, secs, now);
            }
        }
    }
    Ok(())
}

fn add_allowed_ip(
    parts: &mut [&mut Device],
    owner: usize,
    id: PeerId,
    addr: IpAddr,
    cidr: u8,
) -> Result<(), UapiError> {
    let Some(device) = parts.get_mut(owner) else {
        return Ok(());
    };
    device
        .add_allowed_ip(id, addr, cidr)
        .map_err(|e| UapiError::Rejected {
            reason: e.to_string(),
        })
}

/// Which part routes each prefix: what a shard consults to hand a TUN frame to the shard that
/// owns its destination peer. Rebuilt after every `set` (control-plane work, not per packet):
/// one pass over each part's routes.
pub(crate) fn routes(parts: &[&mut Device]) -> AllowedIps<u16> {
    let mut table = AllowedIps::new();
    for (k, d) in parts.iter().enumerate() {
        let Ok(k) = u16::try_from(k) else { continue };
        for (addr, cidr, _) in d.routes() {
            // Routes are unique across parts, so this never replaces another's.
            let _ = table.insert(addr, cidr, k);
        }
    }
    table
}

/// Tells every part which prefixes the others route (`Device::set_routes_elsewhere`), so that
/// longest-prefix matching — for sending and for checking a decrypted packet's source — sees
/// every peer's allowed IPs, as in one undivided device.
pub(crate) fn share_routes(parts: &mut [&mut Device], table: &AllowedIps<u16>) {
    for (k, d) in parts.iter_mut().enumerate() {
        d.set_routes_elsewhere(
            table
                .iter()
                .filter(|&(_, _, &owner)| usize::from(owner) != k)
                .map(|(addr, cidr, _)| (addr, cidr)),
        );
    }
}

/// IPv4-mapped IPv6 addresses become plain IPv4, so that one peer address has one form.
pub(crate) fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// The state a `get` reports, gathered from every part.
pub(crate) fn snapshot(parts: &[&mut Device], sockets: &SocketGroup) -> DeviceSnapshot {
    let peers = parts
        .iter()
        .flat_map(|d| d.peer_ids().into_iter().filter_map(|id| d.peer_info(id)))
        .map(|info| PeerSnapshot {
            public_key: info.public_key,
            preshared_key: info.preshared_key,
            endpoint: match info.endpoint {
                Some(Endpoint::Udp(a)) => Some(a),
                _ => None,
            },
            last_handshake: info.last_handshake,
            tx_bytes: info.tx_bytes,
            rx_bytes: info.rx_bytes,
            persistent_keepalive_interval: info.persistent_keepalive,
            allowed_ips: info.allowed_ips,
        })
        .collect();
    DeviceSnapshot {
        private_key: parts.first().and_then(|d| d.private_key().cloned()),
        listen_port: sockets.port(),
        fwmark: sockets.fwmark(),
        peers,
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick their own clock
mod tests {
    use std::net::Ipv4Addr;
    use std::time::{Duration, Instant};

    use weft_keys::PrivateKey;

    use super::*;
    use crate::uapi::PeerUpdate;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    /// A public key that `owner_of` puts in part `part` of 2.
    fn key_in(part: usize, salt: u8) -> PublicKey {
        (0u8..=255)
            .map(|i| PrivateKey::from_bytes([salt ^ i; 32]).public_key())
            .find(|k| owner_of(k, 2) == part)
            .expect("a key for each part among 256")
    }

    fn partitions() -> Vec<Device> {
        let now = Instant::now();
        (0..2u32)
            .map(|k| {
                let mut d = Device::new([k as u8; 32], now, Duration::from_secs(1));
                d.set_index_partition(k, 2);
                d
            })
            .collect()
    }

    fn set(parts: &mut [Device], sockets: &mut SocketGroup, req: SetRequest) {
        let mut refs: Vec<&mut Device> = parts.iter_mut().collect();
        apply_set(&mut refs, sockets, req, Instant::now()).unwrap();
        let table = routes(&refs);
        share_routes(&mut refs, &table);
    }

    #[test]
    fn routes_are_unique_and_shared_across_parts() {
        let mut parts = partitions();
        let mut sockets = SocketGroup::bind(0, 0, 1).unwrap();
        let (a, b) = (key_in(0, 1), key_in(1, 2));
        let mut pa = PeerUpdate::new(a);
        pa.allowed_ips = vec![(v4(10, 0, 0, 0), 8)];
        let mut pb = PeerUpdate::new(b);
        pb.allowed_ips = vec![(v4(10, 1, 2, 3), 32)];
        let req = SetRequest {
            peers: vec![pa, pb],
            ..SetRequest::default()
        };
        set(&mut parts, &mut sockets, req);
        let (ida, idb) = (parts[0].peer_id(&a).unwrap(), parts[1].peer_id(&b).unwrap());
        assert!(parts[1].peer_id(&a).is_none() && parts[0].peer_id(&b).is_none());
        // Each part sees the whole table: the /32 is B's, even from A's part.
        assert_eq!(parts[0].route(v4(10, 1, 2, 3)), None);
        assert_eq!(parts[0].route(v4(10, 9, 9, 9)), Some(ida));
        assert_eq!(parts[1].route(v4(10, 1, 2, 3)), Some(idb));
        assert_eq!(parts[1].route(v4(10, 9, 9, 9)), None);

        // Moving the /32 to A takes it from B's part, and the shared view follows.
        let mut pa = PeerUpdate::new(a);
        pa.allowed_ips = vec![(v4(10, 1, 2, 3), 32)];
        let req = SetRequest {
            peers: vec![pa],
            ..SetRequest::default()
        };
        set(&mut parts, &mut sockets, req);
        assert_eq!(parts[0].route(v4(10, 1, 2, 3)), Some(ida));
        assert_eq!(parts[1].route(v4(10, 1, 2, 3)), None);
        assert!(parts[1].peer_info(idb).unwrap().allowed_ips.is_empty());
        let snap = snapshot(&parts.iter_mut().collect::<Vec<_>>(), &sockets);
        assert_eq!(snap.peers.len(), 2);
        let total: usize = snap.peers.iter().map(|p| p.allowed_ips.len()).sum();
        assert_eq!(total, 2, "{snap:?}");
    }
}
