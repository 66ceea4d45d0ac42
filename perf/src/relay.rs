//! `weft-perf relay`: relayed throughput through `weft-derper`.
//!
//! Rows (each measured `runs` times, interleaved, in a fresh network namespace per measurement,
//! medians reported):
//!
//! * `tls`: the relay (release binary, TLS with its self-signed certificate) on the namespace's
//!   loopback; two `weft-perf derp-peer` processes connect to it with the certificate pinned
//!   by `sha256-raw`, A sends 1280-byte packets to B unpaced for `duration`, B counts them.
//! * `tls-bidir`: both peers send to each other and count at once (goodput is the sum).
//! * `plain`: as `tls` with `--plain-http` (what TLS costs).
//! * `tailscaled`: two official clients (tailscaled 1.96.4) in a tailnet run by weft-coordd and
//!   this relay (namespaces A and B joined by a veth, the relay in A), forced onto the relay
//!   with `TS_DEBUG_ALWAYS_USE_DERP=1`; one iperf3 TCP stream A→B, then B→A, through the
//!   tailnet. WireGuard runs inside the DERP stream, as for any relayed peer.
//!
//! The unpaced sender offers more than one relay connection can carry, so most of what it sends
//! is dropped by the relay at the head of B's 32-packet queue (the upstream semantics); the
//! number that matters is goodput: payload bytes B received over the span it received them.
//! The relay's CPU is its `utime + stime` (all threads) from the start signal to the end of the
//! measurement; the relay's own counters come from its `/metrics` (differences over the run).
//!
//! Several relay binaries can be measured side by side (`--derper before=PATH --derper
//! after=PATH`): every row runs against each, interleaved, in the same invocation.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use weft_testkit::{now, wait_until, ChildGuard, Netns, TempDir};

use crate::derp_peer::{PeerReport, IDLE_END};
use crate::iperf::IperfReport;
use crate::machine::Machine;
use crate::procfs::{clock_ticks_per_second, ProcStat};
use crate::stats::median;

/// Where the relay listens inside its namespace (weft rows).
mod tailscaled;

const RELAY_ADDR: &str = "127.0.0.1:3340";
/// iperf3's port in the tailnet row.
const IPERF_PORT: &str = "5201";

/// A row of the table.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    clap::ValueEnum,
    Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RelayRow {
    /// weft peers, TLS, A→B.
    Tls,
    /// weft peers, TLS, A→B and B→A at once.
    TlsBidir,
    /// weft peers, plain HTTP, A→B.
    Plain,
    /// Official tailscaled nodes forced onto the relay, iperf3 TCP.
    Tailscaled,
}

impl RelayRow {
    pub(crate) const ALL: [Self; 4] = [Self::Tls, Self::TlsBidir, Self::Plain, Self::Tailscaled];

    fn label(self) -> &'static str {
        match self {
            Self::Tls => "weft peers, TLS, A→B",
            Self::TlsBidir => "weft peers, TLS, A↔B",
            Self::Plain => "weft peers, plain, A→B",
            Self::Tailscaled => "tailscaled, TLS, iperf3 TCP",
        }
    }
}

/// A relay binary under a label.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DerperBin {
    pub(crate) label: String,
    pub(crate) path: PathBuf,
    pub(crate) sha256: String,
}

/// Parses `LABEL=PATH` (or a bare path, labelled by its file name).
pub(crate) fn parse_derper(s: &str) -> Result<DerperBin> {
    let (label, path) = match s.split_once('=') {
        Some((l, p)) => (l.to_owned(), PathBuf::from(p)),
        None => {
            let p = PathBuf::from(s);
            let l = p
                .file_name()
                .map_or_else(|| s.to_owned(), |f| f.to_string_lossy().into_owned());
            (l, p)
        }
    };
    if label.is_empty() || !path.is_file() {
        bail!(
            "relay binary {} not found (label {label:?})",
            path.display()
        );
    }
    let path = std::fs::canonicalize(&path)?;
    Ok(DerperBin {
        sha256: weft_testkit::sha256_file(&path).unwrap_or_else(|e| format!("(unknown: {e:#})")),
        label,
        path,
    })
}

/// What the harness was asked to do.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RelayConfig {
    pub(crate) runs: u32,
    pub(crate) duration_s: u64,
    pub(crate) packet_size: u32,
    pub(crate) rows: Vec<RelayRow>,
    pub(crate) derpers: Vec<DerperBin>,
    /// Frames per sender write.
    pub(crate) sender_batch: usize,
}

