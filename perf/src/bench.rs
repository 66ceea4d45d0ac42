//! Topologies and the measurements run on them.
//!
//! Every topology is two network namespaces, A and B, joined by a veth (MTU
//! 1500). For a tunnel pair, weft-testkit's [`Pair`] runs one WireGuard
//! implementation in each namespace (tunnel MTU 1420) and the traffic goes to
//! B's tunnel address; for raw veth it goes to B's veth address. The iperf3
//! client always runs in A and the server in B: "A→B" is the client sending,
//! "B→A" is `-R`. For the mixed pair A runs weft and B wireguard-go.
//!
//! CPU time is counted around each iperf3 client's life, from its spawn until
//! it has exited (but is not yet reaped): `utime + stime` of both WireGuard
//! daemons and of both iperf3 processes (the kernel's packet work — veth,
//! TUN, UDP and TCP stacks — runs mostly in softirq context on behalf of these
//! processes and is charged to them as system time). The busy time of the whole
//! host from `/proc/stat` is recorded too, in the JSON only (see [`Cpu`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use weft_testkit::{
    now, veth, wait_until, ChildGuard, Netns, Pair, PairBuilder, TempDir, WgImpl, VETH,
};

use crate::iperf::IperfReport;
use crate::procfs::{peak_rss_kib, HostCpu, ProcStat};
use crate::stats::Rtt;

/// Tunnel MTU of every tunnel pair.
pub(crate) const TUNNEL_MTU: u32 = 1420;
/// MTU of the veth between the namespaces.
pub(crate) const VETH_MTU: u32 = 1500;
/// UDP payload per datagram: 1372 + 8 (UDP) + 20 (IPv4) = 1400 bytes, which fits
/// the 1420-byte tunnel without fragmentation.
pub(crate) const UDP_LEN: u32 = 1372;
/// Interval of the RTT pings (`ping -i`).
pub(crate) const PING_INTERVAL: Duration = Duration::from_millis(50);
/// Pings of an idle RTT measurement.
pub(crate) const IDLE_PINGS: u32 = 40;
/// How long after the bulk transfer starts the loaded pings begin (past slow start).
const LOADED_PING_DELAY: Duration = Duration::from_secs(1);
/// Port of the iperf3 server.
const IPERF_PORT: &str = "5201";
/// Slack on top of the test duration before an iperf3 client is given up on.
const IPERF_SLACK: Duration = Duration::from_secs(30);

/// A pair of hosts to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PairKind {
    /// Raw veth, no tunnel: the ceiling.
    Veth,
    /// weft on both sides (one shard per core, the default).
    Weft,
    /// weft on both sides with one shard each (`--shards 1`).
    #[value(name = "weft1")]
    #[serde(rename = "weft1")]
    WeftOneShard,
    /// weft on both sides on the io_uring backend (`--io uring`).
    #[value(name = "weft-uring")]
    #[serde(rename = "weft-uring")]
    WeftUring,
    /// weft on both sides with an allow-all tailnet packet filter enforced by the eBPF tc
    /// program on the TUN (`--packet-filter`).
    #[value(name = "weft-tc")]
    #[serde(rename = "weft-tc")]
    WeftFilterTc,
    /// weft on both sides with the same filter enforced by the userspace matcher
    /// (`--packet-filter --no-ebpf`).
    #[value(name = "weft-userfilter")]
    #[serde(rename = "weft-userfilter")]
    WeftFilterUser,
    /// wireguard-go on both sides.
    Go,
    /// boringtun on both sides.
    Boringtun,
    /// weft in A, wireguard-go in B.
    Mixed,
    /// The official Tailscale client (tailscaled 1.96.4, TUN mode) on both sides, in a tailnet
    /// run by weft-coordd and weft-derper, on the direct path.
    Tailscaled,
}

impl PairKind {
    /// Every pair, in table order.
    pub(crate) const ALL: [PairKind; 10] = [
        PairKind::Veth,
        PairKind::Weft,
        PairKind::WeftOneShard,
        PairKind::WeftUring,
        PairKind::WeftFilterTc,
        PairKind::WeftFilterUser,
        PairKind::Go,
        PairKind::Boringtun,
        PairKind::Mixed,
        PairKind::Tailscaled,
    ];

