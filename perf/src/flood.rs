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

/// Sends UDP datagrams of 1372 bytes to `addr:port` as fast as it can for `secs` seconds and
/// prints how many went out.
const BLAST: &str = r#"
import socket, sys, time
addr, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
payload = bytes(1372)
n = 0
end = time.time() + secs
while time.time() < end:
    for _ in range(64):
        try:
            s.sendto(payload, (addr, port)); n += 1
        except OSError:
            pass
print(n, flush=True)
"#;

/// Denied traffic through the tunnel: how fast and at what CPU each enforcement path drops it.
fn one_denied(weft: &Path, ebpf: bool, duration: Duration) -> Result<Denied> {
    let file = std::env::temp_dir().join(format!("weft-perf-deny-{}.json", std::process::id()));
    // Everything is local, and only TCP is allowed: UDP to any port is denied by rule.
    std::fs::write(
        &file,
        r#"{"LocalNets": ["0.0.0.0/0", "::/0"], "PacketFilter": [{"SrcIPs": ["*"],
            "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}], "IPProto": [6]}]}"#,
    )?;
    let mut args = vec!["--packet-filter".to_owned(), file.display().to_string()];
    if !ebpf {
        args.push("--no-ebpf".into());
    }
    let b = WgImpl::WeftWithArgs(weft.to_path_buf(), args);
    let mut pair = PairBuilder::new(WgImpl::Weft(weft.to_path_buf()), b).build()?;
    pair.handshake()?;
    let hz = clock_ticks_per_second()? as f64;
    let daemon_pid = pair.b.daemon.pid();
    let host0 = HostCpu::read()?;
    let daemon0 = ProcStat::read(daemon_pid)?.ticks();
    let secs = duration.as_secs_f64().to_string();
    let dst = pair.b.tunnel_v4.to_string();
    let mut gen = pair
        .a
        .ns
        .spawn("udp blast", &["python3", "-c", BLAST, &dst, "9", &secs])?;
    std::thread::sleep(duration.saturating_sub(Duration::from_millis(200)));
    let gen_ticks = ProcStat::read(gen.pid()).map(|s| s.ticks()).unwrap_or(0);
    let host1 = HostCpu::read()?;
    let daemon1 = ProcStat::read(daemon_pid)?.ticks();
    gen.wait_timeout(Duration::from_secs(10))?;
    let sent: u64 = gen
        .log()
        .trim()
        .lines()
        .last()
        .unwrap_or("0")
        .trim()
        .parse()
        .unwrap_or(0);
    pair.b.daemon.stop()?;
    let log = pair.b.daemon.log();
    let dropped = if ebpf {
        let line = log
            .lines()
            .find(|l| l.contains("eBPF packet filter counters"))
            .context("no eBPF counters in weft's log")?;
        field(line, "dropped=")?
    } else {
        log.lines()
            .filter(|l| l.contains("shard stopped"))
            .map(|l| field(l.split(" rx=").nth(1).unwrap_or_default(), "rx_filtered: "))
            .sum::<Result<u64>>()?
    };
    let received = log
        .lines()
        .filter(|l| l.contains("shard stopped"))
        .map(|l| field(l.split(" rx=").nth(1).unwrap_or_default(), "rx_datagrams: "))
        .sum::<Result<u64>>()?;
    let _ = std::fs::remove_file(&file);
    let busy = host1
        .busy
        .saturating_sub(host0.busy)
        .saturating_sub(gen_ticks);
    Ok(Denied {
        sent,
        received,
        dropped,
        host_cpu_s: busy as f64 / hz,
        weft_cpu_s: daemon1.saturating_sub(daemon0) as f64 / hz,
    })
}

fn field(text: &str, name: &str) -> Result<u64> {
    let rest = text
        .split(name)
        .nth(1)
        .with_context(|| format!("no {name} in {text}"))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Ok(digits.parse()?)
}

/// One denied-traffic measurement.
#[derive(Debug, Clone, Copy)]
struct Denied {
    /// Datagrams the sender handed to A's stack.
    sent: u64,
    /// Datagrams B's weft received and decrypted (the work both paths do).
    received: u64,
    /// The filter's drop counter: datagrams in userspace, TUN writes (GRO super-packets, up to
    /// 64 datagrams each) on the tc path.
    dropped: u64,
    host_cpu_s: f64,
    weft_cpu_s: f64,
}

/// Runs `runs` rounds of (tc program, userspace matcher) against denied UDP and prints medians.
pub(crate) fn run_denied(weft: &Path, runs: u32, duration: Duration) -> Result<()> {
    let mut tc: Vec<Denied> = Vec::new();
    let mut user: Vec<Denied> = Vec::new();
    for r in 1..=runs {
        for ebpf in [true, false] {
            let name = if ebpf { "tc" } else { "userspace" };
            let s = one_denied(weft, ebpf, duration).with_context(|| format!("run {r}, {name}"))?;
            eprintln!(
                "[run {r}] {name:9}: {} sent, {} received by B, filter drop counter {}, host CPU {:.2} s, weft {:.2} s",
                s.sent, s.received, s.dropped, s.host_cpu_s, s.weft_cpu_s
            );
            if ebpf {
                tc.push(s)
            } else {
                user.push(s)
            }
        }
    }
    let secs = duration.as_secs_f64();
    println!(
        "Denied UDP through the tunnel for {duration:?} (median of {runs}): datagrams B received and \
         the filter dropped per second, host CPU-s (minus the sender) and weft CPU-s per million"
    );
    println!(
        "{:<10} {:>12} {:>12} {:>12}",
        "path", "dropped/s", "host s/M", "weft s/M"
    );
    for (name, v) in [("tc", &tc), ("userspace", &user)] {
        let per = |cpu: f64, n: u64| cpu / (n.max(1) as f64) * 1e6;
        let rate = median(
            &v.iter()
                .map(|s| s.received as f64 / secs)
                .collect::<Vec<_>>(),
        );
        let host = median(
            &v.iter()
                .map(|s| per(s.host_cpu_s, s.received))
                .collect::<Vec<_>>(),
        );
        let weft = median(
            &v.iter()
                .map(|s| per(s.weft_cpu_s, s.received))
                .collect::<Vec<_>>(),
        );
        println!(
            "{name:<10} {:>12.0} {:>12.2} {:>12.2}",
            rate.unwrap_or(0.0),
            host.unwrap_or(0.0),
            weft.unwrap_or(0.0)
        );
    }
    Ok(())
}
