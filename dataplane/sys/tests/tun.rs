//! TUN tests against the real kernel (need root and /dev/net/tun). They run in the root network
//! namespace with per-process unique interface names and 198.18.0.0/15 addresses, and delete
//! every interface they create, also when they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::time::Duration;

use common::{ip, ipv4_udp, next_id, subnet, unique_name, LinkGuard};
use weft_sys::{interface_exists, poll_readable, SysError, Tun, WriteOutcome};

/// Creates a TUN named uniquely for this test, plus the guard that deletes it.
fn new_tun() -> (Tun, LinkGuard, u32) {
    let id = next_id();
    let name = unique_name(id);
    let tun = Tun::create(&name).unwrap();
    let guard = LinkGuard(tun.name().to_owned());
    (tun, guard, id)
}

/// Waits up to ~3 s for a packet on `tun` accepted by `want`, skipping others (the kernel sends
/// IPv6 router solicitations and MLD reports on a fresh interface).
fn read_matching(tun: &Tun, want: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    let mut ready = [false];
    for _ in 0..30 {
        poll_readable(&[tun.as_fd()], Some(Duration::from_millis(100)), &mut ready).unwrap();
        while let Some(n) = tun.read(&mut buf).unwrap() {
            if want(&buf[..n]) {
                return buf[..n].to_vec();
            }
        }
    }
    panic!("no matching packet arrived on {}", tun.name());
}

#[test]
fn create_reports_name_index_and_flags() {
    let (tun, _guard, id) = new_tun();
    assert_eq!(tun.name(), unique_name(id));
    assert!(interface_exists(tun.name()));
    let sysfs = std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", tun.name())).unwrap();
    assert_eq!(tun.ifindex().unwrap(), sysfs.trim().parse::<u32>().unwrap());
    // IFF_TUN | IFF_NO_PI, and no vnet header.
    let flags =
        std::fs::read_to_string(format!("/sys/class/net/{}/tun_flags", tun.name())).unwrap();
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 0x0003, libc::IFF_TUN as u32);
    assert_ne!(flags & libc::IFF_NO_PI as u32, 0);
    assert_eq!(flags & libc::IFF_VNET_HDR as u32, 0);
    common::assert_nonblocking_cloexec(tun.as_fd());
}

#[test]
fn name_template_is_resolved_by_the_kernel() {
    let template = format!("wts{}_%d", std::process::id());
    let tun = Tun::create(&template).unwrap();
    let _guard = LinkGuard(tun.name().to_owned());
    assert!(!tun.name().contains('%'), "{}", tun.name());
    assert!(tun
        .name()
        .starts_with(&format!("wts{}_", std::process::id())));
    assert!(interface_exists(tun.name()));
}

#[test]
fn mtu_round_trips_and_bad_mtus_fail() {
    let (tun, _guard, _) = new_tun();
    assert_eq!(tun.mtu().unwrap(), 1500);
    tun.set_mtu(1280).unwrap();
    assert_eq!(tun.mtu().unwrap(), 1280);
    assert!(matches!(
        tun.set_mtu(u32::MAX),
        Err(SysError::MtuOutOfRange { mtu: u32::MAX })
    ));
    // Below the kernel's minimum (68): refused by the kernel, MTU unchanged.
    match tun.set_mtu(10) {
        Err(SysError::Io { op, source }) => {
            assert_eq!(op, "SIOCSIFMTU");
            assert_eq!(source.raw_os_error(), Some(libc::EINVAL));
        }
        other => panic!("expected EINVAL, got {other:?}"),
    }
    assert_eq!(tun.mtu().unwrap(), 1280);
}

#[test]
fn read_is_none_when_empty_and_write_reports_link_down() {
    let (tun, _guard, id) = new_tun();
    let mut buf = [0u8; 1500];
    assert_eq!(tun.read(&mut buf).unwrap(), None);
    let (local, peer) = subnet(id);
    let pkt = ipv4_udp(peer, 4000, local, 4001, b"hello");
    // The interface starts down: the kernel answers EIO, which is a drop, not an error.
    assert_eq!(tun.write(&pkt).unwrap(), WriteOutcome::LinkDown);
    tun.set_up().unwrap();
    assert_eq!(tun.write(&pkt).unwrap(), WriteOutcome::Written);
    // Malformed packets (first nibble not 4 or 6) and empty writes are refused per packet.
    assert_eq!(tun.write(&[0xff; 40]).unwrap(), WriteOutcome::Rejected);
    assert_eq!(tun.write(&[]).unwrap(), WriteOutcome::Rejected);
    ip(&["link", "set", "dev", tun.name(), "down"]);
    assert_eq!(tun.write(&pkt).unwrap(), WriteOutcome::LinkDown);
    // Packets the kernel queued while the link was up (IPv6 autoconfiguration chatter) stay
    // readable after it goes down; once they are drained, reads report "nothing".
    let mut drained = 0;
    while tun.read(&mut buf).unwrap().is_some() {
        drained += 1;
        assert!(drained < 100);
    }
    assert_eq!(tun.read(&mut buf).unwrap(), None);
}

