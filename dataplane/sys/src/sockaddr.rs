//! `sockaddr_in` / `sockaddr_in6` encoded and decoded as bytes, without `unsafe`.
//!
//! Layouts (`netinet/in.h`): `sockaddr_in` = family (host order u16), port (network order),
//! address (4 bytes), 8 bytes of zero; `sockaddr_in6` = family, port, flow info (network
//! order u32), address (16 bytes), scope id (host order u32).

use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Room for either address family (`sizeof(struct sockaddr_in6)` is 28).
pub(crate) const ADDR_SPACE: usize = 32;

/// A socket address buffer aligned like `struct sockaddr_in6`, as `msg_name` wants.
#[derive(Clone, Copy)]
#[repr(C, align(4))]
pub(crate) struct RawAddr(pub(crate) [u8; ADDR_SPACE]);

// `sockaddr_in6` is the larger of the two; the buffer must hold it.
const _: () = assert!(size_of::<libc::sockaddr_in6>() <= ADDR_SPACE);
const _: () = assert!(size_of::<libc::sockaddr_in>() <= ADDR_SPACE);

/// Which address family a socket was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl RawAddr {
    pub(crate) const fn zeroed() -> Self {
        RawAddr([0; ADDR_SPACE])
    }

    /// Encodes `addr` for a socket of `family` and returns the length to pass as
    /// `msg_namelen`. On an IPv6 socket an IPv4 address becomes its v4-mapped form; on an
    /// IPv4 socket a v4-mapped IPv6 address becomes plain IPv4. `None`: a real IPv6 address
    /// cannot be sent from an IPv4 socket.
    pub(crate) fn encode(&mut self, addr: SocketAddr, family: Family) -> Option<usize> {
        let addr = for_family(addr, family)?;
        self.0 = [0; ADDR_SPACE];
        let b = &mut self.0;
        match addr {
            SocketAddr::V4(v4) => {
                put(b, 0, &family_bytes(libc::AF_INET));
                put(b, 2, &v4.port().to_be_bytes());
                put(b, 4, &v4.ip().octets());
                Some(size_of::<libc::sockaddr_in>())
            }
            SocketAddr::V6(v6) => {
                put(b, 0, &family_bytes(libc::AF_INET6));
                put(b, 2, &v6.port().to_be_bytes());
                put(b, 4, &v6.flowinfo().to_be_bytes());
                put(b, 8, &v6.ip().octets());
                put(b, 24, &v6.scope_id().to_ne_bytes());
                Some(size_of::<libc::sockaddr_in6>())
            }
        }
    }
}

/// `addr` as a socket of `family` must be given it: IPv4 becomes v4-mapped on an IPv6 socket,
/// v4-mapped IPv6 becomes IPv4 on an IPv4 socket; `None` for real IPv6 on an IPv4 socket.
pub(crate) fn for_family(addr: SocketAddr, family: Family) -> Option<SocketAddr> {
    Some(match (family, addr) {
        (Family::V6, SocketAddr::V4(v4)) => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        (Family::V4, SocketAddr::V6(v6)) => {
            let ip = v6.ip().to_ipv4_mapped()?;
            SocketAddr::V4(SocketAddrV4::new(ip, v6.port()))
        }
        (_, a) => a,
    })
}

fn family_bytes(af: libc::c_int) -> [u8; 2] {
    // AF_INET (2) and AF_INET6 (10) fit `sa_family_t`.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let f = af as libc::sa_family_t;
    f.to_ne_bytes()
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

fn arr<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at + N)?.try_into().ok()
}

/// Decodes the first `len` bytes of a `sockaddr_in` or `sockaddr_in6` as the kernel wrote them
/// (`msg_name`, or the name area of an io_uring `RECVMSG` buffer). Other families and short
/// buffers give `None`. Addresses are returned as the kernel gave them: an IPv4 peer of a
/// dual-stack IPv6 socket stays v4-mapped (`::ffff:a.b.c.d`), as with `std`'s `recv_from`.
pub(crate) fn decode(buf: &[u8]) -> Option<SocketAddr> {
    let family = libc::c_int::from(libc::sa_family_t::from_ne_bytes(arr(buf, 0)?));
    let port = u16::from_be_bytes(arr(buf, 2)?);
    match family {
        libc::AF_INET if buf.len() >= size_of::<libc::sockaddr_in>() => {
            let ip = Ipv4Addr::from(arr::<4>(buf, 4)?);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        libc::AF_INET6 if buf.len() >= size_of::<libc::sockaddr_in6>() => {
            let flow = u32::from_be_bytes(arr(buf, 4)?);
            let ip = Ipv6Addr::from(arr::<16>(buf, 8)?);
            let scope = u32::from_ne_bytes(arr(buf, 24)?);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, port, flow, scope)))
        }
        _ => None,
    }
}

/// The address family of a bound socket.
pub(crate) fn socket_family(fd: std::os::fd::BorrowedFd<'_>) -> Result<Family, crate::SysError> {
    let local = socket2::SockRef::from(&fd)
        .local_addr()
        .map_err(|e| crate::SysError::io("getsockname", e))?;
    match local.family() {
        f if libc::c_int::from(f) == libc::AF_INET => Ok(Family::V4),
        f if libc::c_int::from(f) == libc::AF_INET6 => Ok(Family::V6),
        _ => Err(crate::SysError::io(
            "getsockname",
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an IP socket"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_match_socket2() {
        let cases: [SocketAddr; 3] = [
            "192.0.2.7:51820".parse().unwrap(),
            "[2001:db8::1]:443".parse().unwrap(),
            SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 9, 0x12345, 3)),
        ];
        for addr in cases {
            let family = if addr.is_ipv4() {
                Family::V4
            } else {
                Family::V6
            };
            let mut raw = RawAddr::zeroed();
            let len = raw.encode(addr, family).unwrap();
            let reference = socket2::SockAddr::from(addr);
            assert_eq!(len, reference.len() as usize);
            assert_eq!(decode(&raw.0[..len]), Some(addr));
        }
    }

    #[test]
    fn families_are_mapped_for_the_socket() {
        let mut raw = RawAddr::zeroed();
        let v4: SocketAddr = "192.0.2.7:1".parse().unwrap();
        let len = raw.encode(v4, Family::V6).unwrap();
        assert_eq!(
            decode(&raw.0[..len]),
            Some("[::ffff:192.0.2.7]:1".parse().unwrap())
        );
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:1".parse().unwrap();
        let len = raw.encode(mapped, Family::V4).unwrap();
        assert_eq!(decode(&raw.0[..len]), Some(v4));
        assert_eq!(
            raw.encode("[2001:db8::1]:1".parse().unwrap(), Family::V4),
            None
        );
    }

    #[test]
    fn garbage_decodes_to_none() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0; 32]), None);
        let mut raw = RawAddr::zeroed();
        let len = raw
            .encode("[2001:db8::1]:1".parse().unwrap(), Family::V6)
            .unwrap();
        assert_eq!(decode(&raw.0[..len - 1]), None);
    }
}
