//! The device's UDP socket, which the UAPI may rebind (new port) or re-mark (fwmark) while the
//! event loop uses it.
//!
//! One dual-stack socket serves IPv4 and IPv6 peers (IPv4 peers appear as v4-mapped addresses
//! and are normalized before the core sees them; `weft_sys::UdpBatch` maps them back on send). The socket is shared with the loop through an
//! `Arc`; a rebind swaps the `Arc`, and the loop picks up the new one when it is woken.

use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::sync::Arc;

/// Bytes of kernel socket buffer requested in each direction.
const SOCKET_BUFFER: usize = 4 << 20;

/// The UDP socket and its settings.
#[derive(Debug)]
pub(crate) struct WgSocket {
    socket: Arc<UdpSocket>,
    port: u16,
    fwmark: u32,
}

impl WgSocket {
    /// Binds `port` (0 for a random one).
    pub(crate) fn bind(port: u16, fwmark: u32) -> Result<Self, weft_sys::SysError> {
        let socket = weft_sys::bind_udp(port, Some(fwmark).filter(|m| *m != 0))?;
        // Larger buffers only help; a refusal (no CAP_NET_ADMIN) leaves the defaults.
        let _ = weft_sys::set_socket_buffers(socket.as_fd(), SOCKET_BUFFER);
        let local = socket
            .local_addr()
            .map_err(|source| weft_sys::SysError::Io {
                op: "getsockname",
                source,
            })?;
        Ok(Self {
            port: local.port(),
            socket: Arc::new(socket),
            fwmark,
        })
    }

    /// The socket, for the event loop.
    pub(crate) fn shared(&self) -> Arc<UdpSocket> {
        Arc::clone(&self.socket)
    }

    /// The bound port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The firewall mark (0 when none).
    pub(crate) fn fwmark(&self) -> u32 {
        self.fwmark
    }

    /// Replaces the socket with one bound to `port`. The old socket stays if binding fails.
    pub(crate) fn rebind(&mut self, port: u16) -> Result<(), weft_sys::SysError> {
        // Binding the same port twice fails, so a same-port rebind is a no-op.
        if port != 0 && port == self.port {
            return Ok(());
        }
        *self = Self::bind(port, self.fwmark)?;
        Ok(())
    }

    /// Sets or clears the firewall mark on outgoing packets.
    pub(crate) fn set_fwmark(&mut self, mark: u32) -> Result<(), weft_sys::SysError> {
        weft_sys::set_fwmark(self.socket.as_fd(), mark)?;
        self.fwmark = mark;
        Ok(())
    }
}
