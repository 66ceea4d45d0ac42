//! `weft-wg`: weft's userspace WireGuard device, a drop-in for `wireguard-go`
//! (`WG_QUICK_USERSPACE_IMPLEMENTATION=weft-wg wg-quick up CONF`).

use clap::Parser;

#[path = "../packet_filter.rs"]
mod packet_filter;
#[path = "../wg_daemon.rs"]
mod wg_daemon;
#[path = "../xdp.rs"]
mod xdp;

/// Userspace WireGuard device (wireguard-go compatible).
#[derive(Debug, Parser)]
#[command(name = "weft-wg", version)]
struct Cli {
    #[command(flatten)]
    wg: wg_daemon::WgArgs,
}

fn main() -> anyhow::Result<()> {
    wg_daemon::run(&Cli::parse().wg)
}
