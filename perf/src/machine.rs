//! The facts a result needs to be read later: kernel, CPU, tool versions, weft commit.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;
use weft_testkit::WgImpl;

/// Where and with what a run was made.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Machine {
    /// `uname -r`.
    pub(crate) kernel: String,
    /// `model name` of the first CPU in `/proc/cpuinfo`.
    pub(crate) cpu_model: String,
    /// Number of `processor` entries in `/proc/cpuinfo`.
    pub(crate) cores: usize,
    /// Total memory, MiB (`MemTotal` of `/proc/meminfo`).
    pub(crate) mem_total_mib: Option<u64>,
    /// First line of `iperf3 --version`.
    pub(crate) iperf3: String,
    /// First line of `wireguard-go --version`.
    pub(crate) wireguard_go: String,
    /// First line of `boringtun-cli --version`.
    pub(crate) boringtun: String,
    /// The weft-wg binary measured.
    pub(crate) weft_binary: PathBuf,
    /// Its SHA-256, to tell binaries apart when `--weft` points elsewhere.
    pub(crate) weft_sha256: String,
    /// First line of `weft-wg --version`.
    pub(crate) weft_version: String,
    /// `git rev-parse HEAD` of the source tree this harness was built from,
    /// with `-dirty` if tracked files differ from it. It is the weft commit when
    /// weft-wg was built next to weft-perf from the same tree (the default).
    pub(crate) weft_commit: String,
    /// `date -u` at the start of the run, RFC 3339.
    pub(crate) date_utc: String,
}

/// First line of a command's stdout (or stderr if stdout is empty), bounded to
/// 10 s; a description of the failure instead if it cannot run.
fn first_line(program: &Path, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("10")
        .arg(program)
        .args(args)
        .output();
    match out {
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let text = if stdout.trim().is_empty() {
                stderr
            } else {
                stdout
            };
            text.lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| format!("(no output, {})", out.status))
        }
        Err(e) => format!("(not runnable: {e})"),
    }
}

fn cpuinfo() -> (String, usize) {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = text
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = text.lines().filter(|l| l.starts_with("processor")).count();
    (model, cores)
}

fn mem_total_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024)
}

fn git_commit() -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = Path::new("git");
    let head = first_line(
        git,
        &[
            "-C",
            &src.to_string_lossy(),
            "rev-parse",
            "--short=12",
            "HEAD",
        ],
    );
    if head.starts_with('(') || head.contains("fatal") {
        return format!("unknown {head}");
    }
    let dirty = Command::new("git")
        .args(["-C", &src.to_string_lossy(), "status", "--porcelain"])
        .args(["--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if dirty {
        format!("{head}-dirty")
    } else {
        head
    }
}

impl Machine {
    /// Collects everything; missing tools show up as text in the fields.
    pub(crate) fn collect(weft: &Path) -> Self {
        let (cpu_model, cores) = cpuinfo();
        let boringtun = WgImpl::Boringtun
            .program()
            .map(|p| first_line(&p, &["--version"]))
            .unwrap_or_else(|e| format!("(not found: {e})"));
        Self {
            kernel: first_line(Path::new("uname"), &["-r"]),
            cpu_model,
            cores,
            mem_total_mib: mem_total_mib(),
            iperf3: first_line(Path::new("iperf3"), &["--version"]),
            wireguard_go: first_line(Path::new(weft_testkit::WIREGUARD_GO), &["--version"]),
            boringtun,
            weft_binary: weft.to_path_buf(),
            weft_sha256: weft_testkit::sha256_file(weft)
                .unwrap_or_else(|e| format!("(unknown: {e:#})")),
            weft_version: first_line(weft, &["--version"]),
            weft_commit: git_commit(),
            date_utc: first_line(Path::new("date"), &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        }
    }
}