/// The relay's counters over one measurement (after minus before).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct RelayCounters {
    pub(crate) packets_received: f64,
    pub(crate) packets_sent: f64,
    /// `derp_packets_dropped_total` by `reason,kind` label text.
    pub(crate) dropped: BTreeMap<String, f64>,
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RelaySample {
    pub(crate) run: u32,
    pub(crate) row: RelayRow,
    pub(crate) derper: String,
    pub(crate) error: Option<String>,
    /// Goodput at the receiver(s), summed, Gb/s.
    pub(crate) goodput_gbps: Option<f64>,
    /// What the sender(s) handed the connection, Gb/s (weft rows).
    pub(crate) offered_gbps: Option<f64>,
    /// The peers' reports (weft rows): A then B.
    pub(crate) peers: Vec<PeerReport>,
    /// iperf3's report (tailscaled row), A→B then B→A.
    pub(crate) iperf: Vec<IperfReport>,
    pub(crate) counters: Option<RelayCounters>,
    /// The relay's CPU seconds over the measurement.
    pub(crate) derper_cpu_s: Option<f64>,
    /// Wall seconds those CPU seconds were counted over.
    pub(crate) window_s: Option<f64>,
    /// The relay's CPU seconds per Gbit received.
    pub(crate) derper_s_per_gbit: Option<f64>,
    /// The peer processes' (or the tailscaled daemons') CPU seconds.
    pub(crate) clients_cpu_s: Option<f64>,
    /// Per-direction goodput of the tailscaled row (A→B, B→A), Gb/s.
    pub(crate) directions_gbps: Vec<f64>,
    /// The tailscaled row: each node's client metrics about DERP and sending
    /// (`tailscale debug metrics` lines containing `derp` or `send`), after minus before.
    pub(crate) client_metrics: BTreeMap<String, f64>,
}

/// Medians of one (row, relay).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RelaySummary {
    pub(crate) row: RelayRow,
    pub(crate) derper: String,
    pub(crate) goodput_gbps: Vec<f64>,
    pub(crate) goodput_median: Option<f64>,
    pub(crate) derper_cores_median: Option<f64>,
    pub(crate) derper_s_per_gbit_median: Option<f64>,
    pub(crate) delivered_percent_median: Option<f64>,
    /// The clients' CPU (peer processes, or both tailscaled), cores.
    pub(crate) clients_cores_median: Option<f64>,
    /// Row-specific medians: offered load (weft rows) or per-direction goodput and
    /// retransmits (tailscaled).
    pub(crate) detail: String,
}

/// The JSON file.
#[derive(Debug, Serialize)]
pub(crate) struct RelayResults {
    pub(crate) machine: Machine,
    pub(crate) config: RelayConfig,
    pub(crate) elapsed_s: f64,
    pub(crate) interrupted: bool,
    pub(crate) samples: Vec<RelaySample>,
    pub(crate) summary: Vec<RelaySummary>,
}

struct Ctx<'a> {
    me: PathBuf,
    weft: &'a Path,
    duration: Duration,
    size: u32,
    hz: f64,
    stop: Arc<AtomicBool>,
}

impl Ctx<'_> {
    fn check_stop(&self) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        Ok(())
    }
}