    /// Row label in tables.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Veth => "veth (no tunnel)",
            Self::Weft => "weft↔weft",
            Self::WeftOneShard => "weft↔weft 1 shard",
            Self::WeftUring => "weft↔weft io_uring",
            Self::WeftFilterTc => "weft↔weft filter tc",
            Self::WeftFilterUser => "weft↔weft filter user",
            Self::Go => "wg-go↔wg-go",
            Self::Boringtun => "boringtun↔boringtun",
            Self::Mixed => "weft↔wg-go",
            Self::Tailscaled => "tailscaled↔tailscaled",
        }
    }

    fn impls(self, weft: &Path) -> Option<(WgImpl, WgImpl)> {
        let w = || WgImpl::Weft(weft.to_path_buf());
        match self {
            Self::Veth | Self::Tailscaled => None,
            Self::Weft => Some((w(), w())),
            Self::WeftOneShard => {
                let one = || WgImpl::WeftSharded(weft.to_path_buf(), 1);
                Some((one(), one()))
            }
            Self::WeftUring => {
                let uring = || WgImpl::WeftUring(weft.to_path_buf());
                Some((uring(), uring()))
            }
            Self::WeftFilterTc | Self::WeftFilterUser => {
                let mut args = vec![
                    "--packet-filter".to_owned(),
                    allow_all_filter().display().to_string(),
                ];
                if self == Self::WeftFilterUser {
                    args.push("--no-ebpf".into());
                }
                let f = || WgImpl::WeftWithArgs(weft.to_path_buf(), args.clone());
                Some((f(), f()))
            }
            Self::Go => Some((WgImpl::WireguardGo, WgImpl::WireguardGo)),
            Self::Boringtun => Some((WgImpl::Boringtun, WgImpl::Boringtun)),
            Self::Mixed => Some((w(), WgImpl::WireguardGo)),
        }
    }
}

/// A packet filter file that admits everything by rule (so each packet goes through the whole
/// match: source and destination prefixes, protocol, ports), written once per process.
fn allow_all_filter() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("weft-perf-filter-{}.json", std::process::id()));
    if !path.exists() {
        let json = r#"{"LocalNets": ["0.0.0.0/0", "::/0"], "PacketFilter": [{"SrcIPs": ["*"],
            "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}]}"#;
        if let Err(e) = std::fs::write(&path, json) {
            eprintln!("weft-perf: cannot write {}: {e}", path.display());
        }
    }
    path
}

/// One measurement made on every pair in every run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum TestKind {
    /// `ping -i 0.05` with nothing else running.
    IdleRtt,
    /// One TCP stream A→B, with pings A→B during it (latency under load).
    Tcp1Fwd,
    /// One TCP stream B→A.
    Tcp1Rev,
    /// Four TCP streams A→B.
    Tcp4Fwd,
    /// Four TCP streams B→A.
    Tcp4Rev,
    /// UDP at a fixed offered rate A→B.
    UdpFwd,
    /// UDP at a fixed offered rate B→A.
    UdpRev,
}

impl TestKind {
    /// Every test, in the order run within a pair.
    pub(crate) const ALL: [TestKind; 7] = [
        TestKind::IdleRtt,
        TestKind::Tcp1Fwd,
        TestKind::Tcp1Rev,
        TestKind::Tcp4Fwd,
        TestKind::Tcp4Rev,
        TestKind::UdpFwd,
        TestKind::UdpRev,
    ];

    /// The throughput tests, in column order.
    pub(crate) const THROUGHPUT: [TestKind; 6] = [
        TestKind::Tcp1Fwd,
        TestKind::Tcp1Rev,
        TestKind::Tcp4Fwd,
        TestKind::Tcp4Rev,
        TestKind::UdpFwd,
        TestKind::UdpRev,
    ];

    /// The TCP tests.
    pub(crate) const TCP: [TestKind; 4] = [
        TestKind::Tcp1Fwd,
        TestKind::Tcp1Rev,
        TestKind::Tcp4Fwd,
        TestKind::Tcp4Rev,
    ];

