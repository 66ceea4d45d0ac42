//! Official Tailscale clients (tailscaled 1.96.4, `scripts/realclients.sh`) behind real NATs,
//! with no debug knobs: each node in one host namespace of [`weft_testkit::NatLab`] (nftables
//! NATs with a WAN input firewall; see its documentation for the topology), `weft-coordd` in
//! the lab's internet namespace on `192.0.2.1:8080`, and its DERP map pointing at the lab's
//! `weft-derper` (`https://192.0.2.1:3340`, certificate pinned, STUN on 3478). No `TS_DEBUG_*`
//! variable reaches the daemons (the test removes any from its own environment).
//!
//! - Both NATs hard (`masquerade fully-random`): no direct path exists, so the nodes talk
//!   through weft-derper on their own — `tailscale ping` says `via DERP(weft)`, a TSMP ping and
//!   an HTTP download over the tailnet work, and the relay's `/metrics` count the bytes.
//! - Both NATs easy (`masquerade`): the clients learn their public endpoints from weft-derper's
//!   STUN, exchange them over the relay, punch through, and `tailscale ping` reports the peer's
//!   NAT address; a download afterwards leaves the relay's counters (almost) unchanged.
//! - Both NATs easy, data first: a TSMP ping (through WireGuard) instead of a disco ping.
//!
//! Each test prints the time to the first pong, its path, and (easy) the time to direct, all
//! from the start of one `tailscale ping` (pongs timestamped as their lines appear, n1's
//! `tailscale status` polled in between, ~every 0.05–0.1 s). Measured on the 2-core VM: first
//! pong 0.06 s, via `DERP(weft)` (disco) or `TSMP`; easy/easy direct after 3.0–3.1 s with disco
//! pings only (every run); after a TSMP ping, 0.07–0.08 s in 5 of 9 runs and 6.03–6.06 s in 4
//! (in the slow runs whose logs were read, n2, the responder, was direct at once). Those
//! seconds are tailscaled's timers, not the lab's or weft's (traced with `TS_DEBUG_DISCO=1` in
//! one-off runs outside this file, and in tailscale's `wgengine/magicsock/endpoint.go`): a CLI
//! disco ping (`endpoint.discoPing`, purpose `pingCLI`) probes the peer's candidate endpoints
//! and arms the heartbeat timer but sends no CallMeMaybe, so n1's probes die in n2's NAT
//! (nothing has gone from n2 towards n1 yet; a NAT drops unsolicited packets) and n2 is not
//! told to probe back; the first heartbeat (`heartbeatInterval`, 3 s) calls
//! `sendDiscoPingsLocked(now, true)`, which sends the CallMeMaybe over DERP, n2 probes n1's
//! endpoints through the NAT state n1's probes left, and both sides go direct within
//! milliseconds. Data through WireGuard takes `endpoint.send`, which sends the CallMeMaybe at
//! once; whether n1's own first probe survives is then a race (see the test).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use support::Tsd;
use weft_testkit::{now, serial, wait_until, ChildGuard, NatKind, NatLab, DERP_IP, NAT_PUBLIC};

const LOGIN: &str = "http://192.0.2.1:8080";
const BLOB_LEN: usize = 4 << 20;

struct Lab {
    lab: NatLab,
    key: String,
    nodes: Vec<Tsd>,
    procs: Vec<ChildGuard>,
    _coordd: ChildGuard,
}

impl Lab {
    fn new(kinds: [NatKind; 2]) -> Result<Self> {
        let clients = support::clients_dir()?;
        let lab = NatLab::new(&support::derper_bin()?, kinds, false)?;
        let coord = lab.dir.join("coord");
        let coordd = support::start_coordd(
            &lab.inet,
            &coord,
            &format!("{DERP_IP}:8080"),
            &format!("https://{DERP_IP}:3340"),
            &lab.pin,
        )?;
        let key = support::alice_key(&coord)?;
        let nodes = vec![
            Tsd::new(&clients, lab.dir.path(), "n1"),
            Tsd::new(&clients, lab.dir.path(), "n2"),
        ];
        Ok(Self {
            lab,
            key,
            nodes,
            procs: Vec::new(),
            _coordd: coordd,
        })
    }

    /// Starts node `i` in host namespace `i` (n1 with a SOCKS5 proxy into the tailnet) and
    /// logs it in.
    fn start(&mut self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        let ns = &self.lab.hosts[i];
        let mut cmd = node.command(ns, support::USERSPACE)?;
        if i == 0 {
            cmd.arg("--socks5-server=127.0.0.1:1055");
        }
        self.procs.push(node.spawn(cmd)?);
        node.up(ns, LOGIN, &self.key, &[])
    }

