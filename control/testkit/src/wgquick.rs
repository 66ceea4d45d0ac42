//! Driving `wg-quick` with a userspace implementation inside a namespace.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};

use crate::netns::Netns;
use crate::util::TempDir;
use crate::wg::{write_private_file, Keypair};

/// Bound on one `wg-quick up` or `down`.
pub const WG_QUICK_TIMEOUT: Duration = Duration::from_secs(60);

/// A minimal wg-quick configuration: one interface, one peer, no DNS, no
/// default route (so wg-quick touches neither resolvconf nor policy routing).
#[derive(Clone, Debug)]
pub struct WgQuickConf {
    /// `Address =` entries, CIDR form.
    pub addresses: Vec<String>,
    /// `PrivateKey =`.
    pub keys: Keypair,
    /// `ListenPort =`.
    pub listen_port: u16,
    /// The peer's `PublicKey =`.
    pub peer_public: String,
    /// The peer's `AllowedIPs =`, CIDR form.
    pub peer_allowed_ips: Vec<String>,
    /// The peer's `Endpoint =`, if any.
    pub peer_endpoint: Option<SocketAddr>,
}

impl WgQuickConf {
    /// The file contents.
    pub fn render(&self) -> String {
        let mut s = format!(
            "[Interface]\nAddress = {}\nPrivateKey = {}\nListenPort = {}\n\n[Peer]\nPublicKey = {}\nAllowedIPs = {}\n",
            self.addresses.join(", "),
            self.keys.private,
            self.listen_port,
            self.peer_public,
            self.peer_allowed_ips.join(", "),
        );
        if let Some(e) = self.peer_endpoint {
            s.push_str(&format!("Endpoint = {e}\n"));
        }
        s
    }
}

/// A wg-quick configuration file `<dir>/<ifname>.conf` (mode 0600), removed on drop.
#[derive(Debug)]
pub struct WgQuickFile {
    path: PathBuf,
    _dir: TempDir,
}

impl WgQuickFile {
    /// Writes `conf` for interface `ifname` (wg-quick takes the name from the file).
    pub fn write(ifname: &str, conf: &WgQuickConf) -> Result<Self> {
        let dir = TempDir::new("wgquick")?;
        let path = dir.join(&format!("{ifname}.conf"));
        write_private_file(&path, &conf.render())?;
        Ok(Self { path, _dir: dir })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Runs `wg-quick <action> <conf>` inside `ns` with
/// `WG_QUICK_USERSPACE_IMPLEMENTATION=<userspace>` (there is no kernel
/// WireGuard here, so `up` falls back to it). Fails unless it exits 0; returns
/// its combined output.
pub fn wg_quick(ns: &Netns, action: &str, conf: &WgQuickFile, userspace: &Path) -> Result<String> {
    let conf_path = conf.path().to_string_lossy().into_owned();
    let implementation = userspace.to_string_lossy().into_owned();
    let out = ns.exec_env(
        WG_QUICK_TIMEOUT,
        &[("WG_QUICK_USERSPACE_IMPLEMENTATION", implementation.as_str())],
        &["wg-quick", action, &conf_path],
    )?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!(
            "wg-quick {action} {conf_path} failed ({}):\n{text}",
            out.status
        );
    }
    Ok(text)
}