    /// Key in JSON and metric names.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::IdleRtt => "idle-rtt",
            Self::Tcp1Fwd => "tcp1-fwd",
            Self::Tcp1Rev => "tcp1-rev",
            Self::Tcp4Fwd => "tcp4-fwd",
            Self::Tcp4Rev => "tcp4-rev",
            Self::UdpFwd => "udp-fwd",
            Self::UdpRev => "udp-rev",
        }
    }

    /// Column label in tables.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::IdleRtt => "idle RTT",
            Self::Tcp1Fwd => "TCP1 A→B",
            Self::Tcp1Rev => "TCP1 B→A",
            Self::Tcp4Fwd => "TCP4 A→B",
            Self::Tcp4Rev => "TCP4 B→A",
            Self::UdpFwd => "UDP A→B",
            Self::UdpRev => "UDP B→A",
        }
    }

    fn is_udp(self) -> bool {
        matches!(self, Self::UdpFwd | Self::UdpRev)
    }

    fn iperf_args(self, udp_rate: &str) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        match self {
            Self::Tcp4Fwd | Self::Tcp4Rev => args.extend(["-P".into(), "4".into()]),
            Self::UdpFwd | Self::UdpRev => args.extend([
                "-u".into(),
                "-b".into(),
                udp_rate.to_owned(),
                "-l".into(),
                UDP_LEN.to_string(),
            ]),
            _ => {}
        }
        if matches!(self, Self::Tcp1Rev | Self::Tcp4Rev | Self::UdpRev) {
            args.push("-R".into());
        }
        args
    }
}

/// The two namespaces of one measurement, with or without a tunnel.
/// Dropping it stops every process and deletes both namespaces.
#[derive(Debug)]
pub(crate) enum Topology {
    /// Raw veth: A 10.77.0.1, B 10.77.0.2.
    Veth {
        /// Namespace A.
        a: Netns,
        /// Namespace B.
        b: Netns,
    },
    /// Two WireGuard implementations, handshake done.
    Tunnel(Box<Pair>),
    /// Two official Tailscale clients in a weft-run tailnet, direct path found.
    Tailnet(Box<crate::tailnet::Tailnet>),
}

impl Topology {
    /// Builds the topology of `kind`; for a tunnel also completes the first
    /// handshake. Everything is removed again on failure.
    pub(crate) fn build(kind: PairKind, weft: &Path) -> Result<Self> {
        if kind == PairKind::Tailscaled {
            return Ok(Self::Tailnet(Box::new(crate::tailnet::Tailnet::build(
                weft,
            )?)));
        }
        match kind.impls(weft) {
            None => {
                let a = Netns::new("wpa")?;
                let b = Netns::new("wpb")?;
                veth(&a, VETH, &b, VETH)?;
                for (ns, addr) in [(&a, "10.77.0.1/24"), (&b, "10.77.0.2/24")] {
                    ns.set_mtu(VETH, VETH_MTU)?;
                    ns.addr_add(VETH, addr)?;
                    ns.link_up(VETH)?;
                }
                weft_testkit::ping_until_reply(
                    &a,
                    Ipv4Addr::new(10, 77, 0, 2).into(),
                    Duration::from_secs(10),
                )?;
                Ok(Self::Veth { a, b })
            }
            Some((ia, ib)) => {
                let mut pair = PairBuilder::new(ia, ib)
                    .veth_mtu(VETH_MTU)
                    .tunnel_mtu(TUNNEL_MTU)
                    .build()?;
                pair.run(|p| p.handshake())?;
                Ok(Self::Tunnel(Box::new(pair)))
            }
        }
    }

    /// Namespace A (iperf3 client, ping source).
    pub(crate) fn ns_a(&self) -> &Netns {
        match self {
            Self::Veth { a, .. } => a,
            Self::Tunnel(p) => &p.a.ns,
            Self::Tailnet(t) => &t.a,
        }
    }

    /// Namespace B (iperf3 server).
    pub(crate) fn ns_b(&self) -> &Netns {
        match self {
            Self::Veth { b, .. } => b,
            Self::Tunnel(p) => &p.b.ns,
            Self::Tailnet(t) => &t.b,
        }
    }

    /// The address traffic goes to: B's tunnel address, or its veth address.
    pub(crate) fn addr_b(&self) -> Ipv4Addr {
        match self {
            Self::Veth { .. } => Ipv4Addr::new(10, 77, 0, 2),
            Self::Tunnel(p) => p.b.tunnel_v4,
            Self::Tailnet(t) => t.addr_b,
        }
    }

