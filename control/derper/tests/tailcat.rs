//! Official Tailscale client code relaying through the `weft-derper` binary: two `tailcat`
//! peers (tailcat 0.7.0, tailscale.com v1.103.0-pre derphttp + magicsock + WireGuard, no control
//! server; installed by `scripts/realclients.sh`) in `weft_testkit::NatLab`'s hosts, each behind
//! its own nftables NAT, given a DERP map (served over HTTP from the internet namespace) whose
//! only node is the lab's `weft-derper` at 192.0.2.1: DERP over TLS on 3340 with the
//! self-signed certificate pinned by `CertName`, STUN on 3478. No `TS_DEBUG_*` knob is set: the
//! clients pick their transport themselves.
//!
//! Both NATs hard (a new port per destination): no direct path exists, so the disco ping
//! answers via DERP and a stream of a few MB crosses the relay, SHA-256 compared end to end;
//! the relay's `/metrics` counts at least the stream's bytes in and out.
//!
//! Both NATs easy (ports kept): the clients learn their public endpoints from weft-derper's
//! STUN, hole-punch, and the ping answers over a direct path; a stream whose client holds its
//! input until its own direct path is up (10 s) leaves the relay nearly untouched.
//!
//! The clients try to reach public Tailscale hosts on their own; here they run only inside the
//! lab's namespaces, whose only links lead to namespaces this test made.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use weft_testkit::{
    now, serial, sha256_file, wait_until, ChildGuard, NatKind, NatLab, Netns, DERP_IP,
};

/// Where `scripts/realclients.sh` puts the official clients.
fn clients_dir() -> PathBuf {
    std::env::var_os("WEFT_REALCLIENTS_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/realclients/bin"),
        PathBuf::from,
    )
}

/// The DERP map's URL: `python3 -m http.server` in the internet namespace.
fn map_url() -> String {
    format!("http://{DERP_IP}:8081/derpmap.json")
}

/// The whole environment of a tailcat process besides `HOME` (and `TAILCAT_ADDR_FILE`): no
/// `TS_DEBUG_*` knob can leak in from the test's environment.
const CLEAN_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Bytes sent through the tunnel in the stream check.
const STREAM_BYTES: usize = 32 << 20;

struct Lab {
    // Field order is drop order: the clients and the map server stop before the lab goes.
    _www: ChildGuard,
    lab: NatLab,
    tailcat: PathBuf,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Lab {
    fn new(kinds: [NatKind; 2]) -> Result<Self> {
        let serial = serial();
        let tailcat = clients_dir().join("tailcat");
        if !tailcat.exists() {
            bail!(
                "official client {} missing — run scripts/realclients.sh (scripts/setup.sh does)",
                tailcat.display()
            );
        }
        let derper = Path::new(env!("CARGO_BIN_EXE_weft-derper"));
        let lab = NatLab::new(derper, kinds, false)?;
        let www = lab.dir.join("www");
        std::fs::create_dir_all(&www)?;
        let map = serde_json::json!({
            "Regions": {
                "900": {
                    "RegionID": 900,
                    "RegionCode": "weft",
                    "RegionName": "weft lab relay",
                    "Nodes": [{
                        "Name": "900a",
                        "RegionID": 900,
                        "HostName": DERP_IP,
                        "IPv4": DERP_IP,
                        "IPv6": "none",
                        "DERPPort": 3340,
                        "STUNPort": 3478,
                        "CertName": lab.pin,
                    }],
                },
            },
        });
        std::fs::write(www.join("derpmap.json"), map.to_string())?;
        let www_dir = www.to_str().context("temp path is not UTF-8")?;
        let www = lab.inet.spawn(
            "derpmap-http",
            &[
                "python3",
                "-m",
                "http.server",
                "--bind",
                DERP_IP,
                "--directory",
                www_dir,
                "8081",
            ],
        )?;
        wait_until(
            "the DERP map over HTTP",
            Duration::from_secs(15),
            Duration::from_millis(100),
            || {
                let out = lab
                    .inet
                    .exec(&["curl", "-sf", "--max-time", "2", &map_url()])?;
                Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("900a"))
            },
        )?;
        Ok(Self {
            _www: www,
            lab,
            tailcat,
            _serial: serial,
        })
    }

    fn tailcat(&self) -> &str {
        self.tailcat.to_str().unwrap()
    }

