//! Traffic through a tunnel: bounded pings and SHA-256-checked TCP transfers.
//!
//! Everything runs as command-line tools inside the namespaces (`ping`, `socat`,
//! `ss`, `sha256sum`): running Rust code in another namespace would need
//! `setns`, i.e. `unsafe`, which the workspace forbids.

use std::fs::File;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::netns::Netns;
use crate::util::{bounded, next_id, now, wait_until, TempDir};

/// Options of one [`ping_with`] run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingOpts {
    /// Echo requests to send; all must be answered.
    pub count: u32,
    /// ICMP payload size (`-s`); `None` for ping's default 56.
    pub size: Option<u32>,
    /// Forbid fragmentation of the (inner) packet (`-M do`).
    pub dont_fragment: bool,
    /// Time between requests; `None` for 0.2 s.
    pub interval: Option<Duration>,
}

impl PingOpts {
    /// `count` default-sized pings.
    pub fn count(count: u32) -> Self {
        Self {
            count,
            size: None,
            dont_fragment: false,
            interval: None,
        }
    }
}

/// Pings `addr` from inside `from` `count` times, 0.2 s apart; succeeds only if
/// every request is answered. Bounded by ping's own deadline (`-w`).
pub fn ping(from: &Netns, addr: IpAddr, count: u32) -> Result<()> {
    ping_with(from, addr, PingOpts::count(count))
}

