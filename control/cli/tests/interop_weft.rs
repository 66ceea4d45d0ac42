//! Interop tests of weft-wg against wireguard-go, boringtun and itself, in
//! network namespaces (see weft-testkit). They fail until weft-wg works; that
//! is the point. Each case is one line: to add a pairing, add a line.
//!
//! Run with `cargo nextest run -p weft-cli --test interop_weft`. Cargo finds
//! this file by itself, so a run without `--test` includes it too.
//!
//! The scenarios were checked by temporarily pointing `weft_path()` at
//! `/usr/bin/wireguard-go`: everything passed except what wireguard-go itself
//! cannot do — roam its IPv4 source address (it keeps sending from the removed
//! address: "network is unreachable") and keep its RSS growth under the flood
//! below 64 MiB (it grew by about 100 MiB; boringtun's did not grow).
//!
//! Needs root, `ip`, `wg`, `wg-quick`, `socat`, `ping`, `python3`, wireguard-go
//! and boringtun-cli. Tests are named `netns_*` and run one at a time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};

use common::{
    basic, big_transfer, counters, handshake_flood, mtu_case, roaming, wg_quick_case, Roam, MIB,
};
use weft_testkit::{Family::V4, Family::V6, Initiator, WgImpl};

/// The weft-wg binary built by cargo for these tests.
fn weft_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weft-wg"))
}

fn weft() -> WgImpl {
    WgImpl::Weft(weft_path())
}

/// weft with TUN offloads, GSO, GRO and mmsg batching all forced off (the fallback paths).
fn weft_plain() -> WgImpl {
    WgImpl::WeftNoOffload(weft_path())
}

/// weft on the io_uring backend (`--io uring`), whatever the default is.
fn weft_uring() -> WgImpl {
    WgImpl::WeftUring(weft_path())
}

fn go() -> WgImpl {
    WgImpl::WireguardGo
}

fn boringtun() -> WgImpl {
    WgImpl::Boringtun
}

/// One test per line: `name => scenario(args...)`.
macro_rules! cases {
    ($($name:ident => $scenario:ident($($arg:expr),* $(,)?);)*) => {
        $(
            #[test]
            fn $name() {
                $scenario($($arg),*).unwrap();
            }
        )*
    };
}

