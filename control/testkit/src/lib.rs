//! Test hosts for weft's interoperability tests.
//!
//! weft-wg has to work with the WireGuard implementations that already exist,
//! over a real kernel network stack: TUN devices, UDP sockets, fragmentation,
//! address changes, `wg` and `wg-quick`. Unit tests cannot show that. Like the
//! kernel's `tools/testing/selftests/wireguard/netns.sh`, this kit builds
//! throw-away hosts out of network namespaces joined by veth links, runs a
//! WireGuard implementation in each (weft-wg, wireguard-go, boringtun), and
//! drives traffic through the tunnel with ordinary tools (`ping`, `socat`).
//!
//! Such tests change global state — namespaces, interfaces, UAPI sockets in the
//! shared `/var/run/wireguard`, processes — so everything here is owned by a
//! guard that undoes it on drop, also when a test panics: [`ChildGuard`] kills
//! its process group, [`Netns`] kills what runs inside and deletes itself,
//! [`TempDir`] and [`PathGuard`] remove files. Names carry the process id, and
//! leftovers of dead test processes (say, killed by a timeout) are swept when
//! the next process creates its first namespace. Every wait is bounded in time.
//!
//! Tests need root, and should run one at a time: hold [`serial()`] for the
//! whole test (plain `cargo test`), and put them in nextest's `netns` group.
//!
//! The usual entry point is [`PairBuilder`]: two namespaces, one veth, one
//! implementation on each side, configured as each other's peer.

#![forbid(unsafe_code)]

mod flood;
mod natlab;
mod netns;
mod pair;
mod process;
pub mod tailscale;
mod traffic;
mod util;
mod wg;
mod wgquick;

pub use flood::{FloodSpec, HandshakeFlood};
pub use natlab::{NatKind, NatLab, DERP_IP, NAT_PUBLIC, STUN2_IP};
pub use netns::{veth, Netns, EXEC_TIMEOUT};
pub use pair::{
    Dir, Family, Initiator, Pair, PairBuilder, Side, DEFAULT_TUNNEL_MTU, HANDSHAKE_TIMEOUT, PORT_A,
    PORT_B, VETH,
};
pub use process::{ChildGuard, TERM_GRACE};
pub use traffic::{
    ping, ping_until_reply, ping_with, sha256_file, tcp_transfer, tcp_transfer_payload,
    transfer_timeout, Payload, PingOpts, TransferReport,
};
pub use util::{
    now, serial, unique_ifname, wait_until, PathGuard, TempDir, IFNAME_MAX, WG_SOCKET_DIR,
};
pub use wg::{
    pubkey, rss_kib, socket_path, wg_set, wg_set_private_key, wg_show_dump, write_private_file,
    Keypair, WgDump, WgImpl, WgPeerDump, START_TIMEOUT, WIREGUARD_GO,
};
pub use wgquick::{wg_quick, WgQuickConf, WgQuickFile, WG_QUICK_TIMEOUT};
