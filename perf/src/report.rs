//! Medians over runs, ratios between pairs, the tables on stdout and the JSON file.
//!
//! Every number in a table is the median over the runs of one pair's samples of
//! one metric. Ratios are ratios of those medians, computed only between pairs
//! measured in the same invocation (same machine, same load, interleaved runs).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::bench::{PairKind, Sample, TestKind};
use crate::machine::Machine;
use crate::stats::{geomean, median};

/// Settings of an invocation, as recorded in the JSON.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Config {
    /// Runs of every pair.
    pub(crate) runs: u32,
    /// Seconds per iperf3 test.
    pub(crate) duration_s: u64,
    /// Offered UDP rate (iperf3 `-b`).
    pub(crate) udp_rate: String,
    /// UDP payload bytes (iperf3 `-l`).
    pub(crate) udp_len: u32,
    /// Tunnel MTU.
    pub(crate) tunnel_mtu: u32,
    /// veth MTU.
    pub(crate) veth_mtu: u32,
    /// Pairs measured, in table order.
    pub(crate) pairs: Vec<PairKind>,
    /// Tests run on each pair, in order.
    pub(crate) tests: Vec<TestKind>,
    /// Ping interval for RTTs, seconds.
    pub(crate) ping_interval_s: f64,
}

/// Setting up one pair for one run, and what was seen of its daemons.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct PairRun {
    /// Run number, from 1.
    pub(crate) run: u32,
    /// The pair.
    pub(crate) pair: PairKind,
    /// Seconds since the harness started.
    pub(crate) started_s: f64,
    /// Seconds to build the topology and complete the handshake.
    pub(crate) setup_s: f64,
    /// Seconds from start of setup to teardown done.
    pub(crate) total_s: f64,
    /// Why setup (or the end-of-run liveness check) failed, if it did.
    pub(crate) error: Option<String>,
    /// Peak RSS of each daemon (A, B) at the end of the run, KiB.
    pub(crate) peak_rss_kib: Vec<u64>,
}

/// Per pair, per metric: the values of every run and their median.
pub(crate) type Summary = BTreeMap<PairKind, BTreeMap<String, Metric>>;

/// One metric of one pair over the runs.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Metric {
    /// One value per successful run, in run order.
    pub(crate) values: Vec<f64>,
    /// Their median.
    pub(crate) median: Option<f64>,
}

/// Everything written to the JSON file.
#[derive(Debug, Serialize)]
pub(crate) struct Results {
    /// Machine details.
    pub(crate) machine: Machine,
    /// Settings.
    pub(crate) config: Config,
    /// Wall time of the whole invocation, seconds.
    pub(crate) elapsed_s: f64,
    /// Whether Ctrl-C/SIGTERM cut it short.
    pub(crate) interrupted: bool,
    /// Every pair setup.
    pub(crate) pair_runs: Vec<PairRun>,
    /// Every measurement, raw.
    pub(crate) samples: Vec<Sample>,
    /// Medians per pair and metric.
    pub(crate) summary: Summary,
    /// `ratios[pair][reference][metric]`: median of `pair` over median of
    /// `reference`, for throughput metrics.
    pub(crate) ratios: BTreeMap<PairKind, BTreeMap<PairKind, BTreeMap<String, f64>>>,
}

/// Metric name of a throughput test: `tcp1-fwd.gbps`.
fn m(test: TestKind, what: &str) -> String {
    format!("{}.{what}", test.key())
}

/// Name of the geometric mean of the four TCP throughput medians.
pub(crate) const TCP_GEOMEAN: &str = "tcp.geomean_gbps";

/// The metrics of one sample, as (name, value).
fn sample_metrics(s: &Sample) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    if s.error.is_some() {
        return out;
    }
    if let Some(r) = &s.iperf {
        out.push((m(s.test, "gbps"), r.received_bps / 1e9));
        out.push((m(s.test, "sent_gbps"), r.sent_bps / 1e9));
        if let Some(x) = r.retransmits {
            out.push((m(s.test, "retransmits"), x as f64));
        }
        if let Some(x) = r.lost_percent {
            out.push((m(s.test, "loss_pct"), x));
        }
        if let Some(x) = r.jitter_ms {
            out.push((m(s.test, "jitter_ms"), x));
        }
    }
    if let Some(c) = &s.cpu {
        if let Some(x) = c.procs_s_per_gbit {
            out.push((m(s.test, "cpu_s_per_gbit"), x));
        }
        if let Some(x) = c.daemons_s_per_gbit {
            out.push((m(s.test, "daemons_cpu_s_per_gbit"), x));
        }
        if let Some(x) = c.host_s_per_gbit {
            out.push((m(s.test, "host_cpu_s_per_gbit"), x));
        }
        out.push((m(s.test, "daemons_cpu_s"), c.daemons_s));
    }
    if let Some(r) = &s.rtt {
        let prefix = if s.test == TestKind::IdleRtt {
            "idle-rtt"
        } else {
            "loaded-rtt"
        };
        if let Some(x) = r.median_ms {
            out.push((format!("{prefix}.median_ms"), x));
        }
        if let Some(x) = r.p99_ms {
            out.push((format!("{prefix}.p99_ms"), x));
        }
        if let Some(x) = r.loss_percent() {
            out.push((format!("{prefix}.loss_pct"), x));
        }
    }
    out
}