    /// A fresh `$HOME` for one tailcat process (its config and state go there).
    fn home(&self, name: &str) -> Result<PathBuf> {
        let home = self.lab.dir.join(name);
        std::fs::create_dir_all(&home)?;
        Ok(home)
    }

    /// Starts a single-connection tailcat server in host `i`: what the connection carries goes
    /// to `out`. Returns the server and its tailcat address.
    fn server(&self, i: usize, out: &Path) -> Result<(ChildGuard, String)> {
        // A fresh home per server, so no earlier server's address file can be read.
        static SERVERS: AtomicUsize = AtomicUsize::new(0);
        let n = SERVERS.fetch_add(1, Ordering::Relaxed);
        let home = self.home(&format!("server{i}-{n}"))?;
        let addr_file = home.join("addr");
        let script = format!(
            "exec env -i PATH={CLEAN_PATH} HOME='{home}' TAILCAT_ADDR_FILE='{addr}' '{tc}' --derpmap-url '{map}' --key new >'{out}'",
            home = home.display(),
            addr = addr_file.display(),
            tc = self.tailcat(),
            map = map_url(),
            out = out.display(),
        );
        let mut server = self.lab.hosts[i].spawn("tailcat-server", &["sh", "-c", &script])?;
        let mut addr = String::new();
        wait_until(
            "the tailcat server's address",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                if !server.is_running() {
                    bail!("tailcat server exited:\n{}", server.log_tail(40));
                }
                let text = std::fs::read_to_string(&addr_file).unwrap_or_default();
                // The file is complete once it ends in a newline (or has stopped changing).
                let done = text.ends_with('\n') || (!text.is_empty() && text == addr);
                addr = text.trim().to_owned();
                Ok(done && addr.starts_with("tc"))
            },
        )?;
        Ok((server, addr))
    }

    /// Runs `tailcat ping` from host `i` for at most `timeout`; returns its exit status and
    /// output.
    fn ping(
        &self,
        i: usize,
        addr: &str,
        until_direct: bool,
        timeout: Duration,
    ) -> Result<(bool, String)> {
        let home = self.home(&format!("ping{i}"))?;
        let home = format!("HOME={}", home.display());
        let path = format!("PATH={CLEAN_PATH}");
        let map = map_url();
        let flag = format!("--timeout={}s", timeout.as_secs());
        let mut argv = vec![
            "env",
            "-i",
            &path,
            &home,
            self.tailcat(),
            "ping",
            "--derpmap-url",
            &map,
            &flag,
        ];
        if until_direct {
            argv.push("--until-direct");
        }
        argv.push(addr);
        let out = self.lab.hosts[i].exec_env(timeout + Duration::from_secs(15), &[], &argv)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }

    /// `weft-derper`'s `/metrics`, scraped over HTTPS from the internet namespace: the
    /// unlabelled counters by name.
    fn metrics(&self) -> Result<BTreeMap<String, u64>> {
        metrics(&self.lab.inet)
    }

    /// Sends `payload` from host `from` to a fresh server in host `to` through the tunnel, the
    /// client's stdin held empty for `hold_secs` first (the connection is open meanwhile);
    /// checks it arrived whole and returns (seconds from the first byte to the last, seconds
    /// from starting the client to the last byte).
    fn stream(&self, from: usize, to: usize, payload: &[u8], hold_secs: u32) -> Result<(f64, f64)> {
        let input = self.lab.dir.join("payload.bin");
        let output = self.lab.dir.join("received.bin");
        std::fs::write(&input, payload)?;
        let (mut server, addr) = self.server(to, &output)?;
        let home = self.home(&format!("sender{from}"))?;
        let script = format!(
            "{{ sleep {hold_secs}; exec cat '{input}'; }} | \
             env -i PATH={CLEAN_PATH} HOME='{home}' '{tc}' --derpmap-url '{map}' '{addr}'",
            home = home.display(),
            tc = self.tailcat(),
            map = map_url(),
            input = input.display(),
        );
        let start = now();
        let mut client = self.lab.hosts[from].spawn("tailcat-client", &["sh", "-c", &script])?;
        let want = u64::try_from(payload.len())?;
        let mut first: Option<Instant> = None;
        let mut last: Option<Instant> = None;
        let deadline = start + Duration::from_secs(120);
        while last.is_none() {
            let got = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
            if got > 0 && first.is_none() {
                first = Some(now());
            }
            if got >= want {
                last = Some(now());
            }
            if now() > deadline {
                bail!(
                    "{got} of {want} bytes arrived in 120 s\nclient:\n{}\nserver:\n{}",
                    client.log_tail(30),
                    server.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // The server takes one connection and exits when it closes.
        let status = client.wait_timeout(Duration::from_secs(30))?;
        assert!(
            status.success(),
            "tailcat client: {status}\n{}",
            client.log()
        );
        server.wait_timeout(Duration::from_secs(30))?;
        let got = std::fs::metadata(&output)?.len();
        assert_eq!(got, want, "bytes received");
        assert_eq!(
            sha256_file(&output)?,
            sha256_file(&input)?,
            "the stream arrived changed"
        );
        let (first, last) = (first.unwrap(), last.unwrap());
        Ok(((last - first).as_secs_f64(), (last - start).as_secs_f64()))
    }
}

fn metrics(inet: &Netns) -> Result<BTreeMap<String, u64>> {
    let url = format!("https://{DERP_IP}:3340/metrics");
    // -k: the pin is checked by the clients; here only the counters matter.
    let text = inet.run(&["curl", "-sfk", "--max-time", "10", &url])?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains('{'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect())
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, name: &str) -> u64 {
    let a = after.get(name).copied().unwrap_or(0);
    a.saturating_sub(before.get(name).copied().unwrap_or(0))
}

/// `pong in 670µs via DERP(weft)` → (0.67, "DERP(weft)"), for each pong line (the time in
/// milliseconds, from a Go `time.Duration`).
fn pongs(text: &str) -> Vec<(f64, String)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("pong in ")?;
            let (time, via) = rest.split_once(" via ")?;
            Some((go_duration_ms(time.trim())?, via.trim().to_owned()))
        })
        .collect()
}

