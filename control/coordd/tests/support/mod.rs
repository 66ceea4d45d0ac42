//! What the official-client tests share beyond `weft_testkit::tailscale`: this workspace's
//! binaries (next to this package's own), `weft-coordd` with a DERP map of one `weft-derper`
//! and a pre-auth key of user `alice`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use weft_testkit::{tailscale, ChildGuard, Netns};

pub(crate) use weft_testkit::tailscale::{realclients_dir as clients_dir, Tsd};

/// `tailscaled`'s flags in these tests: userspace networking, any free UDP port.
pub(crate) const USERSPACE: &[&str] = &["--tun=userspace-networking", "--port=0"];

fn coordd_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_weft-coordd"))
}

/// A built binary of this workspace, next to this package's own.
pub(crate) fn workspace_bin(name: &str) -> PathBuf {
    coordd_bin()
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

/// `weft-coordd serve` in `ns` on `listen` with `--derp derp_url` (STUN on the default port
/// 3478) pinned to `pin`, keep-alives every 15 s; returns once its admin socket exists.
pub(crate) fn start_coordd(
    ns: &Netns,
    state: &Path,
    listen: &str,
    derp_url: &str,
    pin: &str,
) -> Result<ChildGuard> {
    tailscale::start_coordd(
        ns,
        coordd_bin(),
        state,
        listen,
        derp_url,
        pin,
        &["--keepalive-secs", "15"],
    )
}

/// The admin CLI on coordd's state directory.
pub(crate) fn admin(state: &Path, args: &[&str]) -> Result<String> {
    tailscale::coordd_admin(coordd_bin(), state, args)
}

/// `curl` in `ns` through the SOCKS5 proxy a userspace-networking `tailscaled` there offers
/// on 127.0.0.1:1055: whether `url` answered within 4 s.
pub(crate) fn reachable_via_socks(ns: &Netns, url: &str) -> Result<bool> {
    let out = ns.exec_env(
        std::time::Duration::from_secs(10),
        &[],
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "4",
            "--socks5-hostname",
            "127.0.0.1:1055",
            url,
        ],
    )?;
    Ok(out.status.success())
}

/// User `alice` and a reusable pre-auth key of hers.
pub(crate) fn alice_key(state: &Path) -> Result<String> {
    tailscale::preauth_key(coordd_bin(), state, "alice")
}