/// [`ping`] with a payload size and the don't-fragment flag.
pub fn ping_with(from: &Netns, addr: IpAddr, opts: PingOpts) -> Result<()> {
    let count = opts.count.max(1);
    let interval = opts.interval.unwrap_or(Duration::from_millis(200));
    // The requests' own time plus slack for a handshake and the last reply.
    let deadline = (interval * count).as_secs() + 6;
    let interval = format!("{:.3}", interval.as_secs_f64());
    let mut argv = vec![
        "ping".to_owned(),
        if addr.is_ipv6() { "-6" } else { "-4" }.to_owned(),
        "-n".to_owned(),
        "-q".to_owned(),
        "-c".to_owned(),
        count.to_string(),
        "-i".to_owned(),
        interval,
        "-W".to_owned(),
        "2".to_owned(),
        "-w".to_owned(),
        deadline.to_string(),
    ];
    if let Some(size) = opts.size {
        argv.extend(["-s".to_owned(), size.to_string()]);
    }
    if opts.dont_fragment {
        argv.extend(["-M".to_owned(), "do".to_owned()]);
    }
    argv.push(addr.to_string());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = from.exec(&argv)?;
    if !out.status.success() {
        bail!(
            "ping {addr} from {} ({opts:?}) failed ({}): {} {}",
            from.name(),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Pings `addr` once a second until one reply comes back, for at most `timeout`.
/// Used to trigger a handshake, whose first packets may be dropped.
pub fn ping_until_reply(from: &Netns, addr: IpAddr, timeout: Duration) -> Result<()> {
    wait_until(
        &format!("a ping reply from {addr} in {}", from.name()),
        timeout,
        Duration::from_millis(100),
        || {
            let family = if addr.is_ipv6() { "-6" } else { "-4" };
            let a = addr.to_string();
            let out = from.exec(&["ping", family, "-n", "-q", "-c", "1", "-W", "1", &a])?;
            Ok(out.status.success())
        },
    )
}

/// A file of random bytes with its SHA-256, to send through a tunnel.
#[derive(Debug)]
pub struct Payload {
    dir: TempDir,
    path: PathBuf,
    len: u64,
    sha256: String,
}

impl Payload {
    /// Writes `len` bytes from `/dev/urandom` to a temp file and hashes them.
    pub fn random(len: u64) -> Result<Self> {
        let dir = TempDir::new("payload")?;
        let path = dir.join("payload.bin");
        let mut src = File::open("/dev/urandom").context("opening /dev/urandom")?;
        let mut dst = File::create(&path).context("creating payload")?;
        let mut buf = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let n = usize::try_from(left.min(1 << 20)).unwrap_or(1 << 20);
            let chunk = buf
                .get_mut(..n)
                .ok_or_else(|| anyhow!("payload chunk of {n} bytes"))?;
            src.read_exact(chunk).context("reading /dev/urandom")?;
            dst.write_all(chunk).context("writing payload")?;
            left -= n as u64;
        }
        dst.sync_all().context("syncing payload")?;
        let sha256 = sha256_file(&path)?;
        Ok(Self {
            dir,
            path,
            len,
            sha256,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its SHA-256, lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The temp dir holding it (received copies can go there too).
    pub fn dir(&self) -> &TempDir {
        &self.dir
    }
}

/// SHA-256 of a file, lowercase hex, via `sha256sum`.
pub fn sha256_file(path: &Path) -> Result<String> {
    let out = bounded(Duration::from_secs(120), &["sha256sum", "--"])
        .arg(path)
        .output()
        .context("running sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum {} failed: {}", path.display(), out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no hash in sha256sum output {text:?}"))
}

/// What a [`tcp_transfer`] achieved.
#[derive(Clone, Debug, PartialEq)]
pub struct TransferReport {
    /// Bytes received, equal to bytes sent.
    pub bytes: u64,
    /// SHA-256 of what was sent and received (they matched).
    pub sha256: String,
    /// Wall time from connect to the receiver's exit.
    pub elapsed: Duration,
}

impl TransferReport {
    /// Goodput in Mbit/s.
    pub fn mbit_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64().max(1e-6);
        self.bytes as f64 * 8.0 / secs / 1e6
    }
}

/// Time allowed for a transfer of `bytes`: 60 s plus 2 s per MiB (0.5 MiB/s).
pub fn transfer_timeout(bytes: u64) -> Duration {
    Duration::from_secs(60 + 2 * bytes.div_ceil(1 << 20))
}

/// Sends `bytes` random bytes over TCP from `from` to `addr` (an address of
/// `to`) and checks that the receiver got exactly them (SHA-256).
pub fn tcp_transfer(from: &Netns, to: &Netns, addr: IpAddr, bytes: u64) -> Result<TransferReport> {
    let payload = Payload::random(bytes)?;
    tcp_transfer_payload(from, to, addr, &payload)
}

/// [`tcp_transfer`] of an existing payload.
///
/// The receiver is `socat -u TCP-LISTEN:PORT,bind=ADDR CREATE:FILE` in `to`,
/// the sender `socat -u OPEN:FILE TCP:ADDR:PORT` in `from`; both are bounded by
/// `timeout` ([`transfer_timeout`]) and killed by their guards on failure.
pub fn tcp_transfer_payload(
    from: &Netns,
    to: &Netns,
    addr: IpAddr,
    payload: &Payload,
) -> Result<TransferReport> {
    let port = 20000 + next_id() % 20000;
    let timeout = transfer_timeout(payload.len());
    let secs = timeout.as_secs().to_string();
    let recv_dir = TempDir::new("recv")?;
    let received = recv_dir.join("received.bin");
    let (listen, connect) = match addr {
        IpAddr::V4(a) => (
            format!("TCP4-LISTEN:{port},bind={a},reuseaddr"),
            format!("TCP4:{a}:{port}"),
        ),
        IpAddr::V6(a) => (
            format!("TCP6-LISTEN:{port},bind=[{a}],reuseaddr"),
            format!("TCP6:[{a}]:{port}"),
        ),
    };
    let create = format!("CREATE:{}", received.display());
    let open = format!("OPEN:{},rdonly", payload.path().display());
    let mut receiver = to.spawn(
        &format!("tcp receiver {addr}:{port} in {}", to.name()),
        &["timeout", "-k", "5", &secs, "socat", "-u", &listen, &create],
    )?;
    let port_filter = format!("sport = :{port}");
    wait_until(
        &format!("the receiver to listen on {addr}:{port}"),
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            if let Some(status) = receiver.try_status()? {
                bail!("receiver exited early: {status}: {}", receiver.log_tail(20));
            }
            let out = to.run(&["ss", "-Hltn", &port_filter])?;
            Ok(!out.trim().is_empty())
        },
    )?;
    let start = now();
    let mut sender = from.spawn(
        &format!("tcp sender to {addr}:{port} in {}", from.name()),
        &["timeout", "-k", "5", &secs, "socat", "-u", &open, &connect],
    )?;
    let sent = sender.wait_timeout(timeout + Duration::from_secs(10))?;
    if !sent.success() {
        let got = std::fs::metadata(&received).map(|m| m.len()).unwrap_or(0);
        let why = if sent.code() == Some(124) {
            format!("timed out (limit {timeout:?})")
        } else {
            format!("failed ({sent})")
        };
        bail!(
            "sender to {addr}:{port} {why} after {:.1?}; {got} of {} bytes arrived; sender: {}; receiver: {}",
            start.elapsed(),
            payload.len(),
            sender.log_tail(20),
            receiver.log_tail(20)
        );
    }
    let got = receiver.wait_timeout(Duration::from_secs(30))?;
    let elapsed = start.elapsed();
    if !got.success() {
        bail!(
            "receiver on {addr}:{port} failed ({got}): {}",
            receiver.log_tail(20)
        );
    }
    let len = std::fs::metadata(&received)
        .with_context(|| format!("stat {}", received.display()))?
        .len();
    let sha256 = sha256_file(&received)?;
    if len != payload.len() || sha256 != payload.sha256() {
        bail!(
            "transfer to {addr}:{port} corrupted: sent {} bytes sha256 {}, received {len} bytes sha256 {sha256}",
            payload.len(),
            payload.sha256()
        );
    }
    Ok(TransferReport {
        bytes: len,
        sha256,
        elapsed,
    })
}
