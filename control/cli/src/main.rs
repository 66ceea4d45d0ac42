//! `weft`: the command-line tool of the weft mesh VPN.

use clap::{Parser, Subcommand};

mod packet_filter;
mod wg_daemon;
mod xdp;

/// weft: a Tailscale-compatible mesh VPN with a fast userspace WireGuard data plane.
#[derive(Debug, Parser)]
#[command(name = "weft", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a userspace WireGuard device configured like wireguard-go (`wg`, `wg-quick`).
    Wg(wg_daemon::WgArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Wg(args) => wg_daemon::run(&args),
    }
}
