//! The tailnet packet filter on live tunnel traffic (`weft-wg --packet-filter FILE`, re-read
//! on SIGHUP), in network namespaces, on both enforcement paths — the eBPF tc program on the
//! TUN and the userspace matcher (`--no-ebpf`): allowed flows are delivered, denied ones are
//! not and are counted, a subnet router does not forward what is denied, many filter swaps
//! under an always-allowed and an always-denied flow misclassify nothing, and the answer to a
//! UDP query B sends passes without a rule (the reverse-flow cache) while an unsolicited
//! datagram to the same port does not.
//!
//! Needs root, `ip`, `wg`, `socat`, `ping` and `python3`. Tests are named `netns_*` and run one
//! at a time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use weft_testkit::{
    ping, serial, tcp_transfer, veth, wait_until, Family, Netns, Pair, PairBuilder, TempDir, WgImpl,
};

fn weft_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weft-wg"))
}

/// Allowed UDP port (in every filter version) and denied one (in none).
const ALLOWED_PORT: u16 = 6001;
const DENIED_PORT: u16 = 6002;
/// Datagrams sent to each port during the swaps.
const DATAGRAMS: u64 = 1500;
/// Filter swaps (SIGHUPs) while they flow.
const SWAPS: usize = 24;

/// Admits everything to any address: B starts with it so that the pair's handshake pings pass
/// before B's tunnel addresses are known.
const ALLOW_ALL: &str = r#"{"LocalNets": ["0.0.0.0/0", "::/0"],
  "PacketFilter": [{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}]}"#;

/// Filter version `v` for B: TCP to the ports `tcp_transfer` uses and UDP to [`ALLOWED_PORT`]
/// from A, never [`DENIED_PORT`] nor TCP to [`DENIED_PORT`]. (ICMP passes wherever a rule
/// matches the addresses, as in official clients.) Versions differ in an extra rule and rule order, so
/// each swap installs a different filter.
fn filter_json(a: IpAddr, b: IpAddr, v: usize) -> String {
    let tcp = format!(
        r#"{{"SrcIPs": ["{a}"], "DstPorts": [{{"IP": "{b}", "Ports": {{"First": 20000, "Last": 39999}}}}], "IPProto": [6]}}"#
    );
    let udp = format!(
        r#"{{"SrcIPs": ["{a}"], "DstPorts": [{{"IP": "{b}", "Ports": {{"First": {ALLOWED_PORT}, "Last": {ALLOWED_PORT}}}}}], "IPProto": [17]}}"#
    );
    let extra = format!(
        r#"{{"SrcIPs": ["192.0.2.{}"], "DstPorts": [{{"IP": "{b}", "Ports": {{"First": 1, "Last": 65535}}}}]}}"#,
        1 + v % 200
    );
    let rules = if v.is_multiple_of(2) {
        format!("{tcp}, {udp}, {extra}")
    } else {
        format!("{extra}, {udp}, {tcp}")
    };
    format!(r#"{{"LocalNets": ["{b}/32"], "PacketFilter": [{rules}]}}"#)
}

/// Sends SIGHUP to the daemon of side B and waits until it has enforced `count` filters in
/// all (counted in its log).
fn reload(pair: &Pair, count: usize) -> Result<()> {
    let pid = pair.b.daemon.pid().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .context("kill -HUP")?;
    ensure!(status.success(), "kill -HUP {pid}: {status}");
    wait_until(
        &format!("filter #{count} to be installed"),
        Duration::from_secs(5),
        Duration::from_millis(10),
        || Ok(installs(&pair.b.daemon.log()) >= count),
    )
}

fn installs(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("packet filter enforced") && l.contains(" path="))
        .count()
}

/// What the filter dropped, from a stopped daemon's log: the eBPF program's counter on the
/// kernel path, the sum of the shards' `rx_filtered` on the userspace one.
fn dropped(log: &str, path: Enforce) -> Result<u64> {
    if path == Enforce::Userspace {
        return filtered_total(log);
    }
    let line = log
        .lines()
        .find(|l| l.contains("eBPF packet filter counters"))
        .context("no eBPF counters in the log")?;
    let rest = line.split("dropped=").nth(1).context("no dropped=")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Ok(digits.parse()?)
}

