//! WireGuard implementations as processes, keys, `wg set` and `wg show dump`.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::netns::Netns;
use crate::process::ChildGuard;
use crate::util::{wait_until, TempDir, IFNAME_MAX, WG_SOCKET_DIR};

/// Bound on a daemon's start: UAPI socket and interface must appear within it.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The Debian package's wireguard-go.
pub const WIREGUARD_GO: &str = "/usr/bin/wireguard-go";

/// A userspace WireGuard implementation that can be started in a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WgImpl {
    /// weft-wg, at the given path (in tests: `env!("CARGO_BIN_EXE_weft-wg")`).
    Weft(PathBuf),
    /// weft-wg at the given path with every offload and batching feature forced off (plain TUN,
    /// no UDP GSO/GRO, no io_uring, no `sendmmsg`/`recvmmsg`): the fallback paths.
    WeftNoOffload(PathBuf),
    /// weft-wg at the given path with exactly this many shards (`--shards N`; plain `Weft`
    /// runs one per core).
    WeftSharded(PathBuf, u8),
    /// weft-wg at the given path on the io_uring backend (`--io uring`).
    WeftUring(PathBuf),
    /// weft-wg at the given path with extra command-line arguments (before the interface).
    WeftWithArgs(PathBuf, Vec<String>),
    /// wireguard-go, [`WIREGUARD_GO`].
    WireguardGo,
    /// boringtun-cli, looked up on `PATH` then in `~/.cargo/bin`.
    Boringtun,
}

impl fmt::Display for WgImpl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl WgImpl {
    /// Short name for messages: `weft`, `wireguard-go`, `boringtun`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Weft(_) => "weft",
            Self::WeftNoOffload(_) => "weft-no-offload",
            Self::WeftSharded(..) => "weft-sharded",
            Self::WeftUring(_) => "weft-uring",
            Self::WeftWithArgs(..) => "weft",
            Self::WireguardGo => "wireguard-go",
            Self::Boringtun => "boringtun",
        }
    }

    /// The executable. For boringtun: the first `boringtun-cli` on `PATH`, else
    /// `$HOME/.cargo/bin/boringtun-cli`.
    pub fn program(&self) -> Result<PathBuf> {
        match self {
            Self::Weft(path)
            | Self::WeftNoOffload(path)
            | Self::WeftSharded(path, _)
            | Self::WeftUring(path)
            | Self::WeftWithArgs(path, _) => Ok(path.clone()),
            Self::WireguardGo => Ok(PathBuf::from(WIREGUARD_GO)),
            Self::Boringtun => find_program("boringtun-cli"),
        }
    }

    /// Whether `wg show dump` byte counters mean what the kernel's mean: bytes of
    /// WireGuard messages on the wire (UDP payload, handshakes and keepalives
    /// included), so that one side's tx equals the other's rx.
    ///
    /// boringtun 0.7 counts decrypted inner packet bytes instead, and reports
    /// `latest-handshake` as seconds *since* the handshake rather than a Unix time.
    pub fn wire_byte_counters(&self) -> bool {
        !matches!(self, Self::Boringtun)
    }

    /// Whether this implementation's view of a peer shows a completed handshake.
    ///
    /// Normally `latest-handshake != 0`. boringtun 0.7 reports the seconds
    /// *since* the handshake (omitting the key when there was none), so just after
    /// a handshake it reads 0 like "never"; for it, having received (decrypted)
    /// bytes counts as evidence too.
    pub fn has_handshake(&self, peer: &WgPeerDump) -> bool {
        match self {
            Self::Boringtun => peer.latest_handshake != 0 || peer.rx_bytes > 0,
            _ => peer.latest_handshake != 0,
        }
    }

    /// Runs the implementation in the foreground inside `ns`, creating `ifname`,
    /// and waits (at most [`START_TIMEOUT`]) until its UAPI socket
    /// `/var/run/wireguard/<ifname>.sock` and the interface both exist.
    ///
    /// The returned guard stops the daemon and removes the socket on drop.
    ///
    /// - weft: `<path> -f IFNAME`
    /// - wireguard-go: `wireguard-go -f IFNAME` with `LOG_LEVEL=debug`
    /// - boringtun: `boringtun-cli -f --disable-drop-privileges -v debug IFNAME`;
    ///   without the flag it tries to drop to the sudo user's uid, and in the
    ///   foreground it logs to stdout (not its default `/tmp/boringtun.out`).
    pub fn start(&self, ns: &Netns, ifname: &str) -> Result<ChildGuard> {
        if ifname.len() > IFNAME_MAX {
            bail!("interface name {ifname:?} is longer than {IFNAME_MAX}");
        }
        let socket = socket_path(ifname);
        if socket.exists() {
            bail!(
                "{} already exists: interface names must be unique across namespaces",
                socket.display()
            );
        }
        let program = self.program()?;
        let program = program.to_string_lossy().into_owned();
        let mut argv: Vec<&str> = vec![program.as_str(), "-f"];
        if matches!(self, Self::Boringtun) {
            argv.extend(["--disable-drop-privileges", "-v", "debug"]);
        }
        if matches!(self, Self::WeftNoOffload(_)) {
            argv.extend([
                "--no-tun-offload",
                "--no-gso",
                "--no-gro",
                "--no-mmsg",
                "--io",
                "mmsg",
            ]);
        }
        if matches!(self, Self::WeftUring(_)) {
            argv.extend(["--io", "uring"]);
        }
        if let Self::WeftWithArgs(_, extra) = self {
            argv.extend(extra.iter().map(String::as_str));
        }
        let shards = match self {
            Self::WeftSharded(_, n) => Some(n.to_string()),
            _ => None,
        };
        if let Some(n) = &shards {
            argv.extend(["--shards", n.as_str()]);
        }
        argv.push(ifname);
        let mut cmd = ns.command(&argv);
        if matches!(self, Self::WireguardGo) {
            cmd.env("LOG_LEVEL", "debug");
        }
        let label = format!("{} {ifname} in {}", self.name(), ns.name());
        let mut guard = ChildGuard::spawn(&label, cmd)?;
        guard.remove_on_drop(&socket);
        wait_until(
            &format!("{label} to create {} and the interface", socket.display()),
            START_TIMEOUT,
            Duration::from_millis(50),
            || {
                if let Some(status) = guard.try_status()? {
                    return Err(anyhow!(
                        "{label} exited with {status} during start; log:\n{}",
                        guard.log_tail(40)
                    ));
                }
                Ok(socket.exists() && ns.link_exists(ifname))
            },
        )
        .map_err(|e| anyhow!("{e:#}\nlog of {label}:\n{}", guard.log_tail(40)))?;
        Ok(guard)
    }
}