/// A simple Go duration (`670µs`, `1.2ms`, `1.5s`) in milliseconds.
fn go_duration_ms(s: &str) -> Option<f64> {
    for (unit, scale) in [
        ("ns", 1e-6),
        ("µs", 1e-3),
        ("us", 1e-3),
        ("ms", 1.0),
        ("s", 1e3),
    ] {
        if let Some(n) = s.strip_suffix(unit) {
            return n.parse::<f64>().ok().map(|n| n * scale);
        }
    }
    None
}

/// A deterministic pseudo-random payload (xorshift64).
fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn stun_answered(m: &BTreeMap<String, u64>) -> u64 {
    m.get("derper_stun_answered_total").copied().unwrap_or(0)
}

/// Streams [`STREAM_BYTES`] from host 1 to host 0 (stdin held for `hold_secs` first); returns
/// the relay's byte counts (in, out) during the stream after printing them with the throughput.
fn stream_report(lab: &Lab, label: &str, hold_secs: u32) -> Result<(u64, u64)> {
    let data = payload(STREAM_BYTES);
    let before = lab.metrics()?;
    let drops_before = lab.lab.hosts[0].udp_receive_drops()?;
    let (secs, total) = lab.stream(1, 0, &data, hold_secs)?;
    let after = lab.metrics()?;
    let host_drops = lab.lab.hosts[0].udp_receive_drops()? - drops_before;
    let rx = delta(&before, &after, "derp_bytes_received_total");
    let tx = delta(&before, &after, "derp_bytes_sent_total");
    let mbit = |s: f64| 8.0 * data.len() as f64 / s / 1e6;
    eprintln!(
        "{label}: stream of {} bytes arrived whole (SHA-256 equal): {:.1} Mb/s from first to last \
         byte ({secs:.2} s), {:.1} Mb/s from starting the client ({total:.2} s, {hold_secs} s of it \
         idle); relay during the stream: {rx} bytes in, {tx} out, {} packets in, {} dropped; \
         UDP receive-buffer drops in host 0: {host_drops}",
        data.len(),
        mbit(secs),
        mbit(total),
        delta(&before, &after, "derp_packets_received_total"),
        after
            .iter()
            .filter(|(k, _)| k.starts_with("derp_packets_dropped"))
            .map(|(_, v)| v)
            .sum::<u64>()
            - before
                .iter()
                .filter(|(k, _)| k.starts_with("derp_packets_dropped"))
                .map(|(_, v)| v)
                .sum::<u64>(),
    );
    Ok((rx, tx))
}