/// Sum of `rx_filtered` over the "shard stopped" lines of a stopped daemon's log.
fn filtered_total(log: &str) -> Result<u64> {
    let mut total = 0;
    let mut shards = 0;
    for line in log.lines().filter(|l| l.contains("shard stopped")) {
        // The receive path's counters follow `rx=`; the transmit path's (`tx=`) come first.
        let rx = line.split(" rx=").nth(1).unwrap_or_default();
        let Some(rest) = rx.split("rx_filtered: ").nth(1) else {
            bail!("no rx_filtered in {line:?}");
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        total += digits.parse::<u64>().context("rx_filtered value")?;
        shards += 1;
    }
    ensure!(shards > 0, "no 'shard stopped' lines in the log");
    Ok(total)
}

/// Connects over TCP and prints how it went: `connected`, `refused` (the SYN reached the
/// host, which has no listener: it passed the filter) or `timeout` (it was dropped).
const CONNECT: &str = r#"
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
    print("connected")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
"#;

/// What [`CONNECT`] printed for `addr:port` from side A.
fn connect(pair: &Pair, addr: IpAddr, port: u16) -> Result<String> {
    let out = pair.a.ns.run(&[
        "python3",
        "-c",
        CONNECT,
        &addr.to_string(),
        &port.to_string(),
    ])?;
    Ok(out.trim().to_owned())
}

/// Receives UDP on B's tunnel address, both ports, until 2 s pass without a datagram (at most
/// 60 s); prints `allowed denied`.
const RECEIVER: &str = r#"
import select, socket, sys, time
addr, p1, p2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = {}
for p in (p1, p2):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind((addr, p)); socks[s] = p
counts = {p1: 0, p2: 0}
print("ready", flush=True)
start = time.time(); last = None
while time.time() - start < 60:
    r, _, _ = select.select(list(socks), [], [], 0.2)
    for s in r:
        s.recv(2048); counts[socks[s]] += 1; last = time.time()
    if last is not None and time.time() - last > 2:
        break
print(counts[p1], counts[p2], flush=True)
"#;

/// Sends `n` datagrams to each port, alternating, 1 ms apart.
const SENDER: &str = r#"
import socket, sys, time
addr, p1, p2, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(n):
    s.sendto(b"a%06d" % i, (addr, p1))
    s.sendto(b"d%06d" % i, (addr, p2))
    time.sleep(0.001)
"#;

/// Where B enforces its filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Enforce {
    /// The eBPF tc program on B's TUN (the default).
    Kernel,
    /// The engine's userspace matcher (`--no-ebpf`).
    Userspace,
}

fn start_pair(dir: &Path, path: Enforce) -> Result<(Pair, PathBuf)> {
    let file = dir.join("filter.json");
    std::fs::write(&file, ALLOW_ALL)?;
    let mut args = vec!["--packet-filter".to_owned(), file.display().to_string()];
    if path == Enforce::Userspace {
        args.push("--no-ebpf".into());
    }
    let b = WgImpl::WeftWithArgs(weft_path(), args);
    let mut pair = PairBuilder::new(WgImpl::Weft(weft_path()), b).build()?;
    pair.run(|p| p.handshake())?;
    let log = pair.b.daemon.log();
    ensure!(installs(&log) == 1, "the start filter was enforced once");
    ensure!(
        log.contains(&format!("path={path:?}")),
        "B does not enforce on the {path:?} path:\n{log}"
    );
    Ok((pair, file))
}

#[test]
fn netns_filter_ebpf_delivers_allowed_and_drops_denied_under_swaps() {
    swaps(Enforce::Kernel);
}

#[test]
fn netns_filter_userspace_delivers_allowed_and_drops_denied_under_swaps() {
    swaps(Enforce::Userspace);
}

