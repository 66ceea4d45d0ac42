//! Loopback tests of the shell: interface discovery, and two shells reaching each other.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;

use weft_magicsock::interface_endpoints;

#[test]
fn interface_endpoints_leave_out_loopback_and_follow_the_socket_family() {
    let v4 = interface_endpoints("0.0.0.0:0".parse().unwrap());
    eprintln!("{v4:?}");
    assert!(v4.iter().all(|a| a.is_ipv4() && !a.ip().is_loopback()));
    let all = weft_sys::interface_addrs().unwrap();
    let expected = all
        .iter()
        .filter(|a| a.up && !a.loopback && a.addr.is_ipv4())
        .count();
    assert_eq!(v4.len(), expected, "{all:?}");
    // A socket bound to one address offers only that one.
    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    assert!(interface_endpoints(lo).is_empty());
}
