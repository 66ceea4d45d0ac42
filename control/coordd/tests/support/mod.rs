//! What the official-client tests share: where the clients and the workspace binaries are,
//! `weft-coordd` with a DERP map of one `weft-derper` and a pre-auth key, and `tailscaled` /
//! `tailscale` run inside a namespace.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use weft_testkit::{wait_until, ChildGuard, Netns};

/// The official clients (`scripts/realclients.sh` installs them), or a clear failure.
pub(crate) fn clients_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("WEFT_REALCLIENTS_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/realclients/bin"),
        PathBuf::from,
    );
    if !dir.join("tailscaled").exists() {
        bail!(
            "official clients missing in {} — run scripts/realclients.sh (scripts/setup.sh does)",
            dir.display()
        );
    }
    Ok(dir)
}

/// A built binary of this workspace, next to this package's own.
pub(crate) fn workspace_bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_weft-coordd"))
        .parent()
        .map(|d| d.join(name))
        .unwrap_or_default()
}

/// `weft-derper`, or a clear failure when it is not built.
pub(crate) fn derper_bin() -> Result<PathBuf> {
    let bin = workspace_bin("weft-derper");
    if !bin.exists() {
        bail!("{} not built (cargo build -p weft-derper)", bin.display());
    }
    Ok(bin)
}

/// The pin `weft-derper` prints (`CertName: sha256-raw:…`), waited for.
pub(crate) fn derper_pin(derper: &ChildGuard) -> Result<String> {
    let mut pin = String::new();
    wait_until(
        "derper pin",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || {
            pin = derper
                .log()
                .lines()
                .find_map(|l| l.strip_prefix("CertName: ").map(str::to_owned))
                .unwrap_or_default();
            Ok(!pin.is_empty())
        },
    )?;
    Ok(pin)
}

/// `weft-coordd serve` in `ns` on `listen` with `--derp derp_url` (STUN on the default port
/// 3478) pinned to `pin`; returns once its admin socket exists.
pub(crate) fn start_coordd(
    ns: &Netns,
    state: &Path,
    listen: &str,
    derp_url: &str,
    pin: &str,
) -> Result<ChildGuard> {
    let coordd = ns.spawn(
        "weft-coordd",
        &[
            env!("CARGO_BIN_EXE_weft-coordd"),
            "serve",
            "--state-dir",
            state.to_str().context("state path is not UTF-8")?,
            "--listen",
            listen,
            "--derp",
            derp_url,
            "--derp-cert-pin",
            pin,
            "--keepalive-secs",
            "15",
        ],
    )?;
    let sock = state.join("admin.sock");
    wait_until(
        "admin socket",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || Ok(sock.exists()),
    )?;
    Ok(coordd)
}

