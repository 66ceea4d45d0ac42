//! A tailnet in namespaces: `weft-derper` and `weft-coordd` started and waited for, and the
//! official `tailscaled` / `tailscale` (installed by `scripts/realclients.sh`) driven through
//! their socket. Shared by the official-client tests of weft-coordd, the NAT lab and the
//! benchmark's tailscaled rows, which all need the same steps: a relay's pin read from its log,
//! a control server with a user and a pre-auth key, a client logged in to it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::{wait_until, ChildGuard, Netns};

/// How long a server gets to come up.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the official clients are: `WEFT_REALCLIENTS_BIN`, or `target/realclients/bin` of
/// this workspace. A clear error when `tailscaled` is not there.
///
/// # Errors
/// When `tailscaled` is missing.
pub fn realclients_dir() -> Result<PathBuf> {
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

/// The `sha256-raw:…` pin a `weft-derper` prints (`CertName: …`) once it listens, waited for.
///
/// # Errors
/// When it does not print one within 15 s.
pub fn derper_pin(derper: &ChildGuard) -> Result<String> {
    let mut pin = String::new();
    wait_until(
        "derper pin",
        START_TIMEOUT,
        Duration::from_millis(50),
        || {
            pin = derper
                .log()
                .lines()
                .find_map(|l| l.strip_prefix("CertName: ").map(|p| p.trim().to_owned()))
                .unwrap_or_default();
            Ok(!pin.is_empty())
        },
    )?;
    Ok(pin)
}

/// `weft-derper serve` (TLS, a self-signed certificate kept in `state`) in `ns`: DERP on
/// `ip:3340`, STUN on `ip:3478`, `extra` flags after. Returns once it printed its pin.
///
/// # Errors
/// When it cannot start or prints no pin.
pub fn start_derper(
    ns: &Netns,
    bin: &Path,
    ip: &str,
    state: &Path,
    extra: &[&str],
) -> Result<(ChildGuard, String)> {
    let mut argv = vec![
        bin.to_str().context("derper path is not UTF-8")?.to_owned(),
        "serve".into(),
        "--listen".into(),
        format!("{ip}:3340"),
        "--stun-listen".into(),
        format!("{ip}:3478"),
        "--state-dir".into(),
        state
            .to_str()
            .context("state path is not UTF-8")?
            .to_owned(),
    ];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let child = ns.spawn("weft-derper", &argv)?;
    let pin = derper_pin(&child)?;
    Ok((child, pin))
}

/// `weft-coordd serve` in `ns` on `listen`, with a DERP map of the relay at `derp_url` pinned
/// to `pin`, `extra` flags after; returns once its admin socket exists.
///
/// # Errors
/// When it cannot start or its admin socket does not appear within 15 s.
pub fn start_coordd(
    ns: &Netns,
    bin: &Path,
    state: &Path,
    listen: &str,
    derp_url: &str,
    pin: &str,
    extra: &[&str],
) -> Result<ChildGuard> {
    let mut argv = vec![
        bin.to_str().context("coordd path is not UTF-8")?,
        "serve",
        "--state-dir",
        state.to_str().context("state path is not UTF-8")?,
        "--listen",
        listen,
        "--derp",
        derp_url,
        "--derp-cert-pin",
        pin,
    ];
    argv.extend_from_slice(extra);
    let coordd = ns.spawn("weft-coordd", &argv)?;
    let sock = state.join("admin.sock");
    wait_until(
        "admin socket",
        START_TIMEOUT,
        Duration::from_millis(50),
        || Ok(sock.exists()),
    )?;
    Ok(coordd)
}

/// The `weft-coordd` admin CLI on the state directory `state` (the socket is a file: no
/// namespace needed); its stdout.
///
/// # Errors
/// When the command fails (its stderr in the error).
pub fn coordd_admin(bin: &Path, state: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bin)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "weft-coordd {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates `user` and a reusable pre-auth key of theirs, valid 10 minutes.
///
/// # Errors
/// When either admin command fails.
pub fn preauth_key(bin: &Path, state: &Path, user: &str) -> Result<String> {
    coordd_admin(bin, state, &["users", "create", user])?;
    let key = coordd_admin(
        bin,
        state,
        &[
            "keys",
            "create",
            "--user",
            user,
            "--reusable",
            "--expiration",
            "10m",
        ],
    )?;
    Ok(key.trim().to_owned())
}

/// One official node: its `tailscaled` state directory and socket.
#[derive(Debug, Clone)]
pub struct Tsd {
    /// Its name (the process label and `--hostname`).
    pub name: String,
    /// Its state directory (`state/`, `ts.sock`).
    pub dir: PathBuf,
    /// Where `tailscaled` and `tailscale` are.
    pub clients: PathBuf,
}

impl Tsd {
    /// A node called `name` keeping its state under `parent/name`.
    pub fn new(clients: &Path, parent: &Path, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            dir: parent.join(name),
            clients: clients.to_owned(),
        }
    }

    /// The daemon's socket.
    pub fn sock(&self) -> PathBuf {
        self.dir.join("ts.sock")
    }

    /// `tailscaled` in `ns` with its state and socket here, no logs uploaded, and `flags`
    /// (`--tun=…`, `--port=…`), as a command to add environment to. Any `TS_DEBUG_*` of the
    /// caller's own environment is removed: a knob is set on purpose or not at all.
    ///
    /// # Errors
    /// When the state directory cannot be made.
    pub fn command(&self, ns: &Netns, flags: &[&str]) -> Result<Command> {
        std::fs::create_dir_all(&self.dir)?;
        let tsd = self.clients.join("tailscaled");
        let state = format!("--statedir={}", self.dir.join("state").display());
        let sock = format!("--socket={}", self.sock().display());
        let mut argv = vec![
            tsd.to_str().context("clients path is not UTF-8")?,
            &state,
            &sock,
            "--no-logs-no-support",
        ];
        argv.extend_from_slice(flags);
        let mut cmd = ns.command(&argv);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TS_DEBUG") {
                cmd.env_remove(k);
            }
        }
        Ok(cmd)
    }

    /// Spawns `cmd` (from [`Tsd::command`]) and waits for the daemon's socket.
    ///
    /// # Errors
    /// When it cannot start or the socket does not appear within 15 s.
    pub fn spawn(&self, cmd: Command) -> Result<ChildGuard> {
        let guard = ChildGuard::spawn(&self.name, cmd)?;
        let sock = self.sock();
        wait_until(
            "tailscaled socket",
            START_TIMEOUT,
            Duration::from_millis(50),
            || Ok(sock.exists()),
        )?;
        Ok(guard)
    }

    /// `tailscale --socket … ARGS` in `ns`, as a command to spawn.
    ///
    /// # Errors
    /// When a path is not UTF-8.
    pub fn cli(&self, ns: &Netns, args: &[&str]) -> Result<Command> {
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

    /// `tailscale --socket … ARGS` in `ns`, bounded by `timeout`; its stdout.
    ///
    /// # Errors
    /// When it fails or times out (its output in the error).
    pub fn ts(&self, ns: &Netns, args: &[&str], timeout: Duration) -> Result<String> {
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

    /// `tailscale up` against `login_server` with a pre-auth key, `--hostname` its name and
    /// DNS left alone; `extra` flags after.
    ///
    /// # Errors
    /// When it fails or takes over 50 s.
    pub fn up(&self, ns: &Netns, login_server: &str, key: &str, extra: &[&str]) -> Result<()> {
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

    /// `tailscale status --json`.
    ///
    /// # Errors
    /// When the CLI fails or prints no JSON.
    pub fn status(&self, ns: &Netns) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.ts(
            ns,
            &["status", "--json"],
            Duration::from_secs(10),
        )?)?)
    }

    /// The peers in this node's netmap: (host name, DNS name, online), sorted.
    ///
    /// # Errors
    /// As [`Tsd::status`].
    pub fn peers(&self, ns: &Netns) -> Result<Vec<(String, String, bool)>> {
        let s = self.status(ns)?;
        let text = |p: &serde_json::Value, k: &str| {
            p.get(k)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let mut v: Vec<_> = s
            .get("Peer")
            .and_then(serde_json::Value::as_object)
            .map(|m| {
                m.values()
                    .map(|p| {
                        let online = p.get("Online").and_then(serde_json::Value::as_bool);
                        (
                            text(p, "HostName"),
                            text(p, "DNSName"),
                            online.unwrap_or(false),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        Ok(v)
    }
}
