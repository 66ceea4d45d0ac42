//! `weft-perf`: throughput, loss, latency and CPU cost of weft against raw veth,
//! wireguard-go and boringtun, measured side by side in one run.
//!
//! Why one run: this runs on small shared VMs where absolute numbers drift by
//! tens of percent between hours, so the only numbers worth keeping are ratios
//! between implementations measured under the same conditions. Runs are
//! interleaved — run 1 of every pair, then run 2 of every pair, each run starting
//! the pair order one further along — so drift hits every pair alike, and every
//! table shows medians over the runs.
//!
//! Each (run, pair) gets fresh namespaces and daemons (weft-testkit), which are
//! removed before the next one starts, also on error, panic, Ctrl-C or SIGTERM.
//! See `perf/README.md` for what each metric means.

mod bench;
mod derp_conn;
mod derp_peer;
mod flood;
mod iperf;
mod machine;
mod procfs;
mod relay;
mod report;
mod stats;
mod tailnet;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use weft_testkit::{now, WgImpl};

use crate::bench::{measure, Ctx, PairKind, Sample, TestKind, Topology};
use crate::machine::Machine;
use crate::report::{Config, PairRun, Results};

/// Benchmark harness for weft's data plane.
#[derive(Debug, Parser)]
#[command(name = "weft-perf", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Measure every selected pair, interleaved, and print medians and ratios.
    /// Needs root: it creates (and removes) network namespaces.
    Run(RunArgs),
    /// What a handshake flood costs the receiving host with and without weft's XDP program.
    /// Needs root.
    Flood(FloodArgs),
    /// How fast, and at what CPU, the packet filter's two paths (eBPF tc, userspace) drop
    /// denied traffic that arrives through the tunnel. Needs root.
    Denied(FloodArgs),
    /// Relayed throughput through weft-derper: weft DERP peers (TLS, plain, both directions)
    /// and official tailscaled nodes forced onto the relay. Needs root.
    Relay(RelayArgs),
    /// One DERP client of `relay` (started by it; not meant to be run by hand).
    #[command(hide = true)]
    DerpPeer(derp_peer::PeerArgs),
}