/// The admin CLI on coordd's state directory (the socket is a file: no namespace needed).
pub(crate) fn admin(state: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_weft-coordd"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()?;
    if !out.status.success() {
        bail!(
            "weft-coordd {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// User `alice` and a reusable pre-auth key of hers.
pub(crate) fn alice_key(state: &Path) -> Result<String> {
    admin(state, &["users", "create", "alice"])?;
    Ok(admin(
        state,
        &[
            "keys",
            "create",
            "--user",
            "alice",
            "--reusable",
            "--expiration",
            "10m",
        ],
    )?
    .trim()
    .to_owned())
}

/// One official node: its `tailscaled` state directory and socket, in a namespace.
pub(crate) struct Tsd {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    pub(crate) clients: PathBuf,
}

impl Tsd {
    /// A node called `name` keeping its state under `parent/name`.
    pub(crate) fn new(clients: &Path, parent: &Path, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            dir: parent.join(name),
            clients: clients.to_owned(),
        }
    }

    pub(crate) fn sock(&self) -> PathBuf {
        self.dir.join("ts.sock")
    }

    /// `tailscaled` in `ns` (userspace networking, no logs uploaded), as a command to add
    /// flags or environment to. Any `TS_DEBUG_*` of the test's own environment is removed.
    pub(crate) fn command(&self, ns: &Netns) -> Result<Command> {
        std::fs::create_dir_all(&self.dir)?;
        let tsd = self.clients.join("tailscaled");
        let mut cmd = ns.command(&[
            tsd.to_str().context("clients path is not UTF-8")?,
            "--tun=userspace-networking",
            &format!("--statedir={}", self.dir.join("state").display()),
            &format!("--socket={}", self.sock().display()),
            "--port=0",
            "--no-logs-no-support",
        ]);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TS_DEBUG") {
                cmd.env_remove(k);
            }
        }
        Ok(cmd)
    }

    /// Spawns `cmd` (from [`Tsd::command`]) and waits for the daemon's socket.
    pub(crate) fn spawn(&self, cmd: Command) -> Result<ChildGuard> {
        let guard = ChildGuard::spawn(&self.name, cmd)?;
        let sock = self.sock();
        wait_until(
            "tailscaled socket",
            Duration::from_secs(15),
            Duration::from_millis(100),
            || Ok(sock.exists()),
        )?;
        Ok(guard)
    }

    /// `tailscale --socket … ARGS` in `ns`, as a command to spawn.
    pub(crate) fn cli(&self, ns: &Netns, args: &[&str]) -> Result<Command> {
        let ts = self.clients.join("tailscale");
        let sock = self.sock();
        let mut cmd = ns.command(&[
            ts.to_str().context("clients path is not UTF-8")?,
            "--socket",
            sock.to_str().context("temp path is not UTF-8")?,
        ]);
        cmd.args(args);
        Ok(cmd)
    }

    /// `tailscale --socket … ARGS` in `ns`; stdout, or an error with the output.
    pub(crate) fn ts(&self, ns: &Netns, args: &[&str], timeout: Duration) -> Result<String> {
        let ts = self.clients.join("tailscale");
        let sock = self.sock();
        let mut argv = vec![
            ts.to_str().context("clients path is not UTF-8")?,
            "--socket",
            sock.to_str().context("temp path is not UTF-8")?,
        ];
        argv.extend_from_slice(args);
        let out = ns.exec_env(timeout, &[], &argv)?;
        if !out.status.success() {
            bail!(
                "tailscale {args:?} on {}: {}{}",
                self.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `tailscale up` against `login_server` with the pre-auth key (extra flags in `extra`).
    pub(crate) fn up(
        &self,
        ns: &Netns,
        login_server: &str,
        key: &str,
        extra: &[&str],
    ) -> Result<()> {
        let login = format!("--login-server={login_server}");
        let key = format!("--auth-key={key}");
        let host = format!("--hostname={}", self.name);
        let mut args = vec![
            "up",
            &login,
            &key,
            &host,
            "--accept-dns=false",
            "--timeout=40s",
        ];
        args.extend_from_slice(extra);
        self.ts(ns, &args, Duration::from_secs(50))
            .with_context(|| format!("tailscale up {}", self.name))?;
        Ok(())
    }

    pub(crate) fn status(&self, ns: &Netns) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.ts(
            ns,
            &["status", "--json"],
            Duration::from_secs(10),
        )?)?)
    }

    /// The peers in this node's netmap: (host name, DNS name, online), sorted.
    pub(crate) fn peers(&self, ns: &Netns) -> Result<Vec<(String, String, bool)>> {
        let s = self.status(ns)?;
        let mut v: Vec<_> = s["Peer"]
            .as_object()
            .map(|m| {
                m.values()
                    .map(|p| {
                        (
                            p["HostName"].as_str().unwrap_or_default().to_owned(),
                            p["DNSName"].as_str().unwrap_or_default().to_owned(),
                            p["Online"].as_bool().unwrap_or(false),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        Ok(v)
    }
}
