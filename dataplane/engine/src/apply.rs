//! Applying UAPI requests to a running device, and reading its state back for `get`.
//!
//! The UAPI parser ([`crate::uapi`]) turns text into a [`SetRequest`]; this module is the one
//! place that knows how each field maps onto [`weft_wg::Device`] commands and onto the socket
//! (listen port, fwmark), in the order wireguard-go applies them.

use std::net::{IpAddr, SocketAddr};

use weft_wg::{Device, Endpoint};

use crate::socket::WgSocket;
use crate::uapi::{DeviceSnapshot, PeerSnapshot, SetRequest, UapiError};

/// Applies a `set` request. On error, the changes made before the failing field stay applied,
/// as in wireguard-go.
pub(crate) fn apply_set(
    device: &mut Device,
    socket: &mut WgSocket,
    req: SetRequest,
    now: std::time::Instant,
) -> Result<(), UapiError> {
    if let Some(key) = req.private_key {
        device.set_private_key(Some(key));
    }
    if let Some(port) = req.listen_port {
        if port == 0 || port != socket.port() {
            socket.rebind(port).map_err(|e| UapiError::AddressInUse {
                reason: e.to_string(),
            })?;
        }
    }
    if let Some(mark) = req.fwmark {
        socket.set_fwmark(mark).map_err(|e| UapiError::Io {
            reason: e.to_string(),
        })?;
    }
    if req.replace_peers {
        device.remove_all_peers();
    }
    let own = device.public_key();
    for p in req.peers {
        if Some(p.public_key) == own {
            continue;
        }
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
            device
                .add_allowed_ip(id, addr, cidr)
                .map_err(|e| UapiError::Rejected {
                    reason: e.to_string(),
                })?;
        }
        // Last, so that a keepalive sent at once already has the endpoint.
        if let Some(secs) = p.persistent_keepalive_interval {
            device.set_persistent_keepalive(id, secs, now);
        }
    }
    Ok(())
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

/// The state a `get` reports.
pub(crate) fn snapshot(device: &Device, socket: &WgSocket) -> DeviceSnapshot {
    let peers = device
        .peer_ids()
        .into_iter()
        .filter_map(|id| device.peer_info(id))
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
        private_key: device.private_key().cloned(),
        listen_port: socket.port(),
        fwmark: socket.fwmark(),
        peers,
    }
}