#[test]
fn netns_tailcat_hard_nats_relay_through_weft_derper() -> Result<()> {
    let lab = Lab::new([NatKind::Hard, NatKind::Hard])?;

    // 1. A disco ping from host 1 to a server in host 0: answered through the relay.
    let out = lab.lab.dir.join("ping-server.out");
    let (_server, addr) = lab.server(0, &out)?;
    let m0 = lab.metrics()?;
    let (ok, text) = lab.ping(1, &addr, false, Duration::from_secs(30))?;
    eprintln!("hard/hard ping:\n{text}");
    assert!(ok, "tailcat ping failed:\n{text}");
    let (ms, via) = pongs(&text)
        .last()
        .cloned()
        .with_context(|| format!("no pong in tailcat ping's output:\n{text}"))?;
    assert!(via.starts_with("DERP"), "pong not via DERP: {via}\n{text}");
    let m1 = lab.metrics()?;
    assert!(
        delta(&m0, &m1, "derp_packets_received_total") > 0
            && delta(&m0, &m1, "derp_packets_sent_total") > 0,
        "the ping crossed the relay without the relay counting it: {m0:?} → {m1:?}"
    );

    // 2. And it stays there: tailcat tries to hole-punch for 10 s and cannot.
    let (direct, text) = lab.ping(1, &addr, true, Duration::from_secs(10))?;
    let all = pongs(&text);
    assert!(
        !direct && !all.is_empty() && all.iter().all(|(_, via)| via.starts_with("DERP")),
        "hard NATs on both sides, yet a direct path (or no pong at all):\n{text}"
    );

    // 3. A stream from host 1 to a fresh server in host 0, all of it through the relay (WireGuard
    // and TCP add to every byte, so the relay carries more than the payload, both ways).
    let (rx, tx) = stream_report(&lab, "hard/hard", 0)?;
    let len = u64::try_from(STREAM_BYTES)?;
    assert!(
        rx >= len,
        "relay received {rx} bytes for a {len}-byte stream"
    );
    assert!(tx >= len, "relay sent {tx} bytes for a {len}-byte stream");
    let m = lab.metrics()?;
    eprintln!(
        "hard/hard: ping {ms:.3} ms via {via}; {} pongs in 10 s of --until-direct, none direct; \
         STUN answered {}",
        all.len(),
        stun_answered(&m)
    );
    // Their netcheck used weft-derper's STUN, the only one in the map.
    assert!(stun_answered(&m) > 0, "no STUN request answered: {m:?}");
    Ok(())
}

#[test]
fn netns_tailcat_easy_nats_go_direct_with_weft_derper_stun() -> Result<()> {
    let lab = Lab::new([NatKind::Easy, NatKind::Easy])?;

    // 1. Pings until a direct path answers: to host 0's NAT, whose mapping host 0 learnt from
    // weft-derper's STUN (the only STUN server in the map).
    let out = lab.lab.dir.join("ping-server.out");
    let (_server, addr) = lab.server(0, &out)?;
    let (ok, text) = lab.ping(1, &addr, true, Duration::from_secs(30))?;
    eprintln!("easy/easy ping:\n{text}");
    assert!(ok, "no direct path within 30 s:\n{text}");
    let all = pongs(&text);
    let (ms, via) = all
        .last()
        .cloned()
        .with_context(|| format!("no pong in tailcat ping's output:\n{text}"))?;
    assert!(
        via.starts_with(&format!("{}:", weft_testkit::NAT_PUBLIC[0])),
        "last pong not direct from host 0's NAT: {via}\n{text}"
    );
    let m = lab.metrics()?;
    assert!(stun_answered(&m) > 0, "no STUN request answered: {m:?}");

    // 2. A stream. A new client starts on the relay; in five verbose runs one side's direct path
    // came up at once and the other's 5.2-6.0 s after the client started (`magicsock: new
    // contact ... via=direct`). A stream sent before that was slowed badly by the switch in
    // most runs (see the README), so the client holds its input for 10 s: the whole stream
    // then goes direct and the relay carries only disco traffic.
    let (rx, tx) = stream_report(&lab, "easy/easy", 10)?;
    let len = u64::try_from(STREAM_BYTES)?;
    assert!(
        rx < len / 10 && tx < len / 10,
        "{rx} / {tx} bytes of a {len}-byte stream went through the relay: no direct path"
    );
    eprintln!(
        "easy/easy: {} pongs, the last direct in {ms:.3} ms via {via}; STUN answered {}; \
         {rx} / {tx} stream bytes through the relay",
        all.len(),
        stun_answered(&m)
    );
    Ok(())
}