/// The UAPI socket path of `ifname`.
pub fn socket_path(ifname: &str) -> PathBuf {
    Path::new(WG_SOCKET_DIR).join(format!("{ifname}.sock"))
}

fn find_program(name: &str) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.push(PathBuf::from("/root/.cargo/bin"));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("{name} not found on PATH nor in ~/.cargo/bin"))
}

/// A Curve25519 key pair in WireGuard's base64 form, made by `wg genkey`/`wg pubkey`.
#[derive(Clone, PartialEq, Eq)]
pub struct Keypair {
    /// The private key, base64.
    pub private: String,
    /// The public key, base64.
    pub public: String,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("private", &"<redacted>")
            .field("public", &self.public)
            .finish()
    }
}

impl Keypair {
    /// Generates a fresh key pair with the `wg` tool.
    pub fn generate() -> Result<Self> {
        let out = Command::new("wg")
            .arg("genkey")
            .stderr(Stdio::inherit())
            .output()
            .context("wg genkey")?;
        if !out.status.success() {
            bail!("wg genkey failed: {}", out.status);
        }
        let private = String::from_utf8(out.stdout)
            .context("wg genkey output")?
            .trim()
            .to_owned();
        let public = pubkey(&private)?;
        Ok(Self { private, public })
    }
}

/// The public key of a base64 private key, via `wg pubkey`.
pub fn pubkey(private: &str) -> Result<String> {
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("wg pubkey")?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("wg pubkey stdin"))?
        .write_all(format!("{private}\n").as_bytes())
        .context("writing to wg pubkey")?;
    let out = child.wait_with_output().context("wg pubkey")?;
    if !out.status.success() {
        bail!("wg pubkey failed: {}", out.status);
    }
    Ok(String::from_utf8(out.stdout)
        .context("wg pubkey output")?
        .trim()
        .to_owned())
}

/// Writes `contents` to a new file with mode 0600 (keys, wg-quick configs).
pub fn write_private_file(path: &Path, contents: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Runs `wg set <ifname> <args...>` inside `ns`.
pub fn wg_set(ns: &Netns, ifname: &str, args: &[&str]) -> Result<()> {
    let mut argv = vec!["wg", "set", ifname];
    argv.extend_from_slice(args);
    ns.run(&argv)?;
    Ok(())
}

/// Sets the interface's private key (and any further `wg set` arguments); the
/// key goes through a 0600 temp file, never the command line.
pub fn wg_set_private_key(ns: &Netns, ifname: &str, key: &Keypair, args: &[&str]) -> Result<()> {
    let dir = TempDir::new("key")?;
    let path = dir.join("private.key");
    write_private_file(&path, &format!("{}\n", key.private))?;
    let path = path.to_string_lossy().into_owned();
    let mut all = vec!["private-key", path.as_str()];
    all.extend_from_slice(args);
    wg_set(ns, ifname, &all)
}

/// One interface as `wg show <ifname> dump` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WgDump {
    /// Private key, if the implementation reports it (boringtun does not).
    pub private_key: Option<String>,
    /// Public key, if a private key is set and reported.
    pub public_key: Option<String>,
    /// Listening UDP port.
    pub listen_port: u16,
    /// Firewall mark, if any.
    pub fwmark: Option<u32>,
    /// The peers, in the order reported.
    pub peers: Vec<WgPeerDump>,
}

