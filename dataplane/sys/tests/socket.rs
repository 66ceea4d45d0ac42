//! The WireGuard UDP socket and its options.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use socket2::SockRef;
use weft_sys::{bind_udp, poll_readable, set_fwmark, set_socket_buffers, SysError, Waker};

#[test]
fn bind_udp_is_dual_stack_and_receives_ipv4_as_mapped() {
    let sock = bind_udp(0, None).unwrap();
    let local = sock.local_addr().unwrap();
    assert_ne!(local.port(), 0);
    assert!(
        local.is_ipv6(),
        "this machine has IPv6, expected [::]: got {local}"
    );
    assert!(!SockRef::from(&sock).only_v6().unwrap());
    common::assert_nonblocking_cloexec(sock.as_fd());

    let mut buf = [0u8; 64];
    // Non-blocking: nothing there yet.
    assert_eq!(
        sock.recv_from(&mut buf).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );

    let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    sender
        .send_to(b"ping", (Ipv4Addr::LOCALHOST, local.port()))
        .unwrap();
    let mut ready = [false];
    let n = poll_readable(&[sock.as_fd()], Some(Duration::from_secs(3)), &mut ready).unwrap();
    assert_eq!(n, 1);
    let (len, from) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"ping");
    let SocketAddr::V6(from6) = from else {
        panic!("expected a v4-mapped IPv6 source, got {from}");
    };
    assert_eq!(from6.ip().to_ipv4_mapped(), Some(Ipv4Addr::LOCALHOST));
    assert_eq!(from6.port(), sender.local_addr().unwrap().port());

    // And back out to the IPv4 peer through the mapped address.
    sock.send_to(b"pong", from).unwrap();
    sender
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let (len, back) = sender.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"pong");
    assert_eq!(back.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
}

#[test]
fn bind_udp_on_a_taken_port_fails_without_falling_back() {
    let first = bind_udp(0, None).unwrap();
    let port = first.local_addr().unwrap().port();
    match bind_udp(port, None) {
        Err(SysError::Io { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(libc::EADDRINUSE));
        }
        other => panic!("expected EADDRINUSE, got {other:?}"),
    }
}

#[test]
fn fwmark_at_bind_and_later() {
    let sock = bind_udp(0, Some(0x5182)).unwrap();
    assert_eq!(SockRef::from(&sock).mark().unwrap(), 0x5182);
    set_fwmark(sock.as_fd(), 0xca6c).unwrap();
    assert_eq!(SockRef::from(&sock).mark().unwrap(), 0xca6c);
    set_fwmark(sock.as_fd(), 0).unwrap();
    assert_eq!(SockRef::from(&sock).mark().unwrap(), 0);

    let unmarked = bind_udp(0, Some(0)).unwrap();
    assert_eq!(SockRef::from(&unmarked).mark().unwrap(), 0);
}

#[test]
fn socket_buffers_are_forced_past_the_sysctl_limit() {
    let sock = bind_udp(0, None).unwrap();
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let want = (rmem_max + 1).max(4 << 20);
    set_socket_buffers(sock.as_fd(), want).unwrap();
    // As root the FORCE options apply; the kernel reports double the requested size.
    let sref = SockRef::from(&sock);
    assert_eq!(sref.recv_buffer_size().unwrap(), 2 * want);
    assert_eq!(sref.send_buffer_size().unwrap(), 2 * want);
    // Huge values are capped rather than rejected.
    set_socket_buffers(sock.as_fd(), usize::MAX).unwrap();
}

#[test]
fn socket_options_on_a_non_socket_are_errors() {
    let waker = Waker::new().unwrap();
    assert!(matches!(
        set_socket_buffers(waker.as_fd(), 1 << 20),
        Err(SysError::Io { .. })
    ));
    match set_fwmark(waker.as_fd(), 1) {
        Err(SysError::Io { op, source }) => {
            assert_eq!(op, "setsockopt SO_MARK");
            assert_eq!(source.raw_os_error(), Some(libc::ENOTSOCK));
        }
        other => panic!("expected ENOTSOCK, got {other:?}"),
    }
}
