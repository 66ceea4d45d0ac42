//! `weft-perf derp-peer`: one DERP client process of the relayed-throughput benchmark
//! (`weft-perf relay`). The harness starts one receiver and one sender (or two `both` peers),
//! each a separate process, inside the namespace where `weft-derper` listens.
//!
//! * `recv`: connects, prints `READY` on stdout once the relay admitted it, then counts the
//!   relayed packets until nothing arrived for [`IDLE_END`] after the first one (or the bound
//!   `duration + 30 s`), and prints one JSON line ([`PeerReport`]).
//! * `send`: connects, sends `size`-byte packets to the peer as fast as the connection takes
//!   them (unpaced: frames are queued in batches of [`BATCH`] and written with one write each)
//!   for `duration`, then prints its JSON line.
//! * `both`: both at once on one connection (a bidirectional row).
//!
//! Keys are derived from small numbers (`--me 1 --peer 2`: private keys of 32 equal bytes), so
//! the harness needs to pass no key material. The payload is not a disco packet (it goes to
//! the relay's regular queue, as WireGuard data would).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use weft_keys::{PrivateKey, PublicKey};
use weft_testkit::now;

use crate::derp_conn::{DerpReader, DerpWriter};

/// Frames queued per write by a sender.
pub(crate) const BATCH: usize = 32;
/// A receiver stops this long after the last packet.
pub(crate) const IDLE_END: Duration = Duration::from_secs(2);
/// Connecting and admission must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The harness must give the start signal within this.
const GO_TIMEOUT: Duration = Duration::from_secs(60);

/// What a peer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Role {
    /// Count what arrives.
    Recv,
    /// Send unpaced.
    Send,
    /// Send and count at once.
    Both,
}

/// The arguments of `weft-perf derp-peer`.
#[derive(Debug, clap::Args)]
pub(crate) struct PeerArgs {
    /// The relay's DERP address.
    #[arg(long)]
    pub(crate) addr: SocketAddr,
    /// The relay certificate's `sha256-raw:<hex>` pin; without it, plain HTTP.
    #[arg(long)]
    pub(crate) pin: Option<String>,
    /// This peer's key number (private key = 32 bytes of this value).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..))]
    pub(crate) me: u8,
    /// The other peer's key number.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..))]
    pub(crate) peer: u8,
    /// What to do.
    #[arg(long, value_enum)]
    pub(crate) role: Role,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub(crate) duration: u64,
    /// Packet size in bytes (the DERP payload).
    #[arg(long, default_value_t = 1280, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub(crate) size: u32,
    /// After connecting, wait until this file exists before sending or timing anything.
    #[arg(long)]
    pub(crate) go_file: Option<std::path::PathBuf>,
}

/// One peer's result, printed as a JSON line.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub(crate) struct PeerReport {
    /// Packets handed to the connection.
    pub(crate) sent_packets: u64,
    /// Seconds of sending.
    pub(crate) send_s: f64,
    /// Relayed packets received from the peer.
    pub(crate) received_packets: u64,
    /// Their payload bytes.
    pub(crate) received_bytes: u64,
    /// Seconds from the first to the last packet received.
    pub(crate) receive_s: f64,
}

impl PeerReport {
    /// Receiver goodput, bits per second (payload bytes over the receiving span).
    pub(crate) fn goodput_bps(&self) -> Option<f64> {
        (self.receive_s > 0.01).then(|| self.received_bytes as f64 * 8.0 / self.receive_s)
    }
}

fn key(n: u8) -> PrivateKey {
    PrivateKey::from_bytes([n; 32])
}

/// Runs the peer; prints `READY` and then its report on stdout.
pub(crate) fn run(args: &PeerArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let report = rt.block_on(peer(args))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn peer(args: &PeerArgs) -> Result<PeerReport> {
    let me = key(args.me);
    let dst = key(args.peer).public_key();
    let (rd, wr) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        crate::derp_conn::connect(args.addr, args.pin.as_deref(), me),
    )
    .await
    .context("connecting to the relay: timeout")??;
    println!("READY");
    if let Some(go) = &args.go_file {
        crate::relay::wait_for_go(go, GO_TIMEOUT)?;
    }
    let duration = Duration::from_secs(args.duration);
    let size = usize::try_from(args.size).unwrap_or(1280);
    let bound = duration + Duration::from_secs(30);
    let mut report = PeerReport::default();
    match args.role {
        Role::Recv => {
            let _keep = wr;
            receive(rd, bound, &mut report).await?;
        }
        Role::Send => {
            let _keep = rd;
            send(wr, dst, size, duration, &mut report).await?;
        }
        Role::Both => {
            let mut r2 = PeerReport::default();
            let (a, b) = tokio::join!(
                send(wr, dst, size, duration, &mut report),
                receive(rd, bound, &mut r2)
            );
            a?;
            b?;
            report.received_packets = r2.received_packets;
            report.received_bytes = r2.received_bytes;
            report.receive_s = r2.receive_s;
        }
    }
    Ok(report)
}

async fn send(
    mut wr: DerpWriter,
    dst: PublicKey,
    size: usize,
    duration: Duration,
    report: &mut PeerReport,
) -> Result<()> {
    let pkt = vec![0x45u8; size];
    let t0 = now();
    let until = t0 + duration;
    let mut sent = 0u64;
    while now() < until {
        wr.send_batch(dst, &pkt, BATCH).await?;
        sent += BATCH as u64;
    }
    report.sent_packets = sent;
    report.send_s = t0.elapsed().as_secs_f64();
    Ok(())
}

async fn receive(mut rd: DerpReader, bound: Duration, report: &mut PeerReport) -> Result<()> {
    let start = now();
    let mut first: Option<Instant> = None;
    let mut last = start;
    loop {
        let wait = if first.is_some() {
            IDLE_END
        } else {
            bound.saturating_sub(start.elapsed())
        };
        if start.elapsed() >= bound {
            break;
        }
        let got = tokio::time::timeout(wait, rd.recv_counts()).await;
        let Ok(got) = got else { break };
        let (packets, bytes) = got?;
        if packets > 0 {
            let t = now();
            first.get_or_insert(t);
            last = t;
            report.received_packets += packets;
            report.received_bytes += bytes;
        }
    }
    if report.received_packets == 0 {
        bail!("received nothing");
    }
    report.receive_s = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    Ok(())
}