    fn ts(&self, i: usize, args: &[&str], timeout: Duration) -> Result<String> {
        self.nodes[i].ts(&self.lab.hosts[i], args, timeout)
    }

    /// Both nodes up and seeing each other online; n2's tailnet address.
    fn join(&mut self) -> Result<String> {
        self.start(0)?;
        self.start(1)?;
        for (a, b) in [(0, 1), (1, 0)] {
            let peer = self.nodes[b].name.clone();
            wait_until(
                &format!("{} sees {peer} online", self.nodes[a].name),
                Duration::from_secs(30),
                Duration::from_millis(300),
                || {
                    Ok(self.nodes[a].peers(&self.lab.hosts[a])?
                        == vec![(peer.clone(), format!("{peer}.tail.weft."), true)])
                },
            )?;
        }
        let ip = self.ts(1, &["ip", "-4"], Duration::from_secs(10))?;
        Ok(ip.trim().to_owned())
    }

    /// `tailscale netcheck` on node `i`: STUN through the NAT must have answered with the
    /// NAT's public address (weft-derper's STUN, from coordd's DERP map).
    fn netcheck(&self, i: usize) -> Result<String> {
        let out = self.ts(i, &["netcheck"], Duration::from_secs(30))?;
        if !out.contains("UDP: true") || !out.contains(&format!("IPv4: yes, {}:", NAT_PUBLIC[i])) {
            bail!("netcheck on node {i} did not get its NAT's address by STUN:\n{out}");
        }
        Ok(out)
    }

