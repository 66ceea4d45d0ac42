//! UDP sockets for WireGuard traffic and the socket options the data plane needs.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use crate::SysError;

/// Sets a socket's receive and send buffers to `bytes` each.
///
/// Tries `SO_RCVBUFFORCE` / `SO_SNDBUFFORCE` first, which ignore `net.core.rmem_max` /
/// `wmem_max` but need `CAP_NET_ADMIN`; when those are refused with `EPERM` it falls back to
/// `SO_RCVBUF` / `SO_SNDBUF`, which the kernel silently caps at the sysctl limits. As usual the
/// kernel doubles the value to account for bookkeeping, so reading the option back gives about
/// `2 * bytes`. Values above `i32::MAX` are capped at `i32::MAX`.
///
/// # Errors
///
/// [`SysError::Io`] if an option cannot be set at all (e.g. `fd` is not a socket).
pub fn set_socket_buffers(fd: BorrowedFd<'_>, bytes: usize) -> Result<(), SysError> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let sock = SockRef::from(&fd);
    match setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, value) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => sock
            .set_recv_buffer_size(bytes.min(i32::MAX as usize))
            .map_err(|e| SysError::io("setsockopt SO_RCVBUF", e))?,
        Err(e) => return Err(SysError::io("setsockopt SO_RCVBUFFORCE", e)),
    }
    match setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, value) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => sock
            .set_send_buffer_size(bytes.min(i32::MAX as usize))
            .map_err(|e| SysError::io("setsockopt SO_SNDBUF", e))?,
        Err(e) => return Err(SysError::io("setsockopt SO_SNDBUFFORCE", e)),
    }
    Ok(())
}

/// Binds the UDP socket WireGuard traffic goes through, on all addresses at `port` (0: the
/// kernel picks a free port; read it back with `local_addr`).
///
/// Prefers one dual-stack IPv6 socket (`[::]:port` with `IPV6_V6ONLY` off), so that IPv4 peers
/// appear as v4-mapped addresses (`::ffff:a.b.c.d`) and one socket serves both families. If IPv6
/// is unavailable (the kernel was booted with `ipv6.disable=1`, so `socket(AF_INET6)` fails with
/// `EAFNOSUPPORT`; the socket cannot be made dual-stack; or binding `[::]` fails with
/// `EADDRNOTAVAIL`), it falls back to an IPv4-only socket on `0.0.0.0:port`.
///
/// The socket is non-blocking and close-on-exec. With `Some(mark)` and a non-zero mark,
/// `SO_MARK` is set before binding (see [`set_fwmark`]); `None` and `Some(0)` both mean no mark.
///
/// # Errors
///
/// [`SysError::Io`] if the socket cannot be created or bound (`EADDRINUSE`: the port is taken;
/// this does not trigger the IPv4 fallback), or if setting the mark fails (`EPERM` without
/// `CAP_NET_ADMIN`).
pub fn bind_udp(port: u16, fwmark: Option<u32>) -> Result<UdpSocket, SysError> {
    let mark = fwmark.filter(|&m| m != 0);
    match bind_v6(port, mark, false) {
        Ok(sock) => Ok(sock),
        Err(Bind::NoIpv6(_)) => bind_v4(port, mark, false),
        Err(Bind::Failed(e)) => Err(e),
    }
}

/// Like [`bind_udp`], but only in one family (dual-stack IPv6 if `ipv6`, else IPv4), with
/// no fallback (every failure is an error), and with `SO_REUSEPORT` set before binding if
/// `reuse_port`. For sockets that must match one already bound.
pub(crate) fn bind_udp_family(
    ipv6: bool,
    port: u16,
    fwmark: Option<u32>,
    reuse_port: bool,
) -> Result<UdpSocket, SysError> {
    let mark = fwmark.filter(|&m| m != 0);
    if ipv6 {
        bind_v6(port, mark, reuse_port).map_err(|(Bind::NoIpv6(e) | Bind::Failed(e))| e)
    } else {
        bind_v4(port, mark, reuse_port)
    }
}

/// Sets the socket's firewall mark (`SO_MARK`), which routing rules and netfilter can match on,
/// e.g. to keep WireGuard's own UDP traffic out of the tunnel. `mark == 0` clears it.
///
/// # Errors
///
/// [`SysError::Io`] if `setsockopt` fails: `EPERM` without `CAP_NET_ADMIN`, `ENOTSOCK` if `fd`
/// is not a socket.
pub fn set_fwmark(fd: BorrowedFd<'_>, mark: u32) -> Result<(), SysError> {
    SockRef::from(&fd)
        .set_mark(mark)
        .map_err(|e| SysError::io("setsockopt SO_MARK", e))
}