#[test]
fn packets_flow_both_ways() {
    let (tun, _guard, id) = new_tun();
    let (local, peer) = subnet(id);
    tun.set_mtu(1280).unwrap();
    tun.set_up().unwrap();
    ip(&["addr", "add", &format!("{local}/30"), "dev", tun.name()]);

    // Kernel -> TUN: a datagram to the peer address is routed into the interface.
    let sock = UdpSocket::bind((local, 0)).unwrap();
    sock.send_to(b"out through the tunnel", (peer, 9)).unwrap();
    let pkt = read_matching(&tun, |p| p.len() >= 28 && p[0] >> 4 == 4 && p[9] == 17);
    assert_eq!(&pkt[12..16], &local.octets());
    assert_eq!(&pkt[16..20], &peer.octets());
    assert_eq!(&pkt[22..24], &9u16.to_be_bytes());
    assert_eq!(&pkt[28..], b"out through the tunnel");

    // TUN -> kernel: a packet written into the interface is delivered to the local socket.
    let port = sock.local_addr().unwrap().port();
    let inbound = ipv4_udp(peer, 5555, local, port, b"in from the tunnel");
    assert_eq!(tun.write(&inbound).unwrap(), WriteOutcome::Written);
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 100];
    let (n, from) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"in from the tunnel");
    assert_eq!(from, (peer, 5555).into());
}

#[test]
fn short_buffer_truncates_to_its_length() {
    let (tun, _guard, id) = new_tun();
    let (local, peer) = subnet(id);
    tun.set_up().unwrap();
    ip(&["addr", "add", &format!("{local}/30"), "dev", tun.name()]);
    let sock = UdpSocket::bind((local, 0)).unwrap();
    sock.send_to(&[0xab; 200], (peer, 9)).unwrap();
    // Find the 228-byte datagram with a big buffer first, then send another and read it short.
    read_matching(&tun, |p| p.len() == 228);
    sock.send_to(&[0xab; 200], (peer, 9)).unwrap();
    let mut small = [0u8; 40];
    let mut ready = [false];
    let mut saw_truncated = false;
    for _ in 0..30 {
        poll_readable(&[tun.as_fd()], Some(Duration::from_millis(100)), &mut ready).unwrap();
        while let Some(n) = tun.read(&mut small).unwrap() {
            assert!(n <= small.len());
            if small[0] >> 4 == 4 && small[9] == 17 {
                assert_eq!(n, small.len());
                assert_eq!(&small[2..4], &228u16.to_be_bytes());
                saw_truncated = true;
            }
        }
        if saw_truncated {
            break;
        }
    }
    assert!(saw_truncated);
    // The rest of the packet was discarded, not left for the next read.
    assert_eq!(tun.read(&mut small).unwrap(), None);
}

#[test]
fn deleting_the_interface_wakes_poll_and_reports_gone() {
    let (tun, _guard, id) = new_tun();
    tun.set_up().unwrap();
    let name = tun.name().to_owned();
    let deleter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        ip(&["link", "del", "dev", &name]);
    });
    // A thread blocked in poll is woken by the deletion (the TUN polls as POLLERR).
    let mut ready = [false];
    let n = poll_readable(&[tun.as_fd()], Some(Duration::from_secs(10)), &mut ready).unwrap();
    deleter.join().unwrap();
    assert_eq!((n, ready), (1, [true]));
    assert!(!interface_exists(tun.name()));

    let mut buf = [0u8; 1500];
    let gone = |r: Result<_, SysError>| matches!(r, Err(SysError::InterfaceGone { .. }));
    assert!(gone(tun.read(&mut buf).map(|_| ())));
    let (local, peer) = subnet(id);
    assert!(gone(
        tun.write(&ipv4_udp(peer, 1, local, 2, b"x")).map(|_| ())
    ));
    assert!(gone(tun.mtu().map(|_| ())));
    assert!(gone(tun.set_up()));
    match tun.read(&mut buf) {
        Err(e @ SysError::InterfaceGone { .. }) => {
            assert_eq!(
                e.to_string(),
                format!("TUN interface {} is gone", tun.name())
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn interface_held_by_another_handle_is_busy() {
    let (tun, _guard, _) = new_tun();
    match Tun::create(tun.name()) {
        Err(SysError::Io { op, source }) => {
            assert_eq!(op, "TUNSETIFF");
            assert_eq!(source.raw_os_error(), Some(libc::EBUSY));
        }
        other => panic!("expected EBUSY, got {other:?}"),
    }
}

#[test]
fn non_tun_interface_name_is_refused() {
    match Tun::create("lo") {
        Err(SysError::Io {
            op: "TUNSETIFF", ..
        }) => {}
        other => panic!("expected a TUNSETIFF error, got {other:?}"),
    }
    match Tun::create("lo") {
        Err(SysError::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(libc::EINVAL)),
        other => panic!("{other:?}"),
    }
    assert!(interface_exists("lo"));
}

#[test]
fn dropping_the_handle_deletes_the_interface() {
    let (tun, _guard, _) = new_tun();
    let name = tun.name().to_owned();
    assert!(interface_exists(&name));
    drop(tun);
    assert!(!interface_exists(&name));
}

#[test]
fn bad_names_are_rejected_before_any_syscall() {
    for bad in [
        "",
        "abcdefghijklmnop",
        "a/b",
        "a b",
        "a\0b",
        "a:b",
        ".",
        "..",
        "a\tb",
    ] {
        match Tun::create(bad) {
            Err(SysError::BadInterfaceName { name, .. }) => assert_eq!(name, bad),
            other => panic!("{bad:?}: expected BadInterfaceName, got {other:?}"),
        }
        assert!(!interface_exists(bad));
    }
    assert!(!interface_exists(&unique_name(999)));
}
