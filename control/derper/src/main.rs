//! The `weft-derper` command: parses flags, sets up logging, runs [`weft_derper::Derper`] and
//! turns signals into actions (SIGHUP reloads the certificate, SIGTERM/SIGINT send Restarting
//! to every client and exit).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};
use weft_derp::handshake::MeshKey;
use weft_derper::{default_stun_addr, Config, Derper, TlsMode};
use weft_derphttp::DerpUrl;

#[derive(Parser)]
#[command(
    name = "weft-derper",
    version,
    about = "DERP relay and STUN server for weft and Tailscale clients"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve DERP (HTTPS, or plain HTTP with --plain-http) and STUN.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// DERP listen address.
    #[arg(long, default_value = "0.0.0.0:3340")]
    listen: SocketAddr,
    /// STUN listen address (default: the --listen IP, port 3478).
    #[arg(long)]
    stun_listen: Option<SocketAddr>,
    /// Do not serve STUN.
    #[arg(long)]
    no_stun: bool,
    /// Directory for the relay's node key and its self-signed certificate.
    #[arg(long, default_value = "/var/lib/weft-derper")]
    state_dir: PathBuf,
    /// TLS certificate chain (PEM); with --key. Without both a self-signed one is used.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Serve plain HTTP instead of TLS. Test mode only.
    #[arg(long, conflicts_with_all = ["cert", "key"])]
    plain_http: bool,
    /// File holding the region's mesh key (64 hex digits; whitespace trimmed).
    #[arg(long)]
    mesh_key_file: Option<PathBuf>,
    /// Admit only clients this URL allows (POST of the node key, answer {"Allow":true}).
    #[arg(long)]
    verify_url: Option<String>,
    /// Other servers of the region to mesh with, comma-separated: `https://HOST:PORT#sha256-raw:HEX`
    /// (the peer's printed pin) or `http://HOST:PORT`. Needs --mesh-key-file; this relay's own
    /// URL may be in the list (it is skipped).
    #[arg(long, value_delimiter = ',', value_name = "URL[,URL...]")]
    mesh_with: Vec<DerpUrl>,
}

fn main() -> anyhow::Result<()> {
    let Cmd::Serve(args) = Cli::parse().cmd;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?
        .block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mesh_key = match &args.mesh_key_file {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
            Some(MeshKey::from_hex(text.trim()).with_context(|| format!("{}", p.display()))?)
        }
        None => None,
    };
    let tls = match (args.plain_http, args.cert, args.key) {
        (true, _, _) => TlsMode::PlainHttp,
        (false, Some(cert), Some(key)) => TlsMode::Files { cert, key },
        _ => TlsMode::SelfSigned,
    };
    let plain = tls == TlsMode::PlainHttp;
    let config = Config {
        listen: args.listen,
        stun_listen: (!args.no_stun).then(|| {
            args.stun_listen
                .unwrap_or_else(|| default_stun_addr(args.listen))
        }),
        state_dir: Some(args.state_dir),
        tls,
        mesh_key,
        verify_url: args.verify_url,
        mesh_with: args.mesh_with,
        mesh_retry: weft_derper::mesh::MESH_RETRY,
    };
    let derper = Derper::start(config).await?;
    if plain {
        tracing::warn!(
            "PLAIN HTTP (--plain-http): TEST MODE ONLY. Official clients need \
             TS_DEBUG_USE_DERP_HTTP=1 to use this relay and nothing is encrypted beyond WireGuard."
        );
    }
    tracing::info!(addr = %derper.local_addr(), tls = !plain, "DERP listening");
    if let Some(s) = derper.stun_addr() {
        tracing::info!(addr = %s, "STUN listening");
    }
    if let Some(pin) = derper.cert_pin() {
        tracing::info!("certificate pin for the DERP map's CertName: {pin}");
        println!("CertName: {pin}");
    }

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match derper.reload_certs() {
                Ok(()) => tracing::info!(pin = ?derper.cert_pin(), "certificate reloaded"),
                Err(e) => tracing::warn!("certificate reload failed, keeping the old one: {e}"),
            },
        }
    }
    tracing::info!("shutting down: Restarting sent to every client");
    derper.shutdown(Duration::from_millis(500)).await;
    Ok(())
}