/// How binding the IPv6 socket failed: in a way that means "no usable IPv6 here" (fall back to
/// IPv4), or for real.
enum Bind {
    NoIpv6(SysError),
    Failed(SysError),
}

fn bind_v6(port: u16, mark: Option<u32>, reuse_port: bool) -> Result<UdpSocket, Bind> {
    let sock = new_udp(Domain::IPV6).map_err(|e| match e.raw_os_error() {
        Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT) => {
            Bind::NoIpv6(SysError::io("socket(AF_INET6, SOCK_DGRAM)", e))
        }
        _ => Bind::Failed(SysError::io("socket(AF_INET6, SOCK_DGRAM)", e)),
    })?;
    // A v6-only socket would silently ignore IPv4 peers; an IPv4 socket is better than that.
    sock.set_only_v6(false)
        .map_err(|e| Bind::NoIpv6(SysError::io("setsockopt IPV6_V6ONLY", e)))?;
    if let Some(mark) = mark {
        sock.set_mark(mark)
            .map_err(|e| Bind::Failed(SysError::io("setsockopt SO_MARK", e)))?;
    }
    if reuse_port {
        sock.set_reuse_port(true)
            .map_err(|e| Bind::Failed(SysError::io("setsockopt SO_REUSEPORT", e)))?;
    }
    let addr = SockAddr::from(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)));
    sock.bind(&addr).map_err(|e| match e.raw_os_error() {
        Some(libc::EADDRNOTAVAIL) => Bind::NoIpv6(SysError::io("bind [::]", e)),
        _ => Bind::Failed(SysError::io("bind [::]", e)),
    })?;
    Ok(sock.into())
}

fn bind_v4(port: u16, mark: Option<u32>, reuse_port: bool) -> Result<UdpSocket, SysError> {
    let sock = new_udp(Domain::IPV4).map_err(|e| SysError::io("socket(AF_INET, SOCK_DGRAM)", e))?;
    if let Some(mark) = mark {
        sock.set_mark(mark)
            .map_err(|e| SysError::io("setsockopt SO_MARK", e))?;
    }
    if reuse_port {
        sock.set_reuse_port(true)
            .map_err(|e| SysError::io("setsockopt SO_REUSEPORT", e))?;
    }
    let addr = SockAddr::from(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    sock.bind(&addr)
        .map_err(|e| SysError::io("bind 0.0.0.0", e))?;
    Ok(sock.into())
}

/// A non-blocking, close-on-exec UDP socket (both flags set atomically by `socket(2)`).
fn new_udp(domain: Domain) -> io::Result<Socket> {
    Socket::new(
        domain,
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )
}

/// `setsockopt(fd, level, name, &value, sizeof(int))`.
pub(crate) fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // `size_of::<c_int>()` is 4; it fits `socklen_t`.
    #[allow(clippy::cast_possible_truncation)]
    let len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the option value pointer refers to `value`, a live c_int, and `len` is its exact
    // size; setsockopt only reads that many bytes. `fd` is borrowed, so it is open for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `getsockopt(fd, level, name, &value, &sizeof(int))`.
pub(crate) fn getsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    // `size_of::<c_int>()` is 4; it fits `socklen_t`.
    #[allow(clippy::cast_possible_truncation)]
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the value pointer refers to `value`, a live c_int, and `len` holds its exact
    // size; getsockopt writes at most that many bytes and updates `len`. `fd` is borrowed, so
    // it is open for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_mut(&mut value).cast(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fallback path cannot be reached on a kernel with IPv6 (disabling it per namespace
    /// with `disable_ipv6` still lets `[::]` bind), so exercise it directly.
    #[test]
    fn ipv4_fallback_socket_works() {
        let sock = bind_v4(0, Some(7), false).unwrap();
        let local = sock.local_addr().unwrap();
        assert!(local.is_ipv4() && local.port() != 0);
        assert_eq!(SockRef::from(&sock).mark().unwrap(), 7);
        let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        sender
            .send_to(b"v4", (Ipv4Addr::LOCALHOST, local.port()))
            .unwrap();
        sock.set_nonblocking(false).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(3)))
            .unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"v4");
        assert_eq!(from, sender.local_addr().unwrap());
    }
}