    /// Process ids of the WireGuard daemons (none for raw veth).
    pub(crate) fn daemon_pids(&self) -> Vec<u32> {
        match self {
            Self::Veth { .. } => Vec::new(),
            Self::Tunnel(p) => vec![p.a.daemon.pid(), p.b.daemon.pid()],
            Self::Tailnet(t) => t.daemon_pids(),
        }
    }

    /// Fails, with the daemon's log, if a daemon has exited.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        match self {
            Self::Veth { .. } => Ok(()),
            Self::Tunnel(p) => {
                p.a.check_alive()?;
                p.b.check_alive()
            }
            Self::Tailnet(t) => t.check_alive(),
        }
    }

    /// The tails of the daemons' logs, for error messages.
    pub(crate) fn logs(&self, lines: usize) -> String {
        match self {
            Self::Veth { .. } => String::new(),
            Self::Tunnel(p) => p.logs(lines),
            Self::Tailnet(t) => t.logs(lines),
        }
    }

    /// Peak resident set size of each daemon so far, KiB.
    pub(crate) fn peak_rss_kib(&self) -> Result<Vec<u64>> {
        self.daemon_pids().into_iter().map(peak_rss_kib).collect()
    }
}

/// What every measurement needs to know.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    /// Length of each iperf3 test.
    pub(crate) duration: Duration,
    /// Offered UDP rate, iperf3 `-b` syntax.
    pub(crate) udp_rate: String,
    /// `getconf CLK_TCK`.
    pub(crate) clk_tck: u64,
    /// Set by SIGINT/SIGTERM: stop as soon as possible, cleaning up.
    pub(crate) stop: Arc<AtomicBool>,
}

impl Ctx {
    fn check_stop(&self) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!(Interrupted);
        }
        Ok(())
    }

    fn secs(&self, ticks: u64) -> f64 {
        ticks as f64 / self.clk_tck as f64
    }
}

/// The error of a measurement cut short by Ctrl-C / SIGTERM.
#[derive(Debug)]
pub(crate) struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// CPU time spent during one iperf3 test.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Cpu {
    /// Wall time from client spawn to client exit, seconds.
    pub(crate) wall_s: f64,
    /// `utime + stime` of both WireGuard daemons, seconds (0 for raw veth).
    pub(crate) daemons_s: f64,
    /// `utime + stime` of the iperf3 client, seconds.
    pub(crate) iperf_client_s: f64,
    /// `utime + stime` of the iperf3 server, seconds.
    pub(crate) iperf_server_s: f64,
    /// Sum of the three above.
    pub(crate) procs_s: f64,
    /// Busy time of all CPUs of the host (`/proc/stat`), seconds.
    pub(crate) host_busy_s: f64,
    /// `procs_s` per gigabit received: CPU-seconds per Gbit, i.e. cores per Gb/s.
    pub(crate) procs_s_per_gbit: Option<f64>,
    /// `daemons_s` per gigabit received.
    pub(crate) daemons_s_per_gbit: Option<f64>,
    /// `host_busy_s` per gigabit received. Only in the JSON: with tick-based
    /// accounting and a tickless idle kernel, `/proc/stat` undercounts bursty
    /// loads (paced UDP) badly, while per-process times are scaled to the
    /// scheduler's exact runtime.
    pub(crate) host_s_per_gbit: Option<f64>,
}

/// One measurement: a test on a pair in a run. Failed measurements are kept
/// with their error.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Sample {
    /// Run number, from 1.
    pub(crate) run: u32,
    /// The pair.
    pub(crate) pair: PairKind,
    /// The test.
    pub(crate) test: TestKind,
    /// When it started, seconds since the harness started.
    pub(crate) started_s: f64,
    /// How long it took, seconds.
    pub(crate) wall_s: f64,
    /// Why it failed, if it did.
    pub(crate) error: Option<String>,
    /// The iperf3 report (throughput tests).
    pub(crate) iperf: Option<IperfReport>,
    /// CPU time (throughput tests).
    pub(crate) cpu: Option<Cpu>,
    /// Idle RTT (`idle-rtt`) or RTT under load (`tcp1-fwd`).
    pub(crate) rtt: Option<Rtt>,
}

