//! The device's UDP sockets — one per shard, bound to the same port in one `SO_REUSEPORT`
//! group — which the UAPI may rebind (new port) or re-mark (fwmark) while the shards use them.
//!
//! Each socket is dual-stack (IPv4 peers appear as v4-mapped addresses and are normalized
//! before the core sees them; `weft_sys::UdpBatch` maps them back on send). With more than one
//! shard, a classic-BPF program steers every transport datagram to the socket of the shard
//! whose partition allocated its receiver index (see `weft_sys::attach_index_steering` and
//! `weft_wg::Device::set_index_partition`); initiations, STUN and disco fall back to the
//! kernel's 4-tuple hash. A rebind builds a whole new group before dropping the old one, so a
//! failed rebind leaves the device as it was.

use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::sync::Arc;

use weft_sys::SysError;

/// Bytes of kernel socket buffer requested in each direction, per socket.
const SOCKET_BUFFER: usize = 4 << 20;

/// The sockets and their settings.
#[derive(Debug)]
pub(crate) struct SocketGroup {
    sockets: Vec<Arc<UdpSocket>>,
    port: u16,
    fwmark: u32,
}

impl SocketGroup {
    /// Binds `count` sockets to `port` (0 for a random one) and attaches the steering program
    /// when `count > 1`.
    pub(crate) fn bind(port: u16, fwmark: u32, count: usize) -> Result<Self, SysError> {
        let sockets = weft_sys::bind_udp_group(port, Some(fwmark).filter(|m| *m != 0), count)?;
        if count > 1 {
            let first = sockets.first().ok_or(SysError::BadConfig {
                reason: "empty socket group",
            })?;
            let shards = u32::try_from(count).map_err(|_| SysError::BadConfig {
                reason: "too many shards",
            })?;
            weft_sys::attach_index_steering(first, shards)?;
        }
        let mut port = port;
        for s in &sockets {
            // Larger buffers only help; a refusal (no CAP_NET_ADMIN) leaves the defaults.
            let _ = weft_sys::set_socket_buffers(s.as_fd(), SOCKET_BUFFER);
            port = s
                .local_addr()
                .map_err(|source| SysError::Io {
                    op: "getsockname",
                    source,
                })?
                .port();
        }
        Ok(Self {
            sockets: sockets.into_iter().map(Arc::new).collect(),
            port,
            fwmark,
        })
    }

    /// The socket of shard `k`.
    pub(crate) fn socket(&self, k: usize) -> Option<Arc<UdpSocket>> {
        self.sockets.get(k).map(Arc::clone)
    }

    /// The bound port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The firewall mark (0 when none).
    pub(crate) fn fwmark(&self) -> u32 {
        self.fwmark
    }

    /// Replaces the group with one bound to `port`. The old group stays if binding fails.
    pub(crate) fn rebind(&mut self, port: u16) -> Result<(), SysError> {
        // Binding the same port twice fails, so a same-port rebind is a no-op.
        if port != 0 && port == self.port {
            return Ok(());
        }
        *self = Self::bind(port, self.fwmark, self.sockets.len())?;
        Ok(())
    }

    /// Sets or clears the firewall mark on outgoing packets, on every socket.
    pub(crate) fn set_fwmark(&mut self, mark: u32) -> Result<(), SysError> {
        for s in &self.sockets {
            weft_sys::set_fwmark(s.as_fd(), mark)?;
        }
        self.fwmark = mark;
        Ok(())
    }
}