    /// `tailscale ping ARGS ip` from node `from`, run in the background and watched: each
    /// pong's path (`DERP(weft)` or `ip:port`) with the time its line appeared, and the time
    /// n1's `tailscale status` first showed a direct `CurAddr` (polled between, ~every 0.1 s).
    /// Returns when `stop(pongs, status_direct_after, exited)` holds, or after `limit`.
    fn ping_watch(
        &self,
        from: usize,
        ip: &str,
        args: &[&str],
        limit: Duration,
        stop: impl Fn(&[(Duration, String)], Option<Duration>, bool) -> bool,
    ) -> Result<Watch> {
        let mut argv = vec!["ping"];
        argv.extend_from_slice(args);
        argv.push(ip);
        let t0 = now();
        let mut ping = ChildGuard::spawn(
            "tailscale ping",
            self.nodes[from].cli(&self.lab.hosts[from], &argv)?,
        )?;
        let mut w = Watch::default();
        loop {
            let exited = ping.try_status()?.is_some();
            let log = ping.log();
            for l in log
                .lines()
                .filter(|l| l.starts_with("pong from"))
                .skip(w.pongs.len())
            {
                w.pongs
                    .push((t0.elapsed(), pong_path(l).unwrap_or_default()));
            }
            if w.cur_addr.is_none() {
                if let Ok((cur, _)) = self.peer_path(from) {
                    if !cur.is_empty() {
                        w.cur_addr = Some((t0.elapsed(), cur));
                    }
                }
            }
            w.log = log;
            if stop(&w.pongs, w.cur_addr.as_ref().map(|c| c.0), exited) || t0.elapsed() > limit {
                return Ok(w);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The relay's `/metrics`, as `name{labels}` → value.
    fn relay_metrics(&self) -> Result<BTreeMap<String, f64>> {
        let out = self.lab.inet.exec_env(
            Duration::from_secs(10),
            &[],
            &[
                "curl",
                "-sk",
                "--max-time",
                "5",
                &format!("https://{DERP_IP}:3340/metrics"),
            ],
        )?;
        if !out.status.success() {
            bail!("curl /metrics: {}", String::from_utf8_lossy(&out.stderr));
        }
        let m: BTreeMap<String, f64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect();
        if m.is_empty() {
            bail!("no metrics from the relay");
        }
        Ok(m)
    }

    /// n2 serves a 4 MiB file over HTTP on its loopback (userspace tailscaled hands inbound
    /// tailnet connections to 127.0.0.1); the server and the file's bytes.
    fn serve_blob(&self) -> Result<(ChildGuard, Vec<u8>)> {
        let www = self.lab.dir.join("www");
        std::fs::create_dir_all(&www)?;
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let blob: Vec<u8> = (0..BLOB_LEN)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect();
        std::fs::write(www.join("blob"), &blob)?;
        let http = self.lab.hosts[1].spawn(
            "http.server",
            &[
                "python3",
                "-m",
                "http.server",
                "8000",
                "--bind",
                "127.0.0.1",
                "--directory",
                www.to_str().unwrap(),
            ],
        )?;
        Ok((http, blob))
    }

    /// n1 downloads `http://IP:8000/blob` through its SOCKS5 proxy into the tailnet: the bytes
    /// and the time the download took.
    fn download(&self, ip: &str) -> Result<(Vec<u8>, Duration)> {
        let out = self.lab.dir.join("blob.got");
        let _ = std::fs::remove_file(&out);
        let t0 = now();
        let res = self.lab.hosts[0].exec_env(
            Duration::from_secs(40),
            &[],
            &[
                "curl",
                "-s",
                "--max-time",
                "30",
                "--socks5-hostname",
                "127.0.0.1:1055",
                "-o",
                out.to_str().unwrap(),
                &format!("http://{ip}:8000/blob"),
            ],
        )?;
        let took = t0.elapsed();
        if !res.status.success() {
            bail!("download failed: {}", String::from_utf8_lossy(&res.stderr));
        }
        Ok((std::fs::read(&out)?, took))
    }

    /// Node `i`'s view of its peer: (CurAddr, Relay) from `tailscale status --json`.
    fn peer_path(&self, i: usize) -> Result<(String, String)> {
        let s = self.nodes[i].status(&self.lab.hosts[i])?;
        let p = s["Peer"]
            .as_object()
            .and_then(|m| m.values().next().cloned())
            .unwrap_or_default();
        Ok((
            p["CurAddr"].as_str().unwrap_or_default().to_owned(),
            p["Relay"].as_str().unwrap_or_default().to_owned(),
        ))
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for p in &self.procs {
            s.push_str(&format!("--- {} ---\n{}\n", p.label(), p.log_tail(60)));
        }
        s.push_str(&format!(
            "--- weft-derper ---\n{}\n",
            self.lab
                .derper_log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        ));
        s
    }
}

/// What [`Lab::ping_watch`] saw.
#[derive(Debug, Default)]
struct Watch {
    /// (time since the ping started, path) per pong.
    pongs: Vec<(Duration, String)>,
    /// When the pinging node's status first showed a direct address, and that address.
    cur_addr: Option<(Duration, String)>,
    /// The command's output.
    log: String,
}

/// The path of a `tailscale ping` pong line: `pong from n2 (100.64.0.2) via DERP(weft) in
/// 3ms` → `DERP(weft)`, `… via 203.0.113.1:41641 in 1ms` → `203.0.113.1:41641`.
fn pong_path(line: &str) -> Option<String> {
    line.split(" via ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_owned)
}

fn metric(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Both NATs hard: the official clients cannot go direct and relay through weft-derper by
/// themselves.
#[test]
fn netns_realclients_nat_hard_hard_relayed_through_weft_derper() {
    let _serial = serial();
    let mut lab = Lab::new([NatKind::Hard, NatKind::Hard]).unwrap();
    let t_start = now();
    let ip = lab.join().unwrap();
    let t_joined = t_start.elapsed();
    for i in 0..2 {
        let nc = lab.netcheck(i).unwrap();
        eprintln!("netcheck n{}:\n{nc}", i + 1);
    }
    // Ten pings over ~10 s, all relayed: a fully-random NAT gives every destination a new
    // port, so the endpoints the peers learnt by STUN never answer.
    let w = lab
        .ping_watch(
            0,
            &ip,
            &["--c", "10", "--timeout", "2s", "--until-direct=false"],
            Duration::from_secs(40),
            |_, _, exited| exited,
        )
        .unwrap();
    assert!(
        w.pongs.len() >= 8,
        "pongs missing:\n{}\n{}",
        w.log,
        lab.logs()
    );
    assert!(
        w.pongs.iter().all(|(_, p)| p == "DERP(weft)"),
        "not all relayed:\n{}",
        w.log
    );
    assert!(w.cur_addr.is_none(), "a direct path appeared: {w:?}");
    let (first, path) = w.pongs[0].clone();
    let tsmp = lab
        .ts(
            0,
            &["ping", "--tsmp", "--c", "3", &ip],
            Duration::from_secs(30),
        )
        .unwrap();
    assert!(tsmp.contains("via TSMP"), "{tsmp}");

    // A download through WireGuard over the relay: every byte, and the relay counted them.
    let (_http, blob) = lab.serve_blob().unwrap();
    wait_until(
        "n2's HTTP server reachable over the tailnet",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || support::reachable_via_socks(&lab.lab.hosts[0], &format!("http://{ip}:8000/")),
    )
    .unwrap();
    let before = lab.relay_metrics().unwrap();
    let (got, took) = lab.download(&ip).unwrap();
    let after = lab.relay_metrics().unwrap();
    assert!(
        got == blob,
        "download differs ({} of {BLOB_LEN} bytes)",
        got.len()
    );
    let d = |n: &str| metric(&after, n) - metric(&before, n);
    let (pkts, bytes) = (d("derp_packets_sent_total"), d("derp_bytes_sent_total"));
    // Drops over the whole test, by reason and kind (only the non-zero ones).
    let dropped: Vec<String> = after
        .iter()
        .filter(|(k, v)| k.starts_with("derp_packets_dropped_total") && **v > 0.0)
        .map(|(k, v)| format!("{}={v}", k.trim_start_matches("derp_packets_dropped_total")))
        .collect();
    assert!(metric(&after, "derp_packets_sent_total") > 0.0);
    assert!(
        bytes >= BLOB_LEN as f64,
        "the relay carried {bytes} bytes during a {BLOB_LEN}-byte download: not relayed?"
    );
    let (cur, relay) = lab.peer_path(0).unwrap();
    assert_eq!(
        (cur.as_str(), relay.as_str()),
        ("", "weft"),
        "n1's path to n2"
    );
    eprintln!(
        "hard/hard: joined after {}; first pong {} after the ping started, via {path}; no direct path \
         (n1's CurAddr empty, Relay {relay}); {BLOB_LEN}-byte download in {} ({:.0} Mb/s) \
         through the relay: +{pkts} packets / +{bytes} bytes sent by weft-derper, \
         {} packets sent in all, dropped {dropped:?}",
        secs(t_joined),
        secs(first),
        secs(took),
        BLOB_LEN as f64 * 8.0 / took.as_secs_f64() / 1e6,
        metric(&after, "derp_packets_sent_total"),
    );
}

/// Both NATs easy: the official clients find a direct path from weft-derper's STUN answers.
#[test]
fn netns_realclients_nat_easy_easy_goes_direct() {
    let _serial = serial();
    let mut lab = Lab::new([NatKind::Easy, NatKind::Easy]).unwrap();
    let t_start = now();
    let ip = lab.join().unwrap();
    let t_joined = t_start.elapsed();
    for i in 0..2 {
        let nc = lab.netcheck(i).unwrap();
        eprintln!("netcheck n{}:\n{nc}", i + 1);
    }
    // `tailscale ping` (until direct, one ping a second) while n1's status is polled.
    let w = lab
        .ping_watch(
            0,
            &ip,
            &["--c", "60", "--timeout", "2s"],
            Duration::from_secs(70),
            |_, _, exited| exited,
        )
        .unwrap();
    let Some((first, path)) = w.pongs.first().cloned() else {
        panic!("no pong:\n{}\n{}", w.log, lab.logs());
    };
    let Some((to_direct, direct)) = w.pongs.iter().find(|(_, p)| p != "DERP(weft)").cloned() else {
        panic!(
            "no direct path within 60 pings: {w:?}\nn1 status {:?}\n{}",
            lab.peer_path(0),
            lab.logs()
        );
    };
    let paths: Vec<&str> = w.pongs.iter().map(|(_, p)| p.as_str()).collect();
    let Some((status_direct, status_addr)) = w.cur_addr.clone() else {
        panic!("direct pong but n1's status never showed a CurAddr: {w:?}");
    };
    assert!(
        status_addr.starts_with(&format!("{}:", NAT_PUBLIC[1])),
        "n1's CurAddr {status_addr}"
    );
    assert!(
        direct.starts_with(&format!("{}:", NAT_PUBLIC[1])),
        "direct, but not to n2's NAT: {direct}"
    );
    // How the clients got there, in their own words.
    for p in &lab.procs {
        for l in p
            .log()
            .lines()
            .filter(|l| l.contains("magicsock: disco:"))
            .take(12)
        {
            eprintln!("{}: {l}", p.label());
        }
    }
    // And the other way.
    let ip1 = lab.ts(0, &["ip", "-4"], Duration::from_secs(10)).unwrap();
    let back = lab
        .ts(
            1,
            &["ping", "--c", "10", "--timeout", "2s", ip1.trim()],
            Duration::from_secs(40),
        )
        .unwrap();
    let back_path = back
        .lines()
        .rev()
        .find(|l| l.starts_with("pong from"))
        .and_then(pong_path)
        .unwrap_or_default();
    assert!(
        back_path.starts_with(&format!("{}:", NAT_PUBLIC[0])),
        "n2 → n1 not direct to n1's NAT:\n{back}"
    );

    // A download now goes around the relay.
    let (_http, blob) = lab.serve_blob().unwrap();
    let before = lab.relay_metrics().unwrap();
    let mut got = Vec::new();
    let mut took = Duration::ZERO;
    wait_until(
        "download over the direct path",
        Duration::from_secs(40),
        Duration::from_millis(500),
        || {
            (got, took) = lab.download(&ip).unwrap_or_default();
            Ok(got == blob)
        },
    )
    .unwrap();
    let after = lab.relay_metrics().unwrap();
    let relayed =
        metric(&after, "derp_bytes_sent_total") - metric(&before, "derp_bytes_sent_total");
    assert!(
        relayed < (BLOB_LEN / 10) as f64,
        "{relayed} bytes relayed during a {BLOB_LEN}-byte download on a direct path"
    );
    let (cur, _) = lab.peer_path(0).unwrap();
    assert!(
        cur.starts_with(&format!("{}:", NAT_PUBLIC[1])),
        "CurAddr {cur}"
    );
    eprintln!(
        "easy/easy: joined after {}; first pong {} after the ping started, via {path}; direct after {} \
         by n1's status CurAddr, {} by the pongs (times from the start of `tailscale ping`, one \
         ping a second; paths {paths:?}, n1 → {direct}, n2 → {back_path}); \
         {BLOB_LEN}-byte download in {} ({:.0} Mb/s) with {relayed} bytes through the relay",
        secs(t_joined),
        secs(first),
        secs(status_direct),
        secs(to_direct),
        secs(took),
        BLOB_LEN as f64 * 8.0 / took.as_secs_f64() / 1e6,
    );
}

/// Both NATs easy, and the first thing sent is data through WireGuard (a TSMP ping) rather than
/// a disco `tailscale ping`: tailscaled starts discovery with a CallMeMaybe at once
/// (`endpoint.send` → `sendDiscoPingsLocked(now, true)`) instead of at its first 3 s
/// heartbeat. n2 goes direct at once; n1 too, or — when its first probe reached n2's NAT
/// before anything of n2's had left it — at the heartbeat 6 s later (the first one at 3 s
/// skips an endpoint pinged less than `discoPingInterval`, 5 s, ago).
#[test]
fn netns_realclients_nat_easy_easy_direct_on_traffic() {
    let _serial = serial();
    let mut lab = Lab::new([NatKind::Easy, NatKind::Easy]).unwrap();
    let ip = lab.join().unwrap();
    let w = lab
        .ping_watch(
            0,
            &ip,
            &["--tsmp", "--c", "1", "--timeout", "5s"],
            Duration::from_secs(20),
            // Until n1 is direct and the pong is printed (either comes first), or the ping
            // gave up without a pong.
            |pongs, direct, exited| {
                (direct.is_some() && !pongs.is_empty()) || (exited && pongs.is_empty())
            },
        )
        .unwrap();
    let Some((first, path)) = w.pongs.first().cloned() else {
        panic!("no TSMP pong:\n{}\n{}", w.log, lab.logs());
    };
    assert_eq!(path, "TSMP", "{}", w.log);
    let Some((to_direct, addr)) = w.cur_addr.clone() else {
        panic!(
            "no direct path within 20 s of a TSMP ping: {w:?}\n{}",
            lab.logs()
        );
    };
    assert!(
        addr.starts_with(&format!("{}:", NAT_PUBLIC[1])),
        "n1's CurAddr {addr}"
    );
    let disco = lab
        .ts(0, &["ping", "--c", "1", &ip], Duration::from_secs(10))
        .unwrap();
    let disco_path = disco.lines().find_map(pong_path).unwrap_or_default();
    assert!(
        disco_path.starts_with(&format!("{}:", NAT_PUBLIC[1])),
        "a disco ping after the TSMP one is not direct:\n{disco}"
    );
    eprintln!(
        "easy/easy on traffic: first TSMP pong {} after the ping started; n1's status showed \
         direct {addr} after {}; a disco ping then went via {disco_path}",
        secs(first),
        secs(to_direct),
    );
}