/// Runs every (run, row, relay) and writes the JSON; returns whether everything worked.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    weft: &Path,
    config: RelayConfig,
    json: &Path,
    stop: Arc<AtomicBool>,
) -> Result<bool> {
    let start = now();
    let ctx = Ctx {
        me: std::env::current_exe().context("locating weft-perf")?,
        weft,
        duration: Duration::from_secs(config.duration_s),
        size: config.packet_size,
        hz: clock_ticks_per_second()? as f64,
        stop,
    };
    let machine = Machine::collect(
        &config
            .derpers
            .first()
            .map_or_else(|| weft.to_path_buf(), |d| d.path.clone()),
    );
    let total = config.runs as usize * config.rows.len() * config.derpers.len();
    eprintln!(
        "weft-perf relay: {} run(s) × {} row(s) × {} relay binar{} = {total} measurements of {} s; about {} min",
        config.runs,
        config.rows.len(),
        config.derpers.len(),
        if config.derpers.len() == 1 { "y" } else { "ies" },
        config.duration_s,
        (total as u64 * (config.duration_s * 2 + 8)).div_ceil(60)
    );
    let mut samples = Vec::new();
    let mut interrupted = false;
    let mut n = 0;
    'runs: for run in 1..=config.runs {
        let mut rows = config.rows.clone();
        if !rows.is_empty() {
            let shift = (run as usize - 1) % rows.len();
            rows.rotate_left(shift);
        }
        for &row in &rows {
            let mut derpers = config.derpers.clone();
            if !derpers.is_empty() {
                let shift = (run as usize - 1) % derpers.len();
                derpers.rotate_left(shift);
            }
            for d in &derpers {
                if ctx.stop.load(Ordering::Relaxed) {
                    interrupted = true;
                    break 'runs;
                }
                n += 1;
                eprint!(
                    "[{n:>3}/{total} {:>4} s] run {run} · {} · {}: ",
                    start.elapsed().as_secs(),
                    row.label(),
                    d.label
                );
                let _ = std::io::stderr().flush();
                let sample = measure(&ctx, run, row, d);
                eprintln!("{}", progress(&sample));
                samples.push(sample);
            }
        }
    }
    let summary = summarize(&config, &samples);
    print!("{}", render(&config, &summary));
    let failed = samples.iter().filter(|s| s.error.is_some()).count();
    let results = RelayResults {
        machine,
        config,
        elapsed_s: start.elapsed().as_secs_f64(),
        interrupted,
        samples,
        summary,
    };
    let text = serde_json::to_string_pretty(&results)? + "\n";
    std::fs::write(json, text).with_context(|| format!("writing {}", json.display()))?;
    eprintln!("weft-perf relay: wrote {}", json.display());
    if failed > 0 {
        eprintln!("weft-perf relay: {failed} measurement(s) failed");
    }
    Ok(failed == 0 && !interrupted)
}

fn progress(s: &RelaySample) -> String {
    if let Some(e) = &s.error {
        return format!("FAILED: {}", e.lines().next().unwrap_or(""));
    }
    let mut parts = vec![format!(
        "{:.3} Gb/s goodput",
        s.goodput_gbps.unwrap_or(f64::NAN)
    )];
    if let Some(o) = s.offered_gbps {
        parts.push(format!("{o:.2} Gb/s offered"));
    }
    if let (Some(c), Some(w)) = (s.derper_cpu_s, s.window_s) {
        parts.push(format!("relay {:.2} cores", c / w.max(1e-3)));
    }
    if let Some(c) = &s.counters {
        let drops: f64 = c.dropped.values().sum();
        parts.push(format!(
            "relay dropped {drops:.0} of {:.0}",
            c.packets_received
        ));
    }
    parts.join(", ")
}

fn measure(ctx: &Ctx<'_>, run: u32, row: RelayRow, d: &DerperBin) -> RelaySample {
    let mut sample = RelaySample {
        run,
        row,
        derper: d.label.clone(),
        error: None,
        goodput_gbps: None,
        offered_gbps: None,
        peers: Vec::new(),
        iperf: Vec::new(),
        counters: None,
        derper_cpu_s: None,
        window_s: None,
        derper_s_per_gbit: None,
        clients_cpu_s: None,
        directions_gbps: Vec::new(),
        client_metrics: BTreeMap::new(),
    };
    let r = match row {
        RelayRow::Tailscaled => tailscaled::measure_tailscaled(ctx, d, &mut sample),
        _ => measure_weft(ctx, row, d, &mut sample),
    };
    if let Err(e) = r {
        sample.error = Some(format!("{e:#}"));
    }
    if let (Some(cpu), Some(g), Some(w)) =
        (sample.derper_cpu_s, sample.goodput_gbps, sample.window_s)
    {
        let gbit = g * w;
        sample.derper_s_per_gbit = (gbit > 1e-3).then(|| cpu / gbit);
    }
    sample
}

/// Starts the relay in `ns` and returns it with its pin (TLS) once it listens.
fn start_relay(
    ns: &Netns,
    d: &DerperBin,
    dir: &TempDir,
    plain: bool,
) -> Result<(ChildGuard, Option<String>)> {
    let state = dir.join("derper");
    let bin = d.path.to_string_lossy().into_owned();
    let state_s = state.to_string_lossy().into_owned();
    let mut argv = vec![
        bin.as_str(),
        "serve",
        "--listen",
        RELAY_ADDR,
        "--no-stun",
        "--state-dir",
        state_s.as_str(),
    ];
    if plain {
        argv.push("--plain-http");
    }
    let child = ns.spawn(&format!("weft-derper ({})", d.label), &argv)?;
    let mut pin = None;
    wait_until(
        "the relay to listen",
        Duration::from_secs(15),
        Duration::from_millis(50),
        || {
            let log = child.log();
            if plain {
                Ok(log.contains("DERP listening"))
            } else {
                pin = log
                    .lines()
                    .find_map(|l| l.strip_prefix("CertName: ").map(|p| p.trim().to_owned()));
                Ok(pin.is_some())
            }
        },
    )
    .map_err(|e| anyhow!("{e:#}; relay log:\n{}", child.log_tail(20)))?;
    Ok((child, pin))
}