fn swaps(path: Enforce) {
    let _serial = serial();
    let dir = TempDir::new("filter").unwrap();
    let (mut pair, file) = start_pair(dir.path(), path).unwrap();
    let result = pair.run(|pair| {
        let a = pair.a.tunnel(Family::V4);
        let b = pair.b.tunnel(Family::V4);
        std::fs::write(&file, filter_json(a, b, 0))?;
        reload(pair, 2)?;

        // ICMP passes: a rule matches the addresses.
        ping(&pair.a.ns, b, 2)?;
        // TCP to a port in the rule: a hashed 1 MiB transfer gets through.
        let report = tcp_transfer(&pair.a.ns, &pair.b.ns, b, 1 << 20)?;
        ensure!(
            report.bytes == 1 << 20,
            "transferred {} bytes",
            report.bytes
        );

        // UDP to the allowed and the denied port while the filter is swapped SWAPS times.
        let b_str = b.to_string();
        let (p1, p2) = (ALLOWED_PORT.to_string(), DENIED_PORT.to_string());
        let mut receiver = pair.b.ns.spawn(
            "udp receiver",
            &["python3", "-c", RECEIVER, &b_str, &p1, &p2],
        )?;
        wait_until(
            "the UDP receiver to bind",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || Ok(receiver.log().contains("ready")),
        )?;
        let n = DATAGRAMS.to_string();
        let mut sender = pair.a.ns.spawn(
            "udp sender",
            &["python3", "-c", SENDER, &b_str, &p1, &p2, &n],
        )?;
        for v in 1..=SWAPS {
            std::thread::sleep(Duration::from_millis(60));
            std::fs::write(&file, filter_json(a, b, v))?;
            reload(pair, 2 + v)?;
        }
        let sent = sender.wait_timeout(Duration::from_secs(60))?;
        ensure!(sent.success(), "sender failed: {}", sender.log_tail(10));
        let got = receiver.wait_timeout(Duration::from_secs(70))?;
        ensure!(got.success(), "receiver failed: {}", receiver.log_tail(10));
        let log = receiver.log();
        let counts: Vec<u64> = log
            .lines()
            .last()
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        ensure!(counts.len() == 2, "receiver printed {log:?}");
        ensure!(
            counts[1] == 0,
            "{} datagrams to the denied port were delivered",
            counts[1]
        );
        ensure!(
            counts[0] == DATAGRAMS,
            "{} of {DATAGRAMS} datagrams to the allowed port were delivered",
            counts[0]
        );
        println!(
            "{SWAPS} filter swaps under traffic: {} of {DATAGRAMS} allowed delivered, 0 denied",
            counts[0]
        );
        Ok(())
    });
    result.unwrap();
    // The drop counter: every datagram to the denied port, nothing else.
    pair.b.daemon.stop().unwrap();
    let total = dropped(&pair.b.daemon.log(), path).unwrap();
    assert_eq!(
        total, DATAGRAMS,
        "packets the filter dropped at B ({path:?})"
    );
}

#[test]
fn netns_filter_reload_keeps_the_old_filter_when_the_file_is_bad() {
    let _serial = serial();
    let dir = TempDir::new("filter").unwrap();
    let (mut pair, file) = start_pair(dir.path(), Enforce::Kernel).unwrap();
    pair.run(|pair| {
        let a = pair.a.tunnel(Family::V4);
        // With the allow-all start filter a SYN to the (later) denied port reaches B.
        ensure!(connect(pair, pair.b.tunnel(Family::V4), DENIED_PORT)? == "refused");
        let b = pair.b.tunnel(Family::V4);
        std::fs::write(&file, filter_json(a, b, 0))?;
        reload(pair, 2)?;
        let check = |pair: &Pair| -> Result<()> {
            let denied = connect(pair, b, DENIED_PORT)?;
            ensure!(denied == "timeout", "SYN to the denied port: {denied}");
            let allowed = connect(pair, b, 20001)?;
            ensure!(allowed == "refused", "SYN to an allowed port: {allowed}");
            Ok(())
        };
        check(pair)?;
        // A broken file: reported, and the filter in force stays — never a fall back to
        // allow-all or deny-all.
        std::fs::write(&file, "{ not json")?;
        let pid = pair.b.daemon.pid().to_string();
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()?;
        wait_until(
            "the reload error to be logged",
            Duration::from_secs(5),
            Duration::from_millis(10),
            || Ok(pair.b.daemon.log().contains("packet filter not reloaded")),
        )?;
        ensure!(installs(&pair.b.daemon.log()) == 2, "nothing was installed");
        check(pair)
    })
    .unwrap();
}