/// Medians of every metric of every pair, plus the TCP geometric mean and the
/// daemons' peak RSS.
pub(crate) fn summarize(samples: &[Sample], pair_runs: &[PairRun]) -> Summary {
    let mut values: BTreeMap<PairKind, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for s in samples {
        let entry = values.entry(s.pair).or_default();
        for (name, v) in sample_metrics(s) {
            entry.entry(name).or_default().push(v);
        }
    }
    for pr in pair_runs {
        if pr.error.is_none() && !pr.peak_rss_kib.is_empty() {
            let mib = pr.peak_rss_kib.iter().sum::<u64>() as f64 / 1024.0;
            values
                .entry(pr.pair)
                .or_default()
                .entry("daemons.peak_rss_mib".to_owned())
                .or_default()
                .push(mib);
        }
    }
    let mut summary: Summary = BTreeMap::new();
    for (pair, metrics) in values {
        let out = summary.entry(pair).or_default();
        for (name, vals) in metrics {
            let med = median(&vals);
            out.insert(
                name,
                Metric {
                    values: vals,
                    median: med,
                },
            );
        }
        let tcp: Vec<Option<f64>> = TestKind::TCP
            .iter()
            .map(|t| out.get(&m(*t, "gbps")).and_then(|x| x.median))
            .collect();
        if let Some(g) = geomean(&tcp) {
            out.insert(
                TCP_GEOMEAN.to_owned(),
                Metric {
                    values: Vec::new(),
                    median: Some(g),
                },
            );
        }
    }
    summary
}

/// The median of `metric` for `pair`.
pub(crate) fn med(summary: &Summary, pair: PairKind, metric: &str) -> Option<f64> {
    summary.get(&pair)?.get(metric)?.median
}

/// Throughput ratios between every two measured pairs.
pub(crate) fn ratios(
    summary: &Summary,
) -> BTreeMap<PairKind, BTreeMap<PairKind, BTreeMap<String, f64>>> {
    let mut names: Vec<String> = TestKind::THROUGHPUT.iter().map(|t| m(*t, "gbps")).collect();
    names.push(TCP_GEOMEAN.to_owned());
    let mut out: BTreeMap<PairKind, BTreeMap<PairKind, BTreeMap<String, f64>>> = BTreeMap::new();
    for &pair in summary.keys() {
        for &reference in summary.keys() {
            if pair == reference {
                continue;
            }
            for name in &names {
                if let Some(r) = ratio(summary, pair, reference, name) {
                    out.entry(pair)
                        .or_default()
                        .entry(reference)
                        .or_default()
                        .insert(name.clone(), r);
                }
            }
        }
    }
    out
}

fn ratio(summary: &Summary, pair: PairKind, reference: PairKind, metric: &str) -> Option<f64> {
    let a = med(summary, pair, metric)?;
    let b = med(summary, reference, metric)?;
    (b > 0.0).then(|| a / b)
}

/// A number in three significant figures (at most), or `-`.
pub(crate) fn fmt3(x: Option<f64>) -> String {
    match x {
        None => "-".to_owned(),
        Some(x) if !x.is_finite() => "-".to_owned(),
        Some(x) => {
            let a = x.abs();
            if a >= 100.0 {
                format!("{x:.0}")
            } else if a >= 10.0 {
                format!("{x:.1}")
            } else if a >= 1.0 {
                format!("{x:.2}")
            } else if a == 0.0 {
                "0".to_owned()
            } else {
                format!("{x:.3}")
            }
        }
    }
}

fn fmt_int(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.0}"))
        .unwrap_or_else(|| "-".to_owned())
}

fn fmt_ratio(x: Option<f64>) -> String {
    x.map(|v| format!("{}×", fmt3(Some(v))))
        .unwrap_or_else(|| "-".to_owned())
}