/// The relay's `/metrics`, parsed into `name{labels}` → value.
fn scrape(ns: &Netns, addr: &str, tls: bool) -> Result<BTreeMap<String, f64>> {
    let url = format!("{}://{addr}/metrics", if tls { "https" } else { "http" });
    let text = ns.run(&["curl", "-sSk", "--max-time", "5", &url])?;
    let m = parse_metrics(&text);
    if m.is_empty() {
        bail!("no metrics from {url}");
    }
    Ok(m)
}

/// Prometheus text → `name{labels}` → value (comments and unparsable lines skipped).
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.rsplit_once(' ') {
            if let Ok(v) = v.trim().parse::<f64>() {
                m.insert(k.trim().to_owned(), v);
            }
        }
    }
    m
}

fn counters(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> RelayCounters {
    let diff =
        |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    let mut dropped = BTreeMap::new();
    for k in after.keys() {
        if let Some(labels) = k.strip_prefix("derp_packets_dropped_total{") {
            let d = diff(k);
            if d > 0.0 {
                dropped.insert(labels.trim_end_matches('}').to_owned(), d);
            }
        }
    }
    RelayCounters {
        packets_received: diff("derp_packets_received_total"),
        packets_sent: diff("derp_packets_sent_total"),
        dropped,
    }
}

fn ticks(pid: u32) -> Result<u64> {
    Ok(ProcStat::read(pid)?.ticks())
}

/// Waits until the guarded process has exited (not reaped) and returns its final CPU ticks.
fn final_ticks(ctx: &Ctx<'_>, g: &ChildGuard, timeout: Duration) -> Result<u64> {
    let t0 = now();
    loop {
        let st = ProcStat::read(g.pid()).with_context(|| format!("CPU time of {}", g.label()))?;
        if st.is_zombie() {
            return Ok(st.ticks());
        }
        if t0.elapsed() > timeout {
            bail!(
                "{} still running after {timeout:?}:\n{}",
                g.label(),
                g.log_tail(10)
            );
        }
        ctx.check_stop()?;
        sleep(Duration::from_millis(20));
    }
}

fn measure_weft(
    ctx: &Ctx<'_>,
    row: RelayRow,
    d: &DerperBin,
    sample: &mut RelaySample,
) -> Result<()> {
    let plain = row == RelayRow::Plain;
    let ns = Netns::new("wprl")?;
    let dir = TempDir::new("perf-relay")?;
    let (mut relay, pin) = start_relay(&ns, d, &dir, plain)?;
    let go = dir.join("go");
    let me = ctx.me.to_string_lossy().into_owned();
    let go_s = go.to_string_lossy().into_owned();
    let secs = ctx.duration.as_secs().to_string();
    let size = ctx.size.to_string();
    let roles: [(&str, u8, u8); 2] = if row == RelayRow::TlsBidir {
        [("both", 1, 2), ("both", 2, 1)]
    } else {
        [("send", 1, 2), ("recv", 2, 1)]
    };
    // Receiver first, so the sender never sends to an unknown key.
    let mut peers: Vec<ChildGuard> = Vec::new();
    for (role, mine, other) in roles.iter().rev() {
        let (mine, other) = (mine.to_string(), other.to_string());
        let mut argv = vec![
            me.as_str(),
            "derp-peer",
            "--addr",
            RELAY_ADDR,
            "--me",
            &mine,
            "--peer",
            &other,
            "--role",
            role,
            "--duration",
            &secs,
            "--size",
            &size,
            "--go-file",
            &go_s,
        ];
        if let Some(p) = &pin {
            argv.extend(["--pin", p.as_str()]);
        }
        let g = ns.spawn(&format!("derp-peer {mine} ({role})"), &argv)?;
        wait_until(
            "a peer to be admitted",
            Duration::from_secs(15),
            Duration::from_millis(20),
            || {
                if g.log().lines().any(|l| l == "READY") {
                    return Ok(true);
                }
                ctx.check_stop()?;
                Ok(false)
            },
        )
        .map_err(|e| {
            anyhow!(
                "{e:#}; peer log:\n{}\nrelay log:\n{}",
                g.log_tail(10),
                relay.log_tail(10)
            )
        })?;
        peers.push(g);
    }
    peers.reverse(); // A (key 1) first
    let m0 = scrape(&ns, RELAY_ADDR, !plain)?;
    let relay0 = ticks(relay.pid())?;
    let t0 = now();
    std::fs::write(&go, b"go\n").context("writing the start file")?;
    let bound = ctx.duration + IDLE_END + Duration::from_secs(30);
    let mut peer_ticks = 0;
    for g in &peers {
        peer_ticks += final_ticks(ctx, g, bound.saturating_sub(t0.elapsed()))?;
    }
    let relay1 = ticks(relay.pid())?;
    let window = t0.elapsed();
    let m1 = scrape(&ns, RELAY_ADDR, !plain)?;
    let mut reports = Vec::new();
    for g in &mut peers {
        let status = g.wait_timeout(Duration::from_secs(5))?;
        let log = g.log();
        let line = log.lines().rev().find(|l| l.starts_with('{'));
        let Some(line) = line else {
            bail!(
                "{} ({status}) reported nothing:\n{}",
                g.label(),
                g.log_tail(10)
            );
        };
        reports.push(serde_json::from_str::<PeerReport>(line).context("peer report")?);
    }
    if !relay.is_running() {
        bail!("the relay exited:\n{}", relay.log_tail(20));
    }
    let goodput: f64 = reports.iter().filter_map(PeerReport::goodput_bps).sum();
    let offered: f64 = reports
        .iter()
        .filter(|r| r.send_s > 0.0)
        .map(|r| r.sent_packets as f64 * f64::from(ctx.size) * 8.0 / r.send_s)
        .sum();
    sample.goodput_gbps = Some(goodput / 1e9);
    sample.offered_gbps = Some(offered / 1e9);
    sample.peers = reports;
    sample.counters = Some(counters(&m0, &m1));
    sample.derper_cpu_s = Some(relay1.saturating_sub(relay0) as f64 / ctx.hz);
    // The CPU window ends with the receivers' idle tail, when the relay has nothing to do;
    // count the relay's load over the sending time.
    sample.window_s = Some(ctx.duration.as_secs_f64().min(window.as_secs_f64()));
    sample.clients_cpu_s = Some(peer_ticks as f64 / ctx.hz);
    Ok(())
}

fn summarize(config: &RelayConfig, samples: &[RelaySample]) -> Vec<RelaySummary> {
    let mut out = Vec::new();
    for &row in &config.rows {
        for d in &config.derpers {
            let ok: Vec<&RelaySample> = samples
                .iter()
                .filter(|s| s.row == row && s.derper == d.label && s.error.is_none())
                .collect();
            let goodput: Vec<f64> = ok.iter().filter_map(|s| s.goodput_gbps).collect();
            let cores: Vec<f64> = ok
                .iter()
                .filter_map(|s| Some(s.derper_cpu_s? / s.window_s?.max(1e-3)))
                .collect();
            let per: Vec<f64> = ok.iter().filter_map(|s| s.derper_s_per_gbit).collect();
            let delivered: Vec<f64> = ok
                .iter()
                .filter_map(|s| {
                    let c = s.counters.as_ref()?;
                    (c.packets_received > 0.0).then(|| 100.0 * c.packets_sent / c.packets_received)
                })
                .collect();
            let clients: Vec<f64> = ok
                .iter()
                .filter_map(|s| Some(s.clients_cpu_s? / s.window_s?.max(1e-3)))
                .collect();
            let g = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
            let detail = if row == RelayRow::Tailscaled {
                let dir = |i: usize| {
                    let v: Vec<f64> = ok
                        .iter()
                        .filter_map(|s| s.directions_gbps.get(i).copied())
                        .collect();
                    median(&v)
                };
                let retr: Vec<f64> = ok
                    .iter()
                    .filter_map(|s| {
                        let r: Option<u64> = s.iperf.iter().map(|r| r.retransmits).sum();
                        r.map(|r| r as f64)
                    })
                    .collect();
                format!(
                    "A→B {} B→A {} Gb/s, {} retransmits",
                    g(dir(0)),
                    g(dir(1)),
                    median(&retr).map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
                )
            } else {
                let offered: Vec<f64> = ok.iter().filter_map(|s| s.offered_gbps).collect();
                format!("offered {} Gb/s", g(median(&offered)))
            };
            out.push(RelaySummary {
                row,
                derper: d.label.clone(),
                goodput_median: median(&goodput),
                goodput_gbps: goodput,
                derper_cores_median: median(&cores),
                derper_s_per_gbit_median: median(&per),
                delivered_percent_median: median(&delivered),
                clients_cores_median: median(&clients),
                detail,
            });
        }
    }
    out
}

fn render(config: &RelayConfig, summary: &[RelaySummary]) -> String {
    let f = |x: Option<f64>, p: usize| x.map_or_else(|| "-".to_owned(), |v| format!("{v:.p$}"));
    let mut s = format!(
        "\nrelayed throughput through weft-derper ({} runs of {} s, {}-byte packets; medians)\n\n",
        config.runs, config.duration_s, config.packet_size
    );
    s += "| row | relay | goodput Gb/s | runs | relay cores | relay CPU-s/Gbit | relayed % of received | clients cores | |\n";
    s += "|---|---|---:|---|---:|---:|---:|---:|---|\n";
    for r in summary {
        let runs: Vec<String> = r.goodput_gbps.iter().map(|g| format!("{g:.3}")).collect();
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.row.label(),
            r.derper,
            f(r.goodput_median, 3),
            runs.join(" "),
            f(r.derper_cores_median, 2),
            f(r.derper_s_per_gbit_median, 2),
            f(r.delivered_percent_median, 1),
            f(r.clients_cores_median, 2),
            r.detail,
        );
    }
    if config.derpers.len() > 1 {
        if let Some(base) = config.derpers.first() {
            s += &format!("\nratios against {}:\n", base.label);
            for r in summary.iter().filter(|r| r.derper != base.label) {
                let b = summary
                    .iter()
                    .find(|x| x.row == r.row && x.derper == base.label)
                    .and_then(|x| x.goodput_median);
                let ratio = match (r.goodput_median, b) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
                    _ => "-".into(),
                };
                s += &format!("  {} · {}: {ratio}\n", r.row.label(), r.derper);
            }
        }
    }
    s
}