/// B routes 192.168.50.0/24 (host C behind it) for A: the filter judges forwarded traffic by
/// its real destination, so a denied port on C is never forwarded and an allowed one is.
#[test]
fn netns_filter_ebpf_subnet_router_does_not_forward_denied_traffic() {
    subnet_router(Enforce::Kernel);
}

#[test]
fn netns_filter_userspace_subnet_router_does_not_forward_denied_traffic() {
    subnet_router(Enforce::Userspace);
}

fn subnet_router(path: Enforce) {
    let _serial = serial();
    let dir = TempDir::new("filter").unwrap();
    let (mut pair, file) = start_pair(dir.path(), path).unwrap();
    let c = Netns::new("c").unwrap();
    pair.run(|pair| {
        veth(&pair.b.ns, "rb", &c, "rc")?;
        pair.b.ns.addr_add("rb", "192.168.50.1/24")?;
        c.addr_add("rc", "192.168.50.2/24")?;
        pair.b.ns.link_up("rb")?;
        c.link_up("rc")?;
        c.ip(&["route", "add", "default", "via", "192.168.50.1"])?;
        pair.b.ns.sysctl("net.ipv4.ip_forward", "1")?;
        // A sends 192.168.50.0/24 to B through the tunnel.
        let allowed = format!(
            "{}/32,{}/128,192.168.50.0/24",
            pair.b.tunnel_v4, pair.b.tunnel_v6
        );
        pair.a.wg_set(&[
            "peer",
            pair.a.peer_public.as_str(),
            "allowed-ips",
            allowed.as_str(),
        ])?;
        pair.a.ns.route_add("192.168.50.0/24", &pair.a.ifname)?;

        let a = pair.a.tunnel(Family::V4);
        let host_c: IpAddr = "192.168.50.2".parse()?;
        // Allow-all start filter: both ports reach C (no listener there: refused).
        ensure!(
            connect(pair, host_c, DENIED_PORT)? == "refused",
            "C reachable"
        );
        let rules = format!(
            r#"{{"LocalNets": ["{}/32", "192.168.50.0/24"], "PacketFilter": [{{"SrcIPs": ["{a}"],
                "DstPorts": [{{"IP": "192.168.50.2", "Ports": {{"First": 20000, "Last": 39999}}}}],
                "IPProto": [6]}}]}}"#,
            pair.b.tunnel_v4
        );
        std::fs::write(&file, rules)?;
        reload(pair, 2)?;
        let denied = connect(pair, host_c, DENIED_PORT)?;
        ensure!(denied == "timeout", "SYN to C's denied port: {denied}");
        let open = connect(pair, host_c, 20001)?;
        ensure!(open == "refused", "SYN to C's allowed port: {open}");
        let report = tcp_transfer(&pair.a.ns, &c, host_c, 256 << 10)?;
        ensure!(
            report.bytes == 256 << 10,
            "transfer to C: {} bytes",
            report.bytes
        );
        Ok(())
    })
    .unwrap();
}

/// A's UDP echo server (on A's tunnel address) and the port B queries from.
const ECHO_PORT: u16 = 7007;
const QUERY_PORT: u16 = 6100;

/// Echoes every datagram back to its sender.
const ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
"#;

