//! [`ChildGuard`]: a spawned process that is always stopped, with its output kept
//! in a file so that a failing test can show it.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::util::{now, send_signal, TempDir};

/// How long [`ChildGuard::stop`] waits after SIGTERM before sending SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(3);

/// Lines of a process log printed when a test panics while the guard is alive.
const LOG_TAIL_LINES: usize = 150;

/// A child process that is killed when the guard is dropped.
///
/// The child runs in its own process group, so helpers started through
/// `sh -c` pipelines are killed along with it: SIGTERM to the group, then
/// SIGKILL after [`TERM_GRACE`]. Its stdout and stderr go to one log file
/// (in a private temp dir); if the thread is panicking when the guard drops,
/// the tail of that log is printed to stderr, so test failures carry the
/// daemon's own account of what happened.
#[derive(Debug)]
pub struct ChildGuard {
    label: String,
    child: Child,
    status: Option<ExitStatus>,
    log_path: PathBuf,
    remove_on_drop: Vec<PathBuf>,
    // Dropped after `Drop::drop` has printed the log.
    _dir: TempDir,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin from `/dev/null` and stdout/stderr to the log file.
    /// `label` names the process in messages.
    pub fn spawn(label: &str, mut cmd: Command) -> Result<Self> {
        let dir = TempDir::new("log")?;
        let log_path = dir.join("output.log");
        let log = File::create(&log_path)
            .with_context(|| format!("creating log {}", log_path.display()))?;
        let log_err = log.try_clone().context("duplicating log file")?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {label}: {cmd:?}"))?;
        Ok(Self {
            label: label.to_owned(),
            child,
            status: None,
            log_path,
            remove_on_drop: Vec::new(),
            _dir: dir,
        })
    }

    /// The label given at spawn.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The child's process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where stdout and stderr are written.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the child wrote so far (lossily decoded).
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of [`ChildGuard::log`].
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        let start = all.len().saturating_sub(lines);
        all.get(start..).unwrap_or_default().join("\n")
    }

    /// Also remove `path` when the guard drops (after the process is stopped).
    pub fn remove_on_drop(&mut self, path: impl Into<PathBuf>) {
        self.remove_on_drop.push(path.into());
    }

    /// The exit status if the child has exited, without waiting.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for {}", self.label))?;
        }
        Ok(self.status)
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_status(), Ok(None))
    }

    /// Waits at most `timeout` for the child to exit by itself.
    /// On timeout the child keeps running (the guard still kills it on drop).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let start = now();
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            if start.elapsed() >= timeout {
                bail!(
                    "{} (pid {}) still running after {timeout:?}; log tail:\n{}",
                    self.label,
                    self.pid(),
                    self.log_tail(40)
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Stops the child and its process group: SIGTERM, then SIGKILL after
    /// [`TERM_GRACE`]. Returns the exit status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let group = format!("-{}", self.pid());
        send_signal("TERM", &group);
        if let Ok(status) = self.wait_timeout(TERM_GRACE) {
            // Helpers left in the group (e.g. after `sh` exited) go too.
            send_signal("KILL", &group);
            return Ok(status);
        }
        send_signal("KILL", &group);
        let _ = self.child.kill();
        self.wait_timeout(TERM_GRACE)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.stop();
        if std::thread::panicking() {
            eprintln!(
                "----- {} (pid {}) output, last {LOG_TAIL_LINES} lines -----\n{}\n----- end of {} -----",
                self.label,
                self.pid(),
                self.log_tail(LOG_TAIL_LINES),
                self.label
            );
        }
        for path in &self.remove_on_drop {
            let _ = fs::remove_file(path);
        }
    }
}