/// Used by the peers: waits (bounded) for the harness's start file.
pub(crate) fn wait_for_go(path: &Path, bound: Duration) -> Result<()> {
    let t0: Instant = now();
    while !path.exists() {
        if t0.elapsed() > bound {
            bail!("no start signal within {bound:?}");
        }
        sleep(Duration::from_millis(1));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_and_their_differences() {
        let before = parse_metrics(
            "# HELP derp_packets_received_total x\n\
             derp_packets_received_total 10\n\
             derp_packets_sent_total 4\n\
             derp_packets_dropped_total{reason=\"queue_head\",kind=\"other\"} 6\n\
             garbage line\n",
        );
        assert_eq!(before.get("derp_packets_received_total"), Some(&10.0));
        let after = parse_metrics(
            "derp_packets_received_total 110\n\
             derp_packets_sent_total 94\n\
             derp_packets_dropped_total{reason=\"queue_head\",kind=\"other\"} 16\n\
             derp_packets_dropped_total{reason=\"unknown_dest\",kind=\"disco\"} 0\n",
        );
        let c = counters(&before, &after);
        assert_eq!(c.packets_received, 100.0);
        assert_eq!(c.packets_sent, 90.0);
        assert_eq!(c.dropped.len(), 1, "zero differences are left out");
        assert_eq!(
            c.dropped.get("reason=\"queue_head\",kind=\"other\""),
            Some(&10.0)
        );
    }

    #[test]
    fn relay_binaries_must_exist() {
        assert!(parse_derper("x=/nonexistent/weft-derper").is_err());
        assert!(parse_derper("=/bin/sh").is_err());
        let d = parse_derper("/bin/sh").unwrap();
        assert_eq!(d.label, "sh");
    }

    #[test]
    fn goodput_needs_a_span() {
        let r = PeerReport {
            received_bytes: 125_000_000,
            receive_s: 1.0,
            ..PeerReport::default()
        };
        assert_eq!(r.goodput_bps(), Some(1e9));
        let r = PeerReport {
            received_bytes: 1280,
            receive_s: 0.0,
            ..PeerReport::default()
        };
        assert_eq!(r.goodput_bps(), None);
    }
}
