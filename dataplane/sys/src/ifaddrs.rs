//! The host's interface addresses (`getifaddrs(3)`): the local endpoints a node offers its peers
//! besides the ones STUN reports. One FFI call in, one out; the list is copied into owned values
//! before it is freed.

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::SysError;

/// One address of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddr {
    /// The interface name.
    pub name: String,
    /// The address.
    pub addr: IpAddr,
    /// `IFF_UP` is set.
    pub up: bool,
    /// `IFF_LOOPBACK` is set.
    pub loopback: bool,
}

/// Every IPv4 and IPv6 address of every interface.
///
/// # Errors
/// [`SysError::Io`] when `getifaddrs` fails.
pub fn interface_addrs() -> Result<Vec<InterfaceAddr>, SysError> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs stores the head of a list it allocates into `head`; it is freed below.
    let rc = unsafe { libc::getifaddrs(&mut head) };
    if rc != 0 {
        return Err(SysError::last_os("getifaddrs"));
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list getifaddrs returned, alive until freed.
        let ifa = unsafe { &*cur };
        if let Some(addr) = ip_of(ifa.ifa_addr) {
            let name = if ifa.ifa_name.is_null() {
                String::new()
            } else {
                // SAFETY: a non-null ifa_name is a NUL-terminated string owned by the list.
                let c = unsafe { CStr::from_ptr(ifa.ifa_name) };
                c.to_string_lossy().into_owned()
            };
            let flags = ifa.ifa_flags;
            out.push(InterfaceAddr {
                name,
                addr,
                up: flags & (libc::IFF_UP as libc::c_uint) != 0,
                loopback: flags & (libc::IFF_LOOPBACK as libc::c_uint) != 0,
            });
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The IP address in a sockaddr of the list, for the two families that have one.
fn ip_of(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: a non-null ifa_addr points to a sockaddr at least as long as its family field.
    let family = unsafe { (*sa).sa_family };
    match i32::from(family) {
        libc::AF_INET => {
            // SAFETY: the family says this sockaddr is a sockaddr_in.
            let sin = unsafe { &*sa.cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this sockaddr is a sockaddr_in6.
            let sin6 = unsafe { &*sa.cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_up() {
        let addrs = interface_addrs().unwrap();
        assert!(
            addrs
                .iter()
                .any(|a| a.loopback && a.up && a.addr == IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
    }
}