/// Renders a fixed-width table: first column left-aligned, the rest right-aligned.
pub(crate) fn table(title: &str, header: &[String], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut width = vec![0usize; cols];
    for row in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String]| -> String {
        let mut s = String::new();
        for (i, (w, cell)) in width.iter().zip(row).enumerate() {
            let pad = w.saturating_sub(cell.chars().count());
            if i == 0 {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str("  ");
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    let head = line(header);
    let _ = writeln!(out, "{head}");
    let _ = writeln!(out, "{}", "-".repeat(head.chars().count()));
    for row in rows {
        let _ = writeln!(out, "{}", line(row));
    }
    out
}

fn n_runs(summary: &Summary, pair: PairKind, metric: &str) -> usize {
    summary
        .get(&pair)
        .and_then(|p| p.get(metric))
        .map_or(0, |x| x.values.len())
}

/// All tables, as printed on stdout.
pub(crate) fn render(results: &Results) -> String {
    let s = &results.summary;
    let pairs = &results.config.pairs;
    let mut out = String::new();

    // 1. Throughput, with the TCP geometric mean and its ratios.
    let mut header: Vec<String> = vec!["pair".into(), "n".into()];
    header.extend(TestKind::THROUGHPUT.iter().map(|t| t.label().to_owned()));
    header.push("TCP geo".into());
    let refs = [
        (PairKind::Veth, "× veth"),
        (PairKind::Weft, "× weft"),
        (PairKind::Go, "× wg-go"),
        (PairKind::Boringtun, "× boringtun"),
    ];
    let refs: Vec<_> = refs.iter().filter(|(p, _)| pairs.contains(p)).collect();
    header.extend(refs.iter().map(|(_, l)| (*l).to_owned()));
    let rows: Vec<Vec<String>> = pairs
        .iter()
        .map(|&p| {
            let mut row = vec![
                p.label().to_owned(),
                n_runs(s, p, &m(TestKind::Tcp1Fwd, "gbps")).to_string(),
            ];
            row.extend(
                TestKind::THROUGHPUT
                    .iter()
                    .map(|t| fmt3(med(s, p, &m(*t, "gbps")))),
            );
            row.push(fmt3(med(s, p, TCP_GEOMEAN)));
            row.extend(refs.iter().map(|(r, _)| {
                if *r == p {
                    "1×".to_owned()
                } else {
                    fmt_ratio(ratio(s, p, *r, TCP_GEOMEAN))
                }
            }));
            row
        })
        .collect();
    out.push_str(&table(
        &format!(
            "Throughput, Gb/s received (median of {} runs × {} s; UDP offered {}). \
             Ratios: geometric mean of the four TCP medians over the reference pair's.",
            results.config.runs, results.config.duration_s, results.config.udp_rate
        ),
        &header,
        &rows,
    ));
    out.push('\n');

    // 2. Per-test ratios against raw veth and wireguard-go.
    for (reference, name) in [
        (PairKind::Veth, "raw veth"),
        (PairKind::Go, "wireguard-go"),
        (PairKind::Boringtun, "boringtun"),
    ] {
        if !pairs.contains(&reference) {
            continue;
        }
        let mut header: Vec<String> = vec!["pair".into()];
        header.extend(TestKind::THROUGHPUT.iter().map(|t| t.label().to_owned()));
        let rows: Vec<Vec<String>> = pairs
            .iter()
            .filter(|&&p| p != reference)
            .map(|&p| {
                let mut row = vec![p.label().to_owned()];
                row.extend(
                    TestKind::THROUGHPUT
                        .iter()
                        .map(|t| fmt_ratio(ratio(s, p, reference, &m(*t, "gbps")))),
                );
                row
            })
            .collect();
        out.push_str(&table(
            &format!("Throughput × {name} (ratio of medians, per test)"),
            &header,
            &rows,
        ));
        out.push('\n');
    }

    // 3. Loss, retransmits and latency.
    let header: Vec<String> = [
        "pair",
        "retr T1 A→B",
        "T1 B→A",
        "T4 A→B",
        "T4 B→A",
        "loss% U A→B",
        "U B→A",
        "RTT idle p50",
        "p99",
        "load p50",
        "p99",
        "loss%",
    ]
    .iter()
    .map(|x| (*x).to_owned())
    .collect();
    let rows: Vec<Vec<String>> = pairs
        .iter()
        .map(|&p| {
            let mut row = vec![p.label().to_owned()];
            row.extend(
                TestKind::TCP
                    .iter()
                    .map(|t| fmt_int(med(s, p, &m(*t, "retransmits")))),
            );
            row.push(fmt3(med(s, p, &m(TestKind::UdpFwd, "loss_pct"))));
            row.push(fmt3(med(s, p, &m(TestKind::UdpRev, "loss_pct"))));
            row.push(fmt3(med(s, p, "idle-rtt.median_ms")));
            row.push(fmt3(med(s, p, "idle-rtt.p99_ms")));
            row.push(fmt3(med(s, p, "loaded-rtt.median_ms")));
            row.push(fmt3(med(s, p, "loaded-rtt.p99_ms")));
            row.push(fmt3(med(s, p, "loaded-rtt.loss_pct")));
            row
        })
        .collect();
    out.push_str(&table(
        "TCP retransmits per test (T1/T4 = 1/4 streams), UDP loss %, RTT in ms \
         (ping -i 0.05, idle and during TCP1 A→B, with its ping loss %)",
        &header,
        &rows,
    ));
    out.push('\n');

    // 4. CPU cost.
    let mut header: Vec<String> = vec!["pair".into()];
    header.extend(TestKind::THROUGHPUT.iter().map(|t| t.label().to_owned()));
    header.push("daemons T1 A→B".into());
    header.push("daemons U A→B".into());
    header.push("daemons RSS MiB".into());
    let rows: Vec<Vec<String>> = pairs
        .iter()
        .map(|&p| {
            let mut row = vec![p.label().to_owned()];
            row.extend(
                TestKind::THROUGHPUT
                    .iter()
                    .map(|t| fmt3(med(s, p, &m(*t, "cpu_s_per_gbit")))),
            );
            row.push(fmt3(med(
                s,
                p,
                &m(TestKind::Tcp1Fwd, "daemons_cpu_s_per_gbit"),
            )));
            row.push(fmt3(med(
                s,
                p,
                &m(TestKind::UdpFwd, "daemons_cpu_s_per_gbit"),
            )));
            row.push(fmt3(med(s, p, "daemons.peak_rss_mib")));
            row
        })
        .collect();
    out.push_str(&table(
        "CPU seconds per Gbit received (= cores busy per Gb/s; lower is better): both daemons + \
         both iperf3 (utime+stime) per test, then the daemons alone; peak RSS of both daemons",
        &header,
        &rows,
    ));

    let failed = results.samples.iter().filter(|x| x.error.is_some()).count();
    let failed_setups = results
        .pair_runs
        .iter()
        .filter(|x| x.error.is_some())
        .count();
    if failed + failed_setups > 0 || results.interrupted {
        out.push('\n');
        let _ = writeln!(
            out,
            "{failed} measurement(s) and {failed_setups} pair setup(s) failed{}; see the JSON / stderr.",
            if results.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::iperf::IperfReport;

    fn sample(pair: PairKind, test: TestKind, gbps: f64) -> Sample {
        Sample {
            run: 1,
            pair,
            test,
            started_s: 0.0,
            wall_s: 1.0,
            error: None,
            iperf: Some(IperfReport {
                protocol: "TCP".into(),
                streams: 1,
                reverse: false,
                seconds: 1.0,
                received_bytes: 1,
                received_bps: gbps * 1e9,
                sent_bps: gbps * 1e9,
                retransmits: Some(7),
                lost_percent: None,
                lost_packets: None,
                packets: None,
                jitter_ms: None,
                host_cpu_percent: None,
                remote_cpu_percent: None,
                congestion: None,
            }),
            cpu: None,
            rtt: None,
        }
    }

    #[test]
    fn medians_ratios_and_tables() {
        let mut samples = Vec::new();
        for (pair, base) in [(PairKind::Veth, 20.0), (PairKind::Go, 1.0)] {
            for v in [base, base * 2.0, base * 3.0] {
                for t in TestKind::TCP {
                    samples.push(sample(pair, t, v));
                }
            }
        }
        let mut failed = sample(PairKind::Go, TestKind::Tcp1Fwd, 100.0);
        failed.error = Some("boom".into());
        samples.push(failed);
        let summary = summarize(&samples, &[]);
        assert_eq!(med(&summary, PairKind::Go, "tcp1-fwd.gbps"), Some(2.0));
        assert_eq!(med(&summary, PairKind::Veth, "tcp4-rev.gbps"), Some(40.0));
        assert_eq!(
            med(&summary, PairKind::Go, "tcp1-fwd.retransmits"),
            Some(7.0)
        );
        let g = med(&summary, PairKind::Go, TCP_GEOMEAN).unwrap();
        assert!((g - 2.0).abs() < 1e-9);
        let r = ratios(&summary);
        let go_vs_veth = r[&PairKind::Go][&PairKind::Veth]["tcp1-fwd.gbps"];
        assert!((go_vs_veth - 0.05).abs() < 1e-9);

        let t = table(
            "T",
            &["pair".into(), "x".into()],
            &[
                vec!["a↔b".into(), "1".into()],
                vec!["long".into(), "10".into()],
            ],
        );
        assert_eq!(t, "T\npair   x\n--------\na↔b    1\nlong  10\n");
    }

    #[test]
    fn formats() {
        assert_eq!(fmt3(None), "-");
        assert_eq!(fmt3(Some(123.4)), "123");
        assert_eq!(fmt3(Some(21.63)), "21.6");
        assert_eq!(fmt3(Some(1.523)), "1.52");
        assert_eq!(fmt3(Some(0.0312)), "0.031");
        assert_eq!(fmt3(Some(0.0)), "0");
        assert_eq!(fmt_ratio(Some(0.5)), "0.500×");
    }
}