#[derive(Debug, clap::Args)]
struct RelayArgs {
    /// Runs of every row (medians are taken over them).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    runs: u32,
    /// Seconds of traffic per measurement.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=300))]
    duration: u64,
    /// Rows, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = relay::RelayRow::ALL)]
    rows: Vec<relay::RelayRow>,
    /// Relay binaries to compare, `LABEL=PATH`, repeatable [default: weft-derper next to this
    /// executable]. The first is the reference of the ratios.
    #[arg(long)]
    derper: Vec<String>,
    /// DERP payload size of the weft peers' packets.
    #[arg(long, default_value_t = 1280, value_parser = clap::value_parser!(u32).range(64..=65536))]
    size: u32,
    /// Where to write the JSON with every sample.
    #[arg(long, default_value = "weft-perf-relay.json")]
    json: PathBuf,
    /// The weft-wg binary next to which weft-coordd lives (the tailscaled row) [default: next
    /// to this executable].
    #[arg(long)]
    weft: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct FloodArgs {
    /// Rounds of (XDP off, XDP on).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: u32,
    /// Seconds of flood per measurement.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    duration: u64,
    /// The weft-wg binary [default: next to this executable].
    #[arg(long)]
    weft: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Runs of every pair (medians are taken over them).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Seconds per iperf3 test.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=600))]
    duration: u64,
    /// Pairs to measure, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = PairKind::ALL)]
    impls: Vec<PairKind>,
    /// Where to write the JSON with every raw sample and the machine details.
    #[arg(long, default_value = "weft-perf.json")]
    json: PathBuf,
    /// The weft-wg binary to measure; default: `weft-wg` next to this executable (build them
    /// in the same profile: `cargo build --release -p weft-cli -p weft-perf -p weft-coordd -p
    /// weft-derper`; the `tailscaled` row runs weft-coordd and weft-derper from there too).
    #[arg(long)]
    weft: Option<PathBuf>,
    /// Offered UDP rate (iperf3 `-b`).
    #[arg(long, default_value = "1G")]
    udp_rate: String,
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run(args) => run(args),
        Cmd::Flood(args) => {
            check_prerequisites(&[PairKind::Go])?;
            let weft = weft_binary(args.weft)?;
            flood::run(&weft, args.runs, Duration::from_secs(args.duration))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Denied(args) => {
            check_prerequisites(&[])?;
            let weft = weft_binary(args.weft)?;
            flood::run_denied(&weft, args.runs, Duration::from_secs(args.duration))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Relay(args) => run_relay(args),
        Cmd::DerpPeer(args) => {
            derp_peer::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_relay(args: RelayArgs) -> Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
            .context("installing signal handlers")?;
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let weft = weft_binary(args.weft)?;
    let mut rows = args.rows;
    rows.sort();
    rows.dedup();
    let mut pairs = Vec::new();
    if rows.contains(&relay::RelayRow::Tailscaled) {
        pairs.push(PairKind::Tailscaled);
    }
    check_prerequisites(&pairs)?;
    let specs = if args.derper.is_empty() {
        vec![weft
            .with_file_name("weft-derper")
            .to_string_lossy()
            .into_owned()]
    } else {
        args.derper
    };
    let derpers = specs
        .iter()
        .map(|s| relay::parse_derper(s))
        .collect::<Result<Vec<_>>>()?;
    let config = relay::RelayConfig {
        runs: args.runs,
        duration_s: args.duration,
        packet_size: args.size,
        rows,
        derpers,
        sender_batch: derp_peer::BATCH,
    };
    let ok = relay::run(&weft, config, &args.json, Arc::clone(&stop))?;
    if stop.load(Ordering::Relaxed) {
        return Ok(ExitCode::from(130));
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn weft_binary(arg: Option<PathBuf>) -> Result<PathBuf> {
    let path = match arg {
        Some(p) => p,
        None => std::env::current_exe()
            .context("locating the weft-perf executable")?
            .with_file_name("weft-wg"),
    };
    if !path.is_file() {
        bail!(
            "weft binary {} not found: build it in the same profile as weft-perf \
             (cargo build --release -p weft-cli -p weft-perf) or pass --weft PATH",
            path.display()
        );
    }
    std::fs::canonicalize(&path).with_context(|| format!("resolving {}", path.display()))
}

fn check_prerequisites(pairs: &[PairKind]) -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading own status")?;
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    if uid != "0" {
        bail!("weft-perf must run as root (it creates network namespaces)");
    }
    for tool in ["iperf3", "ping", "ip", "ss", "wg"] {
        let ok = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            bail!("{tool} is not installed (scripts/setup.sh installs everything)");
        }
    }
    if pairs
        .iter()
        .any(|p| matches!(p, PairKind::Go | PairKind::Mixed))
    {
        let go = WgImpl::WireguardGo.program()?;
        if !go.is_file() {
            bail!("{} not found (apt-get install wireguard-go)", go.display());
        }
    }
    if pairs.contains(&PairKind::Boringtun) {
        WgImpl::Boringtun.program()?;
    }
    if pairs.contains(&PairKind::Tailscaled) {
        weft_testkit::tailscale::realclients_dir()?;
    }
    Ok(())
}

fn mmss(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:>2}:{:02}", s / 60, s % 60)
}

/// Rough wall time of one (run, pair): setup and idle pings (~2 s), then six
/// iperf3 tests of `duration` with ~0.5 s each of start and stop, teardown.
/// (Measured: 62.7 s per pair at 10 s.)
fn estimate_per_pair(duration: u64) -> Duration {
    Duration::from_secs(6 * duration + 6)
}

fn progress_result(s: &Sample) -> String {
    if let Some(e) = &s.error {
        let first = e.lines().next().unwrap_or("");
        return format!("FAILED: {first}");
    }
    let mut parts = Vec::new();
    if let Some(r) = &s.iperf {
        parts.push(format!("{} Gb/s", report::fmt3(Some(r.received_bps / 1e9))));
        if let Some(x) = r.retransmits {
            parts.push(format!("{x} retr"));
        }
        if let Some(x) = r.lost_percent {
            parts.push(format!("{}% lost", report::fmt3(Some(x))));
        }
    }
    if let Some(c) = &s.cpu {
        parts.push(format!("{} CPU-s/Gbit", report::fmt3(c.procs_s_per_gbit)));
    }
    if let Some(r) = &s.rtt {
        parts.push(format!(
            "RTT p50 {} p99 {} ms",
            report::fmt3(r.median_ms),
            report::fmt3(r.p99_ms)
        ));
    }
    parts.join(", ")
}

/// Runs the whole matrix. Exit code 0 if every measurement succeeded, 1 if some
/// failed (the tables and the JSON show which), 130 if interrupted.
fn run(args: RunArgs) -> Result<ExitCode> {
    let start = now();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal exits at once (leftovers are swept by the next run).
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
            .context("installing signal handlers")?;
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }

    let mut pairs = args.impls.clone();
    pairs.sort();
    pairs.dedup();
    let weft = weft_binary(args.weft.clone())?;
    check_prerequisites(&pairs)?;
    let ctx = Ctx {
        duration: Duration::from_secs(args.duration),
        udp_rate: args.udp_rate.clone(),
        clk_tck: procfs::clock_ticks_per_second()?,
        stop: Arc::clone(&stop),
    };
    let machine = Machine::collect(&weft);
    let tests = TestKind::ALL.to_vec();
    let total = args.runs as usize * pairs.len() * tests.len();
    let estimate = estimate_per_pair(args.duration) * (args.runs * pairs.len() as u32);
    eprintln!(
        "weft-perf: {} run(s) × {} pair(s) × {} tests of {} s = {total} measurements, about {} min; \
         weft = {} ({})",
        args.runs,
        pairs.len(),
        tests.len(),
        args.duration,
        estimate.as_secs().div_ceil(60),
        weft.display(),
        machine.weft_commit
    );

    let mut samples: Vec<Sample> = Vec::new();
    let mut pair_runs: Vec<PairRun> = Vec::new();
    let mut n = 0usize;
    let mut interrupted = false;
    'runs: for run in 1..=args.runs {
        let mut order = pairs.clone();
        if !order.is_empty() {
            let shift = (run as usize - 1) % order.len();
            order.rotate_left(shift);
        }
        for &pair in &order {
            if stop.load(Ordering::Relaxed) {
                interrupted = true;
                break 'runs;
            }
            let outcome = run_pair(run, pair, &weft, &tests, &ctx, start, total, &mut n)?;
            samples.extend(outcome.samples);
            pair_runs.push(outcome.pair_run);
            if outcome.interrupted {
                interrupted = true;
                break 'runs;
            }
        }
    }

    let summary = report::summarize(&samples, &pair_runs);
    let ratios = report::ratios(&summary);
    let results = Results {
        machine,
        config: Config {
            runs: args.runs,
            duration_s: args.duration,
            udp_rate: args.udp_rate.clone(),
            udp_len: bench::UDP_LEN,
            tunnel_mtu: bench::TUNNEL_MTU,
            veth_mtu: bench::VETH_MTU,
            pairs: pairs.clone(),
            tests,
            ping_interval_s: bench::PING_INTERVAL.as_secs_f64(),
        },
        elapsed_s: start.elapsed().as_secs_f64(),
        interrupted,
        pair_runs,
        samples,
        summary,
        ratios,
    };
    let text = report::render(&results);
    let m = &results.machine;
    println!(
        "weft-perf {} on {} ({} cores, kernel {}), {}; weft {} ; {} ; {} ; {}\n",
        m.date_utc,
        m.cpu_model,
        m.cores,
        m.kernel,
        mmss(start.elapsed()).trim(),
        m.weft_commit,
        m.iperf3,
        m.wireguard_go,
        m.boringtun
    );
    print!("{text}");
    let _ = std::io::stdout().flush();
    let json = serde_json::to_string_pretty(&results).context("serializing results")?;
    std::fs::write(&args.json, json + "\n")
        .with_context(|| format!("writing {}", args.json.display()))?;
    eprintln!(
        "weft-perf: wrote {} ({} samples) after {}",
        args.json.display(),
        results.samples.len(),
        mmss(start.elapsed()).trim()
    );
    if interrupted {
        eprintln!("weft-perf: interrupted; everything it started has been removed");
        return Ok(ExitCode::from(130));
    }
    let failures = results.samples.iter().filter(|s| s.error.is_some()).count()
        + results
            .pair_runs
            .iter()
            .filter(|p| p.error.is_some())
            .count();
    if failures > 0 {
        eprintln!("weft-perf: {failures} measurement(s) or setup(s) failed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

struct PairOutcome {
    pair_run: PairRun,
    samples: Vec<Sample>,
    interrupted: bool,
}

/// Builds one pair, runs every test on it, tears it down. Measurement failures
/// are recorded, not returned; only errors of the harness itself are.
#[allow(clippy::too_many_arguments)]
fn run_pair(
    run: u32,
    pair: PairKind,
    weft: &std::path::Path,
    tests: &[TestKind],
    ctx: &Ctx,
    start: Instant,
    total: usize,
    n: &mut usize,
) -> Result<PairOutcome> {
    let t0 = now();
    let started_s = t0.duration_since(start).as_secs_f64();
    eprintln!(
        "[   /{total} {}] run {run} · {}: setting up",
        mmss(start.elapsed()),
        pair.label()
    );
    let mut pair_run = PairRun {
        run,
        pair,
        started_s,
        setup_s: 0.0,
        total_s: 0.0,
        error: None,
        peak_rss_kib: Vec::new(),
    };
    let mut samples = Vec::new();
    let mut topo = match Topology::build(pair, weft) {
        Ok(t) => t,
        Err(e) => {
            let interrupted = ctx.stop.load(Ordering::Relaxed);
            eprintln!("    setup of {} failed: {e:#}", pair.label());
            pair_run.error = Some(format!("{e:#}"));
            for &test in tests {
                *n += 1;
                samples.push(Sample {
                    run,
                    pair,
                    test,
                    started_s,
                    wall_s: 0.0,
                    error: Some("pair setup failed".to_owned()),
                    iperf: None,
                    cpu: None,
                    rtt: None,
                });
            }
            pair_run.total_s = t0.elapsed().as_secs_f64();
            return Ok(PairOutcome {
                pair_run,
                samples,
                interrupted,
            });
        }
    };
    pair_run.setup_s = t0.elapsed().as_secs_f64();
    let mut interrupted = false;
    for &test in tests {
        if ctx.stop.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        *n += 1;
        let ts = now();
        eprint!(
            "[{:>3}/{total} {}] run {run} · {} · {}: ",
            *n,
            mmss(start.elapsed()),
            pair.label(),
            test.label()
        );
        let _ = std::io::stderr().flush();
        let result = measure(&topo, test, ctx);
        if ctx.stop.load(Ordering::Relaxed) {
            eprintln!("interrupted");
            interrupted = true;
            break;
        }
        let mut sample = Sample {
            run,
            pair,
            test,
            started_s: ts.duration_since(start).as_secs_f64(),
            wall_s: ts.elapsed().as_secs_f64(),
            error: None,
            iperf: None,
            cpu: None,
            rtt: None,
        };
        match result {
            Ok(o) => {
                sample.iperf = o.iperf;
                sample.cpu = o.cpu;
                sample.rtt = o.rtt;
            }
            Err(e) => sample.error = Some(format!("{e:#}\n{}", topo.logs(20))),
        }
        eprintln!("{}", progress_result(&sample));
        samples.push(sample);
    }
    match topo.peak_rss_kib() {
        Ok(v) => pair_run.peak_rss_kib = v,
        Err(e) => eprintln!("    peak RSS of {}: {e:#}", pair.label()),
    }
    if let Err(e) = topo.check_alive() {
        eprintln!("    {}: {e:#}", pair.label());
        pair_run.error = Some(format!("daemon died: {e:#}"));
    }
    drop(topo);
    pair_run.total_s = t0.elapsed().as_secs_f64();
    Ok(PairOutcome {
        pair_run,
        samples,
        interrupted,
    })
}
