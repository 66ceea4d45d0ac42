//! Small shared pieces: the clock, bounded polling, unique names, temp dirs,
//! and the sweep of leftovers from test processes that died without cleaning up.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, Once, PoisonError};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Directory where userspace WireGuard implementations put their UAPI sockets.
///
/// It is shared by every network namespace (`ip netns exec` remounts `/sys`, not
/// `/var/run`), which is why every interface name in every test must be unique.
pub const WG_SOCKET_DIR: &str = "/var/run/wireguard";

/// `Instant::now()`, for timing tests. The workspace bans reading the clock in
/// cores; a test harness is a shell around the system and may.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A number unique within this process.
pub(crate) fn next_id() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the process-wide lock that serialises namespace tests.
///
/// Every test that builds namespaces holds it for its whole body, so that under
/// plain `cargo test` (threads in one process) the tests still run one at a time on
/// this small machine; under nextest the `netns` test group does the same across
/// processes. A test that panicked while holding the lock does not poison it.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Polls `check` every `interval` until it returns `Ok(true)`, for at most `timeout`.
///
/// Errors from `check` are remembered and reported if the time runs out; they do
/// not end the wait early (a command may fail while a daemon is still starting).
pub fn wait_until<F>(what: &str, timeout: Duration, interval: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Result<bool>,
{
    let start = now();
    let mut last_err: Option<anyhow::Error> = None;
    loop {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() >= timeout {
            match last_err {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        sleep(interval);
    }
}

const B36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

fn base36(mut n: u64, width: usize) -> String {
    let mut digits = Vec::new();
    while n > 0 {
        let d = usize::try_from(n % 36).unwrap_or(0);
        digits.push(char::from(B36.get(d).copied().unwrap_or(b'0')));
        n /= 36;
    }
    while digits.len() < width {
        digits.push('0');
    }
    digits.iter().rev().collect()
}

fn parse_base36(s: &str) -> Option<u64> {
    let mut n: u64 = 0;
    for c in s.chars() {
        let d = c.to_digit(36)?;
        n = n.checked_mul(36)?.checked_add(u64::from(d))?;
    }
    Some(n)
}

/// Longest Linux interface name (`IFNAMSIZ - 1`).
pub const IFNAME_MAX: usize = 15;

/// A WireGuard interface name unique across processes and calls: `wt`, the
/// process id in base 36 (5 characters), a per-process counter in base 36
/// (3 characters), then `tag` (at most 5 characters, e.g. `a`).
///
/// The result is at most 15 characters, a valid interface name and a valid
/// `wg-quick` configuration name.
pub fn unique_ifname(tag: &str) -> Result<String> {
    if tag.len() > 5 || !tag.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("interface tag {tag:?} must be at most 5 ASCII letters or digits");
    }
    for _ in 0..1000 {
        let name = format!(
            "wt{}{}{tag}",
            base36(u64::from(std::process::id()), 5),
            base36(u64::from(next_id()) % (36 * 36 * 36), 3)
        );
        if Path::new(WG_SOCKET_DIR)
            .join(format!("{name}.sock"))
            .exists()
        {
            continue;
        }
        return Ok(name);
    }
    bail!("no free interface name found for tag {tag:?}")
}

/// The process id encoded in a name made by [`unique_ifname`], if it is one.
fn ifname_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("wt")?;
    let pid = rest.get(0..5)?;
    if rest.len() < 8 || rest.len() > 13 {
        return None;
    }
    u32::try_from(parse_base36(pid)?).ok()
}

/// Marker that makes namespace names ours: `<prefix>.wft<pid>.<counter>`.
pub(crate) fn unique_netns_name(prefix: &str) -> String {
    format!("{prefix}.wft{}.{}", std::process::id(), next_id())
}

/// The process id in a namespace name made by [`unique_netns_name`].
fn netns_owner(name: &str) -> Option<u32> {
    let mut parts = name.rsplit('.');
    let counter = parts.next()?;
    let pid = parts.next()?.strip_prefix("wft")?;
    counter.parse::<u32>().ok()?;
    pid.parse().ok()
}

fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// A directory under the system temp dir, mode 0700, removed with its contents on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

const TEMP_PREFIX: &str = "weft-testkit.";

impl TempDir {
    /// Creates `/tmp/weft-testkit.<pid>.<counter>.<label>`.
    pub fn new(label: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "{TEMP_PREFIX}{}.{}.{label}",
            std::process::id(),
            next_id()
        ));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod {}", path.display()))?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Removes a file (e.g. a UAPI socket) on drop, whatever happened before.
#[derive(Debug)]
pub struct PathGuard {
    path: PathBuf,
}

impl PathGuard {
    /// Guards `path`; it need not exist yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The guarded path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PathGuard {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Builds `timeout --kill-after=5 <secs> <argv...>`: every external command the
/// kit runs in the foreground is bounded this way.
pub(crate) fn bounded(timeout: Duration, argv: &[&str]) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.arg("--kill-after=5")
        .arg(format!("{}", timeout.as_secs().max(1)))
        .args(argv);
    cmd
}

/// Sends `signal` (e.g. `TERM`, `KILL`) with the `kill` command to `target`: a
/// pid, or `-<pgid>` for a whole process group. Errors are ignored: the target
/// may already be gone. (The command, because `libc::kill` would need `unsafe`.)
pub(crate) fn send_signal(signal: &str, target: &str) {
    let _ = Command::new("kill")
        .args(["-s", signal, "--", target])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

static SWEEP: Once = Once::new();

/// Once per process: removes namespaces, UAPI sockets and temp dirs left by test
/// processes that are no longer alive (e.g. killed by a nextest timeout before
/// their guards could run). Only names made by this kit are touched.
pub(crate) fn sweep_stale_once() {
    SWEEP.call_once(|| {
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            for line in text.lines() {
                let Some(name) = line.split_whitespace().next() else {
                    continue;
                };
                if let Some(owner) = netns_owner(name) {
                    if !pid_alive(owner) {
                        crate::netns::destroy_netns(name);
                    }
                }
            }
        }
        if let Ok(entries) = fs::read_dir(WG_SOCKET_DIR) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(ifname) = name.strip_suffix(".sock") {
                    if let Some(owner) = ifname_owner(ifname) {
                        if !pid_alive(owner) {
                            let _ = fs::remove_file(entry.path());
                        }
                    }
                }
            }
        }
        if let Ok(entries) = fs::read_dir(std::env::temp_dir()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
                    continue;
                };
                let Some(Ok(owner)) = rest.split('.').next().map(str::parse::<u32>) else {
                    continue;
                };
                if !pid_alive(owner) {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ifnames_are_short_and_parse_back() {
        let a = unique_ifname("a").unwrap();
        let b = unique_ifname("quick").unwrap();
        assert_ne!(a, b);
        assert!(a.len() <= IFNAME_MAX && b.len() <= IFNAME_MAX, "{a} {b}");
        assert_eq!(ifname_owner(&a), Some(std::process::id()));
        assert_eq!(ifname_owner(&b), Some(std::process::id()));
        assert_eq!(ifname_owner("wg0"), None);
        assert!(unique_ifname("toolong").is_err());
    }

    #[test]
    fn netns_names_parse_back() {
        let n = unique_netns_name("wfa");
        assert_eq!(netns_owner(&n), Some(std::process::id()));
        assert_eq!(netns_owner("blue"), None);
        assert_eq!(netns_owner("a.b.c"), None);
    }

    #[test]
    fn base36_round_trip() {
        for n in [0u64, 1, 35, 36, 4_194_304, 99_999_999] {
            assert_eq!(parse_base36(&base36(n, 5)), Some(n));
        }
        assert_eq!(base36(4_194_304, 5).len(), 5);
    }
}
