//! `weft-perf flood`: what a handshake flood costs the host with and without weft's XDP
//! program, measured side by side in one run.
//!
//! A wireguard-go peer A and a weft device B in namespaces; from A, the testkit's flood
//! generator sends handshake initiations (half with a valid mac1, from four source addresses,
//! rotating source ports) to B's listen port for `duration`. The host's busy CPU time over the
//! flood, minus the generator's own, is what the flood costs the receiving side (weft plus the
//! kernel's receive path, softirqs included); with `--xdp-interface` most initiations are
//! dropped before the socket once B is under load.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use weft_testkit::{FloodSpec, HandshakeFlood, PairBuilder, WgImpl, VETH};

use crate::procfs::{clock_ticks_per_second, HostCpu, ProcStat};
use crate::stats::median;

/// One measurement.
#[derive(Debug, Clone, Copy)]
struct Sample {
    sent: u64,
    receiver_cpu_s: f64,
    daemon_cpu_s: f64,
    xdp_dropped: Option<u64>,
}

fn one(weft: &Path, xdp: bool, duration: Duration) -> Result<Sample> {
    let mut args = Vec::new();
    if xdp {
        args.extend(["--xdp-interface".to_owned(), VETH.to_owned()]);
    }
    let b = WgImpl::WeftWithArgs(weft.to_path_buf(), args);
    let mut pair = PairBuilder::new(WgImpl::WireguardGo, b).build()?;
    pair.handshake()?;
    let extra: Vec<IpAddr> = (101..=103)
        .map(|i| Ipv4Addr::new(10, 77, 0, i).into())
        .collect();
    for addr in &extra {
        pair.a
            .ns
            .addr_add(VETH, &format!("{addr}/{}", pair.a.outer_prefix))?;
    }
    let mut sources = vec![pair.a.outer];
    sources.extend(extra);
    let hz = clock_ticks_per_second()? as f64;
    let daemon_pid = pair.b.daemon.pid();
    let host0 = HostCpu::read()?;
    let daemon0 = ProcStat::read(daemon_pid)?.ticks();
    let mut flood = HandshakeFlood::start(
        &pair.a.ns,
        &FloodSpec {
            target: pair.b.outer,
            port: pair.b.listen_port,
            responder_public: pair.b.keys.public.clone(),
            sources,
            max_packets: u64::MAX / 2,
            duration,
        },
    )?;
    let gen_pid = flood.pid();
    std::thread::sleep(duration);
    // The generator's CPU just before it ends (its /proc entry goes with it).
    let gen_ticks = ProcStat::read(gen_pid).map(|s| s.ticks()).unwrap_or(0);
    let host1 = HostCpu::read()?;
    let daemon1 = ProcStat::read(daemon_pid)?.ticks();
    let sent = flood
        .wait(Duration::from_secs(10))
        .or_else(|_| flood.stop())?;
    pair.b.daemon.stop()?;
    let log = pair.b.daemon.log();
    let xdp_dropped = if xdp {
        let line = log
            .lines()
            .find(|l| l.contains("XDP filter counters"))
            .context("no XDP counters in weft's log")?;
        let v = line
            .split("dropped_rate_limited=")
            .nth(1)
            .map(|r| {
                r.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .context("no dropped_rate_limited")?;
        Some(v.parse()?)
    } else {
        None
    };
    let busy = host1
        .busy
        .saturating_sub(host0.busy)
        .saturating_sub(gen_ticks);
    Ok(Sample {
        sent,
        receiver_cpu_s: busy as f64 / hz,
        daemon_cpu_s: daemon1.saturating_sub(daemon0) as f64 / hz,
        xdp_dropped,
    })
}

/// Runs `runs` rounds of (without XDP, with XDP) and prints medians.
pub(crate) fn run(weft: &Path, runs: u32, duration: Duration) -> Result<()> {
    let mut off = Vec::new();
    let mut on = Vec::new();
    for r in 1..=runs {
        for xdp in [false, true] {
            let s = one(weft, xdp, duration)
                .with_context(|| format!("run {r}, xdp {}", if xdp { "on" } else { "off" }))?;
            eprintln!(
                "[run {r}] xdp {:3}: {} initiations sent, receiver CPU {:.2} s, weft {:.2} s, XDP rate-limited {}",
                if xdp { "on" } else { "off" },
                s.sent,
                s.receiver_cpu_s,
                s.daemon_cpu_s,
                s.xdp_dropped.map_or("-".into(), |d| d.to_string())
            );
            if xdp {
                on.push(s);
            } else {
                off.push(s);
            }
        }
    }
    println!(
        "Handshake flood for {:?} (median of {runs}): initiations sent, CPU-s of the receiving side (host busy minus the generator), of weft alone, per 100k initiations",
        duration
    );
    println!(
        "{:<10} {:>10} {:>12} {:>10} {:>14} {:>12}",
        "xdp", "sent", "receiver s", "weft s", "recv s/100k", "rate-limited"
    );
    for (name, v) in [("off", &off), ("on", &on)] {
        let sent = median(&v.iter().map(|s| s.sent as f64).collect::<Vec<_>>());
        let recv = median(&v.iter().map(|s| s.receiver_cpu_s).collect::<Vec<_>>());
        let daemon = median(&v.iter().map(|s| s.daemon_cpu_s).collect::<Vec<_>>());
        let per = median(
            &v.iter()
                .map(|s| s.receiver_cpu_s / (s.sent.max(1) as f64) * 100_000.0)
                .collect::<Vec<_>>(),
        );
        let limited = median(
            &v.iter()
                .filter_map(|s| s.xdp_dropped.map(|d| d as f64))
                .collect::<Vec<_>>(),
        );
        println!(
            "{name:<10} {:>10.0} {:>12.2} {:>10.2} {:>14.3} {:>12}",
            sent.unwrap_or(0.0),
            recv.unwrap_or(0.0),
            daemon.unwrap_or(0.0),
            per.unwrap_or(0.0),
            limited.map_or("-".into(), |l| format!("{l:.0}"))
        );
    }
    Ok(())
}