/// What one measurement returns.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The iperf3 report.
    pub(crate) iperf: Option<IperfReport>,
    /// CPU time.
    pub(crate) cpu: Option<Cpu>,
    /// RTTs.
    pub(crate) rtt: Option<Rtt>,
}

/// Runs `test` on `topo`.
pub(crate) fn measure(topo: &Topology, test: TestKind, ctx: &Ctx) -> Result<Outcome> {
    ctx.check_stop()?;
    match test {
        TestKind::IdleRtt => {
            let rtt = idle_rtt(topo)?;
            Ok(Outcome {
                rtt: Some(rtt),
                ..Outcome::default()
            })
        }
        _ => iperf_test(topo, test, ctx),
    }
}

/// `ping` sending exactly `count` requests `PING_INTERVAL` apart, each waited
/// for at most 2 s. No `-w` deadline: with one, iputils keeps sending until
/// `count` *replies* arrived, which would stretch the window past the load it is
/// meant to sample and count the request still in flight at the end as lost.
/// The callers bound the wait instead.
fn ping_argv(addr: Ipv4Addr, count: u32) -> Vec<String> {
    vec![
        "ping".into(),
        "-4".into(),
        "-n".into(),
        "-i".into(),
        format!("{:.3}", PING_INTERVAL.as_secs_f64()),
        "-c".into(),
        count.to_string(),
        "-W".into(),
        "2".into(),
        addr.to_string(),
    ]
}

