//! What the kernel says about CPU time and memory: `/proc/PID/stat`,
//! `/proc/PID/status` and `/proc/stat`.
//!
//! CPU time is read in clock ticks (`getconf CLK_TCK`, 100 on Linux/x86) and
//! converted to seconds by the caller. A process's `utime + stime` in
//! `/proc/PID/stat` covers all its threads; it stays readable after the process
//! exits until its parent reaps it, which is how the harness gets the final CPU
//! time of an iperf3 it started (see [`ProcStat::is_zombie`]).

use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

/// The fields of `/proc/PID/stat` the harness uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Process state letter (`R`, `S`, `Z`, ...).
    pub(crate) state: char,
    /// User-mode CPU time of all threads, ticks.
    pub(crate) utime: u64,
    /// Kernel-mode CPU time of all threads, ticks.
    pub(crate) stime: u64,
}

impl ProcStat {
    /// Parses the text of `/proc/PID/stat`. The command name (field 2) is in
    /// parentheses and may itself contain spaces and parentheses, so fields are
    /// counted from the last `)`.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let close = text
            .rfind(')')
            .ok_or_else(|| anyhow!("no ')' in stat line {text:?}"))?;
        let rest = text
            .get(close + 1..)
            .ok_or_else(|| anyhow!("stat line ends at ')': {text:?}"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name: field 3 (state) is index 0, so field N is index N - 3.
        let state = fields
            .first()
            .and_then(|s| s.chars().next())
            .ok_or_else(|| anyhow!("no state in {text:?}"))?;
        let field = |n: usize| -> Result<u64> {
            fields
                .get(n - 3)
                .ok_or_else(|| anyhow!("stat line has no field {n}: {text:?}"))?
                .parse::<u64>()
                .with_context(|| format!("stat field {n} in {text:?}"))
        };
        Ok(Self {
            state,
            utime: field(14)?,
            stime: field(15)?,
        })
    }

    /// Reads `/proc/<pid>/stat`.
    pub(crate) fn read(pid: u32) -> Result<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        Self::parse(&text)
    }

    /// `utime + stime`, ticks.
    pub(crate) fn ticks(&self) -> u64 {
        self.utime + self.stime
    }

    /// Whether the process has exited and waits to be reaped; its times are final.
    pub(crate) fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Busy and total time of all CPUs together, from the `cpu` line of `/proc/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HostCpu {
    /// Ticks not spent idle or waiting for I/O (user, nice, system, irq, softirq, steal).
    pub(crate) busy: u64,
    /// All ticks.
    pub(crate) total: u64,
}

impl HostCpu {
    /// Parses the text of `/proc/stat`.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let line = text
            .lines()
            .find(|l| l.starts_with("cpu "))
            .ok_or_else(|| anyhow!("no aggregate cpu line in /proc/stat"))?;
        let values: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse::<u64>().with_context(|| format!("cpu field {v:?}")))
            .collect::<Result<_>>()?;
        // user nice system idle iowait irq softirq steal guest guest_nice;
        // guest time is already counted in user (and guest_nice in nice).
        let get = |i: usize| values.get(i).copied().unwrap_or(0);
        if values.len() < 4 {
            bail!("short cpu line {line:?}");
        }
        let total: u64 = (0..8).map(get).sum();
        let idle = get(3) + get(4);
        Ok(Self {
            busy: total.saturating_sub(idle),
            total,
        })
    }

    /// Reads `/proc/stat`.
    pub(crate) fn read() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        Self::parse(&text)
    }
}

/// Peak resident set size (`VmHWM`) of a process, KiB, from `/proc/PID/status`.
pub(crate) fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_status_kib(&status, "VmHWM:")
}

fn parse_status_kib(status: &str, key: &str) -> Result<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .ok_or_else(|| anyhow!("no {key} line"))?;
    line.split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("bad line {line:?}"))?
        .parse()
        .with_context(|| format!("parsing {line:?}"))
}

/// Clock ticks per second, from `getconf CLK_TCK`.
pub(crate) fn clock_ticks_per_second() -> Result<u64> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("running getconf CLK_TCK")?;
    if !out.status.success() {
        bail!("getconf CLK_TCK failed: {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let ticks: u64 = text
        .trim()
        .parse()
        .with_context(|| format!("parsing CLK_TCK {text:?}"))?;
    if ticks == 0 {
        bail!("CLK_TCK is 0");
    }
    Ok(ticks)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let line =
            "4242 (ip (netns) x) Z 1 4242 4242 0 -1 4194560 120 0 0 0 731 1208 0 0 20 0 1 0 \
                    12345 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = ProcStat::parse(line).unwrap();
        assert_eq!((s.state, s.utime, s.stime), ('Z', 731, 1208));
        assert_eq!(s.ticks(), 1939);
        assert!(s.is_zombie());
        assert!(ProcStat::parse("12 (x) S 1 2").is_err());
        assert!(ProcStat::parse("garbage").is_err());
    }

    #[test]
    fn parses_proc_stat() {
        let text = "cpu  100 5 50 1000 20 3 7 2 9 0\ncpu0 1 2 3 4 5 6 7 8 9 0\nintr 1\n";
        let c = HostCpu::parse(text).unwrap();
        assert_eq!(c.total, 100 + 5 + 50 + 1000 + 20 + 3 + 7 + 2);
        assert_eq!(c.busy, 100 + 5 + 50 + 3 + 7 + 2);
        assert!(HostCpu::parse("cpu0 1 2 3 4\n").is_err());
    }

    #[test]
    fn parses_status() {
        let status = "Name:\tx\nVmHWM:\t   10240 kB\nVmRSS:\t    9000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM:").unwrap(), 10240);
        assert!(parse_status_kib(status, "VmSwap:").is_err());
    }
}
