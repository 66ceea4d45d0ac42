//! The kernel backend of a shard: a TUN queue, the UDP socket with `recvmmsg`/`sendmsg`
//! batching (GSO/GRO), and `ppoll` on both plus the engine's waker.

use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use weft_sys::{RecvBatch, SysError, Transmit, Tun, UdpBatch, UdpFeatures, Waker, WriteOutcome};

use super::{Ready, ShardIo};

/// A TUN queue, the (replaceable) UDP socket and the waker.
pub(crate) struct SysIo {
    tun: Tun,
    sock: Arc<UdpSocket>,
    udp: UdpBatch,
    features: UdpFeatures,
    waker: Arc<Waker>,
}

impl SysIo {
    pub(crate) fn new(
        tun: Tun,
        sock: Arc<UdpSocket>,
        features: UdpFeatures,
        waker: Arc<Waker>,
    ) -> Result<Self, SysError> {
        let udp = UdpBatch::new(&*sock, features)?;
        Ok(Self {
            tun,
            sock,
            udp,
            features,
            waker,
        })
    }

    /// Switches to `sock` if it is not the one in use (the UAPI rebound the port). GRO is a
    /// socket option, so the batching state is rebuilt for the new socket.
    pub(crate) fn use_socket(&mut self, sock: Arc<UdpSocket>) -> Result<(), SysError> {
        if Arc::ptr_eq(&sock, &self.sock) {
            return Ok(());
        }
        self.udp = UdpBatch::new(&*sock, self.features)?;
        self.sock = sock;
        Ok(())
    }
}

impl ShardIo for SysIo {
    fn wait(&mut self, timeout: Duration) -> Result<Ready, SysError> {
        let mut ready = [false; 3];
        let fds = [self.tun.as_fd(), self.sock.as_fd(), self.waker.as_fd()];
        weft_sys::poll_readable(&fds, Some(timeout), &mut ready)?;
        if ready[2] {
            let _ = self.waker.drain();
        }
        Ok(Ready {
            tun: ready[0],
            udp: ready[1],
            woken: ready[2],
        })
    }

    fn tun_read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, SysError> {
        self.tun.read(buf)
    }

    fn tun_write(&mut self, frame: &[u8]) -> Result<WriteOutcome, SysError> {
        self.tun.write(frame)
    }

    fn udp_recv(&mut self, batch: &mut RecvBatch) -> Result<usize, SysError> {
        self.udp.recv_batch(&*self.sock, batch)
    }

    fn udp_send(&mut self, transmits: &[Transmit<'_>]) -> Result<usize, SysError> {
        self.udp.send_batch(&*self.sock, transmits)
    }
}