fn idle_rtt(topo: &Topology) -> Result<Rtt> {
    let argv = ping_argv(topo.addr_b(), IDLE_PINGS);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = topo.ns_a().exec(&argv)?;
    let rtt = Rtt::parse_ping(&String::from_utf8_lossy(&out.stdout));
    if rtt.received == 0 {
        bail!(
            "no ping reply ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(rtt)
}

fn sum_ticks(pids: &[u32]) -> Result<u64> {
    pids.iter()
        .map(|&p| ProcStat::read(p).map(|s| s.ticks()))
        .sum()
}

/// Polls until `guard`'s process has exited but is not reaped yet, and returns
/// its final CPU ticks. Gives up after `timeout` (the guard still kills it).
fn final_ticks(guard: &ChildGuard, timeout: Duration, ctx: &Ctx) -> Result<(u64, Instant)> {
    let start = now();
    loop {
        let st = ProcStat::read(guard.pid())
            .with_context(|| format!("reading the CPU time of {}", guard.label()))?;
        if st.is_zombie() {
            return Ok((st.ticks(), now()));
        }
        if start.elapsed() > timeout {
            bail!(
                "{} still running after {timeout:?}; log tail:\n{}",
                guard.label(),
                guard.log_tail(20)
            );
        }
        ctx.check_stop()?;
        sleep(Duration::from_millis(20));
    }
}

fn iperf_test(topo: &Topology, test: TestKind, ctx: &Ctx) -> Result<Outcome> {
    let dir = TempDir::new("perf")?;
    let report_path: PathBuf = dir.join("client.json");
    let addr = topo.addr_b().to_string();
    let secs = ctx.duration.as_secs().max(1).to_string();

    let mut server = topo.ns_b().spawn(
        &format!("iperf3 server in {}", topo.ns_b().name()),
        &["iperf3", "-s", "-1", "-B", &addr, "-p", IPERF_PORT],
    )?;
    let port_filter = format!("sport = :{IPERF_PORT}");
    wait_until(
        "the iperf3 server to listen",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            if let Some(status) = server.try_status()? {
                bail!("iperf3 server exited: {status}: {}", server.log_tail(20));
            }
            ctx.check_stop()?;
            Ok(!topo
                .ns_b()
                .run(&["ss", "-Hltn", &port_filter])?
                .trim()
                .is_empty())
        },
    )?;

    let daemons = topo.daemon_pids();
    let daemons0 = sum_ticks(&daemons)?;
    let server0 = ProcStat::read(server.pid())?.ticks();
    let host0 = HostCpu::read()?;
    let t0 = now();
    let mut argv: Vec<String> = vec![
        "iperf3".into(),
        "-4".into(),
        "-c".into(),
        addr.clone(),
        "-p".into(),
        IPERF_PORT.into(),
        "-t".into(),
        secs,
        "-J".into(),
        "--connect-timeout".into(),
        "5000".into(),
        "--logfile".into(),
        report_path.to_string_lossy().into_owned(),
    ];
    argv.extend(test.iperf_args(&ctx.udp_rate));
    let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut client = topo.ns_a().spawn(
        &format!("iperf3 client in {}", topo.ns_a().name()),
        &argv_ref,
    )?;

    // Latency under load: pings during the single-stream A→B transfer, from
    // past slow start to about a second before the end.
    let loaded_pings = if test == TestKind::Tcp1Fwd {
        let span = ctx
            .duration
            .saturating_sub(LOADED_PING_DELAY + Duration::from_secs(1));
        let count = (span.as_millis() / PING_INTERVAL.as_millis()).max(10);
        Some(u32::try_from(count).unwrap_or(u32::MAX))
    } else {
        None
    };
    let mut ping: Option<ChildGuard> = None;
    let limit = ctx.duration + IPERF_SLACK;
    let (client_ticks, t1) = loop {
        let st = ProcStat::read(client.pid()).context("reading the iperf3 client's CPU time")?;
        if st.is_zombie() {
            break (st.ticks(), now());
        }
        if let (None, Some(count)) = (&ping, loaded_pings) {
            if t0.elapsed() >= LOADED_PING_DELAY {
                let p = ping_argv(topo.addr_b(), count);
                let p: Vec<&str> = p.iter().map(String::as_str).collect();
                ping = Some(topo.ns_a().spawn("ping under load", &p)?);
            }
        }
        if t0.elapsed() > limit {
            bail!(
                "iperf3 client still running after {limit:?}; its log:\n{}",
                client.log_tail(20)
            );
        }
        ctx.check_stop()?;
        sleep(Duration::from_millis(20));
    };
    let daemons1 = sum_ticks(&daemons)?;
    let host1 = HostCpu::read()?;
    let status = client.wait_timeout(Duration::from_secs(5))?;
    let (server_ticks, _) = final_ticks(&server, Duration::from_secs(10), ctx)?;
    server.wait_timeout(Duration::from_secs(5))?;

    let text = std::fs::read_to_string(&report_path).unwrap_or_default();
    let report = IperfReport::parse(&text).map_err(|e| {
        anyhow!(
            "iperf3 client ({status}): {e:#}; client log: {}; server log: {}",
            client.log_tail(10),
            server.log_tail(10)
        )
    })?;
    if !status.success() {
        bail!(
            "iperf3 client exited with {status}: {}",
            client.log_tail(10)
        );
    }

    let rtt = match ping.as_mut() {
        Some(p) => {
            let bound = PING_INTERVAL * loaded_pings.unwrap_or(0) + Duration::from_secs(10);
            p.wait_timeout(bound)?;
            Some(Rtt::parse_ping(&p.log()))
        }
        None => None,
    };

    let gbit = report.received_bytes as f64 * 8.0 / 1e9;
    let daemons_s = ctx.secs(daemons1.saturating_sub(daemons0));
    let iperf_client_s = ctx.secs(client_ticks);
    let iperf_server_s = ctx.secs(server_ticks.saturating_sub(server0));
    let procs_s = daemons_s + iperf_client_s + iperf_server_s;
    let host_busy_s = ctx.secs(host1.busy.saturating_sub(host0.busy));
    let per_gbit = |s: f64| (gbit > 1e-3).then(|| s / gbit);
    let cpu = Cpu {
        wall_s: t1.duration_since(t0).as_secs_f64(),
        daemons_s,
        iperf_client_s,
        iperf_server_s,
        procs_s,
        host_busy_s,
        procs_s_per_gbit: per_gbit(procs_s),
        daemons_s_per_gbit: per_gbit(daemons_s),
        host_s_per_gbit: per_gbit(host_busy_s),
    };
    if test.is_udp() && report.protocol != "UDP" {
        bail!("asked for UDP, iperf3 ran {}", report.protocol);
    }
    Ok(Outcome {
        iperf: Some(report),
        cpu: Some(cpu),
        rtt,
    })
}