cases! {
    // Handshake from either side, outer IPv4 and IPv6, pings, 4 MiB each way.
    netns_weft_go_v4_weft_initiates => basic(weft(), go(), V4, Initiator::A);
    netns_weft_go_v4_go_initiates => basic(weft(), go(), V4, Initiator::B);
    netns_weft_go_v6_weft_initiates => basic(weft(), go(), V6, Initiator::A);
    netns_weft_go_v6_go_initiates => basic(weft(), go(), V6, Initiator::B);
    netns_weft_boringtun_v4_weft_initiates => basic(weft(), boringtun(), V4, Initiator::A);
    netns_weft_boringtun_v4_boringtun_initiates => basic(weft(), boringtun(), V4, Initiator::B);
    netns_weft_boringtun_v6_weft_initiates => basic(weft(), boringtun(), V6, Initiator::A);
    netns_weft_boringtun_v6_boringtun_initiates => basic(weft(), boringtun(), V6, Initiator::B);
    netns_weft_weft_v4 => basic(weft(), weft(), V4, Initiator::A);
    netns_weft_weft_v6_both_endpoints => basic(weft(), weft(), V6, Initiator::Both);

    // 64 MiB each way.
    netns_weft_go_64mib_v4 => big_transfer(weft(), go(), V4, 64 * MIB);
    netns_weft_go_64mib_v6 => big_transfer(weft(), go(), V6, 64 * MIB);

    // Tunnel MTU 1280 (the IPv6 minimum).
    netns_weft_go_tunnel_mtu_1280_v4 => mtu_case(weft(), go(), V4, 1500, 1280);
    netns_weft_boringtun_tunnel_mtu_1280_v6 => mtu_case(weft(), boringtun(), V6, 1500, 1280);
    netns_weft_weft_tunnel_mtu_1280_v4 => mtu_case(weft(), weft(), V4, 1500, 1280);

    // Underlay MTU 1400 < 1420 + 80: full-size tunnel packets need outer fragmentation.
    netns_weft_go_small_underlay_v4 => mtu_case(weft(), go(), V4, 1400, 1420);
    netns_weft_go_small_underlay_v6 => mtu_case(weft(), go(), V6, 1400, 1420);
    netns_weft_boringtun_small_underlay_v4 => mtu_case(weft(), boringtun(), V4, 1400, 1420);
    netns_weft_boringtun_small_underlay_v6 => mtu_case(weft(), boringtun(), V6, 1400, 1420);
    netns_weft_weft_small_underlay_v6 => mtu_case(weft(), weft(), V6, 1400, 1420);

    // Roaming: side A moves, side B must follow; weft in both roles. The roamer
    // must find its new source address itself, which wireguard-go and boringtun
    // fail to do over IPv4 (see `common::roaming`), so weft follows them only
    // over IPv6 and on port changes.
    netns_weft_roams_address_go_follows_v4 => roaming(weft(), go(), V4, Roam::Address);
    netns_weft_roams_address_go_follows_v6 => roaming(weft(), go(), V6, Roam::Address);
    netns_weft_roams_address_boringtun_follows_v4 => roaming(weft(), boringtun(), V4, Roam::Address);
    netns_weft_roams_address_weft_follows_v4 => roaming(weft(), weft(), V4, Roam::Address);
    netns_go_roams_address_weft_follows_v6 => roaming(go(), weft(), V6, Roam::Address);
    netns_weft_roams_port_go_follows => roaming(weft(), go(), V4, Roam::ListenPort);
    netns_go_roams_port_weft_follows => roaming(go(), weft(), V4, Roam::ListenPort);
    netns_boringtun_roams_port_weft_follows => roaming(boringtun(), weft(), V4, Roam::ListenPort);

    // Byte counters: tx on one side == rx on the other. (boringtun counts
    // plaintext bytes, so it has no such case.)
    netns_weft_go_byte_counters => counters(weft(), go(), V4);
    netns_go_weft_byte_counters_v6 => counters(go(), weft(), V6);
    netns_weft_weft_byte_counters => counters(weft(), weft(), V4);

    // weft-wg as wg-quick's userspace implementation (daemonizing, no -f).
    netns_wg_quick_weft_with_go_peer => wg_quick_case(Path::new(&weft_path()), go());
    netns_wg_quick_weft_with_weft_peer => wg_quick_case(Path::new(&weft_path()), weft());

    // The fallback paths (no TUN offload, no GSO/GRO, no mmsg) against real peers and against
    // the offloaded weft.
    netns_weft_plain_go_v4 => basic(weft_plain(), go(), V4, Initiator::A);
    netns_weft_plain_boringtun_v6 => basic(weft_plain(), boringtun(), V6, Initiator::B);
    netns_weft_plain_weft_v4 => basic(weft_plain(), weft(), V4, Initiator::Both);
    netns_weft_plain_go_64mib_v4 => big_transfer(weft_plain(), go(), V4, 64 * MIB);
    netns_weft_weft_64mib_v6 => big_transfer(weft(), weft(), V6, 64 * MIB);
    netns_weft_plain_go_small_underlay_v6 => mtu_case(weft_plain(), go(), V6, 1400, 1420);
    netns_weft_plain_go_byte_counters => counters(weft_plain(), go(), V4);

    // The io_uring backend against real peers, the other backend, small MTUs, roaming and a
    // flood (whichever backend is the default, both stay tested).
    netns_weft_uring_go_v4 => basic(weft_uring(), go(), V4, Initiator::A);
    netns_weft_uring_go_v6_go_initiates => basic(weft_uring(), go(), V6, Initiator::B);
    netns_weft_uring_boringtun_v6 => basic(weft_uring(), boringtun(), V6, Initiator::Both);
    netns_weft_uring_weft_64mib_v4 => big_transfer(weft_uring(), weft(), V4, 64 * MIB);
    netns_weft_uring_go_64mib_v6 => big_transfer(weft_uring(), go(), V6, 64 * MIB);
    netns_weft_uring_go_small_underlay_v4 => mtu_case(weft_uring(), go(), V4, 1400, 1420);
    netns_weft_uring_go_tunnel_mtu_1280_v6 => mtu_case(weft_uring(), go(), V6, 1500, 1280);
    netns_go_roams_port_weft_uring_follows => roaming(go(), weft_uring(), V4, Roam::ListenPort);
    netns_weft_uring_byte_counters => counters(weft_uring(), go(), V4);
    netns_weft_uring_under_handshake_flood_v4 => handshake_flood(weft_uring(), go(), V4, 64 * 1024);

    // Handshake flood at weft during a transfer from wireguard-go; RSS growth < 64 MiB.
    netns_weft_under_handshake_flood_v4 => handshake_flood(weft(), go(), V4, 64 * 1024);
    netns_weft_under_handshake_flood_v6 => handshake_flood(weft(), go(), V6, 64 * 1024);
    netns_weft_plain_under_handshake_flood_v4 => handshake_flood(weft_plain(), go(), V4, 64 * 1024);
}
