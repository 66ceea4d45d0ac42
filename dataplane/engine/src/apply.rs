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
/// owns its destination peer. Rebuilt after every `set` (control-plane work, not per packet).
pub(crate) fn routes(parts: &[&mut Device]) -> AllowedIps<u16> {
    let mut table = AllowedIps::new();
    for (k, d) in parts.iter().enumerate() {
        let Ok(k) = u16::try_from(k) else { continue };
        for id in d.peer_ids() {
            if let Some(info) = d.peer_info(id) {
                for (addr, cidr) in info.allowed_ips {
                    // Routes are unique across parts, so this never replaces another's.
                    let _ = table.insert(addr, cidr, k);
                }
            }
        }
    }
    table
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