/// From B's tunnel address and QUERY_PORT: sends a query to the echo server and waits for the
/// answer (`reply` or `timeout`), then counts what else arrives in the next `argv[5]` seconds
/// and prints `extra N`.
const QUERY: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(3)
s.sendto(b"query", (sys.argv[3], int(sys.argv[4])))
try:
    data, peer = s.recvfrom(2048)
    print("reply" if data == b"query" else "wrong", flush=True)
except socket.timeout:
    print("timeout", flush=True)
extra = 0
end = time.time() + float(sys.argv[5])
while time.time() < end:
    s.settimeout(max(0.01, end - time.time()))
    try:
        s.recvfrom(2048); extra += 1
    except socket.timeout:
        pass
print("extra", extra, flush=True)
"#;

/// Sends one datagram from `argv[1]:argv[2]` to `argv[3]:argv[4]`.
const UNSOLICITED: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.sendto(b"unsolicited", (sys.argv[3], int(sys.argv[4])))
"#;

/// B's filter allows nothing from A on UDP. B queries A's UDP echo server and gets the answer
/// (a reply to B's own flow, accepted without a rule: the reverse-flow cache); a datagram A
/// then sends to the same port of B from another port is unsolicited and dropped (counted).
#[test]
fn netns_filter_ebpf_udp_replies_pass_unsolicited_datagrams_do_not() {
    udp_replies(Enforce::Kernel);
}

#[test]
fn netns_filter_userspace_udp_replies_pass_unsolicited_datagrams_do_not() {
    udp_replies(Enforce::Userspace);
}

fn udp_replies(path: Enforce) {
    let _serial = serial();
    let dir = TempDir::new("filter").unwrap();
    let (mut pair, file) = start_pair(dir.path(), path).unwrap();
    pair.run(|pair| {
        let a = pair.a.tunnel(Family::V4);
        let b = pair.b.tunnel(Family::V4);
        let tcp_only = format!(
            r#"{{"LocalNets": ["{b}/32"], "PacketFilter": [{{"SrcIPs": ["{a}"],
                "DstPorts": [{{"IP": "{b}", "Ports": {{"First": 20000, "Last": 39999}}}}],
                "IPProto": [6]}}]}}"#
        );
        std::fs::write(&file, tcp_only)?;
        reload(pair, 2)?;
        let (a_str, b_str) = (a.to_string(), b.to_string());
        let echo = pair.a.ns.spawn(
            "udp echo",
            &["python3", "-c", ECHO, &a_str, &ECHO_PORT.to_string()],
        )?;
        wait_until(
            "the echo server to bind",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || Ok(echo.log().contains("ready")),
        )?;
        let mut query = pair.b.ns.spawn(
            "udp query",
            &[
                "python3",
                "-c",
                QUERY,
                &b_str,
                &QUERY_PORT.to_string(),
                &a_str,
                &ECHO_PORT.to_string(),
                "3",
            ],
        )?;
        wait_until(
            "the query to be answered",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || Ok(query.log().contains("reply") || query.log().contains("timeout")),
        )?;
        ensure!(
            query.log().contains("reply"),
            "B's query was not answered ({path:?}): {}",
            query.log()
        );
        // From another port of A to B's query port: not a reply.
        pair.a.ns.run(&[
            "python3",
            "-c",
            UNSOLICITED,
            &a_str,
            &(ECHO_PORT + 1).to_string(),
            &b_str,
            &QUERY_PORT.to_string(),
        ])?;
        let done = query.wait_timeout(Duration::from_secs(15))?;
        ensure!(done.success(), "query failed: {}", query.log_tail(10));
        ensure!(
            query.log().contains("extra 0"),
            "the unsolicited datagram was delivered ({path:?}): {}",
            query.log()
        );
        drop(echo);
        Ok(())
    })
    .unwrap();
    pair.b.daemon.stop().unwrap();
    let total = dropped(&pair.b.daemon.log(), path).unwrap();
    assert_eq!(total, 1, "packets the filter dropped at B ({path:?})");
}