/// One peer line of `wg show dump`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WgPeerDump {
    /// Peer public key, base64.
    pub public_key: String,
    /// Whether a preshared key is set.
    pub preshared_key: bool,
    /// Current endpoint, if known.
    pub endpoint: Option<SocketAddr>,
    /// Allowed IPs in CIDR form.
    pub allowed_ips: Vec<String>,
    /// Latest handshake, seconds since the Unix epoch; 0 for never.
    /// (boringtun 0.7 reports seconds since the handshake instead.)
    pub latest_handshake: u64,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// Persistent keepalive interval, if on.
    pub persistent_keepalive: Option<u16>,
}

impl WgDump {
    /// Parses the output of `wg show <ifname> dump`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let dev = lines.next().ok_or_else(|| anyhow!("empty wg dump"))?;
        let f: Vec<&str> = dev.split('\t').collect();
        let [private_key, public_key, listen_port, fwmark] = f.as_slice() else {
            bail!("device line has {} fields, want 4: {dev:?}", f.len());
        };
        let mut peers = Vec::new();
        for line in lines {
            let f: Vec<&str> = line.split('\t').collect();
            let [public_key, psk, endpoint, allowed, handshake, rx, tx, keepalive] = f.as_slice()
            else {
                bail!("peer line has {} fields, want 8: {line:?}", f.len());
            };
            peers.push(WgPeerDump {
                public_key: (*public_key).to_owned(),
                preshared_key: *psk != "(none)",
                endpoint: match *endpoint {
                    "(none)" => None,
                    e => Some(e.parse().with_context(|| format!("endpoint {e:?}"))?),
                },
                allowed_ips: match *allowed {
                    "(none)" => Vec::new(),
                    a => a.split(',').map(str::to_owned).collect(),
                },
                latest_handshake: handshake.parse().context("latest handshake")?,
                rx_bytes: rx.parse().context("rx bytes")?,
                tx_bytes: tx.parse().context("tx bytes")?,
                persistent_keepalive: match *keepalive {
                    "off" => None,
                    k => Some(k.parse().context("keepalive")?),
                },
            });
        }
        Ok(Self {
            private_key: none_to_option(private_key),
            public_key: none_to_option(public_key),
            listen_port: listen_port.parse().context("listen port")?,
            fwmark: match *fwmark {
                "off" => None,
                m => Some(parse_mark(m)?),
            },
            peers,
        })
    }

    /// The peer with this public key.
    pub fn peer(&self, public_key: &str) -> Result<&WgPeerDump> {
        self.peers
            .iter()
            .find(|p| p.public_key == public_key)
            .ok_or_else(|| anyhow!("no peer {public_key} in dump {self:?}"))
    }
}

fn none_to_option(s: &str) -> Option<String> {
    (s != "(none)").then(|| s.to_owned())
}

fn parse_mark(m: &str) -> Result<u32> {
    match m.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).context("fwmark"),
        None => m.parse().context("fwmark"),
    }
}

/// Runs and parses `wg show <ifname> dump` inside `ns`.
pub fn wg_show_dump(ns: &Netns, ifname: &str) -> Result<WgDump> {
    let text = ns.run(&["wg", "show", ifname, "dump"])?;
    WgDump::parse(&text).with_context(|| format!("parsing wg show {ifname} dump: {text:?}"))
}

/// Resident set size of a process in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))?;
    line.split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("bad VmRSS line {line:?}"))?
        .parse()
        .with_context(|| format!("parsing {line:?}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_dump() {
        let text = "cHJpdg==\tcHVi\t51820\toff\n\
                    cGVlcg==\t(none)\t[fd00::2]:51821\t10.200.0.2/32,fd10::2/128\t1795607630\t440\t532\toff\n\
                    b3RoZXI=\t(none)\t(none)\t(none)\t0\t0\t0\t25\n";
        let d = WgDump::parse(text).unwrap();
        assert_eq!(d.listen_port, 51820);
        assert_eq!(d.fwmark, None);
        assert_eq!(d.private_key.as_deref(), Some("cHJpdg=="));
        assert_eq!(d.peers.len(), 2);
        let p = d.peer("cGVlcg==").unwrap();
        assert_eq!(p.endpoint, Some("[fd00::2]:51821".parse().unwrap()));
        assert_eq!(p.allowed_ips, vec!["10.200.0.2/32", "fd10::2/128"]);
        assert_eq!(
            (p.latest_handshake, p.rx_bytes, p.tx_bytes),
            (1795607630, 440, 532)
        );
        let o = d.peer("b3RoZXI=").unwrap();
        assert_eq!(o.endpoint, None);
        assert!(o.allowed_ips.is_empty());
        assert_eq!(o.persistent_keepalive, Some(25));
        let boringtun = "(none)\t(none)\t51821\toff\n";
        let d = WgDump::parse(boringtun).unwrap();
        assert_eq!((d.private_key, d.peers.len()), (None, 0));
        assert!(WgDump::parse("a\tb\n").is_err());
    }
}
