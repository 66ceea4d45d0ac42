//! iperf3's `-J` report, reduced to what the harness keeps.
//!
//! Throughput is always the *receiver's* (`end.sum_received`): what came out of
//! the tunnel, not what was pushed in. For TCP the sender's retransmits come from
//! `end.sum_sent` (with `-R` the server is the sender and iperf3 copies its count
//! into the client's report). For UDP, loss is the receiver's count of missing
//! sequence numbers (`end.sum_received.lost_percent`).

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// One iperf3 test as the client reported it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub(crate) struct IperfReport {
    /// `TCP` or `UDP`.
    pub(crate) protocol: String,
    /// Parallel streams.
    pub(crate) streams: u64,
    /// Whether the server sent (`-R`).
    pub(crate) reverse: bool,
    /// Seconds the receiver measured.
    pub(crate) seconds: f64,
    /// Bytes the receiver got.
    pub(crate) received_bytes: u64,
    /// Receiver throughput, bits per second.
    pub(crate) received_bps: f64,
    /// Sender throughput (offered load for UDP), bits per second.
    pub(crate) sent_bps: f64,
    /// TCP retransmits by the sender, if reported.
    pub(crate) retransmits: Option<u64>,
    /// UDP datagrams lost, percent of those sent.
    pub(crate) lost_percent: Option<f64>,
    /// UDP datagrams lost.
    pub(crate) lost_packets: Option<u64>,
    /// UDP datagrams sent.
    pub(crate) packets: Option<u64>,
    /// UDP jitter seen by the receiver, milliseconds.
    pub(crate) jitter_ms: Option<f64>,
    /// iperf3's own CPU figure for the client process, percent of one core.
    pub(crate) host_cpu_percent: Option<f64>,
    /// The same for the server process.
    pub(crate) remote_cpu_percent: Option<f64>,
    /// The sender's TCP congestion control (`end.sender_tcp_congestion`).
    pub(crate) congestion: Option<String>,
}

fn f64_at(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    let x = path.iter().try_fold(v, |v, k| v.get(k))?;
    x.as_u64().or_else(|| {
        // iperf3 writes some integers as floats (e.g. `bytes` in old versions).
        x.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f.round() as u64)
    })
}

impl IperfReport {
    /// Parses the client's `-J` output. A report carrying an `error` (iperf3
    /// writes one when the test could not run or was cut short) is an error.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text).context("iperf3 output is not JSON")?;
        if let Some(err) = v.get("error").and_then(Value::as_str) {
            bail!("iperf3: {err}");
        }
        let test = v
            .pointer("/start/test_start")
            .ok_or_else(|| anyhow!("no start.test_start in iperf3 report"))?;
        let protocol = test
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP")
            .to_owned();
        let streams = u64_at(test, &["num_streams"]).unwrap_or(1);
        let reverse = u64_at(test, &["reverse"]).unwrap_or(0) != 0;
        let end = v
            .get("end")
            .ok_or_else(|| anyhow!("no end section in iperf3 report"))?;
        let received = end
            .get("sum_received")
            .ok_or_else(|| anyhow!("no end.sum_received in iperf3 report"))?;
        let sent = end
            .get("sum_sent")
            .ok_or_else(|| anyhow!("no end.sum_sent in iperf3 report"))?;
        let udp = protocol == "UDP";
        Ok(Self {
            seconds: f64_at(received, &["seconds"]).unwrap_or(0.0),
            received_bytes: u64_at(received, &["bytes"])
                .ok_or_else(|| anyhow!("no end.sum_received.bytes"))?,
            received_bps: f64_at(received, &["bits_per_second"])
                .ok_or_else(|| anyhow!("no end.sum_received.bits_per_second"))?,
            sent_bps: f64_at(sent, &["bits_per_second"]).unwrap_or(0.0),
            retransmits: if udp {
                None
            } else {
                u64_at(sent, &["retransmits"])
            },
            lost_percent: if udp {
                f64_at(received, &["lost_percent"])
            } else {
                None
            },
            lost_packets: if udp {
                u64_at(received, &["lost_packets"])
            } else {
                None
            },
            packets: if udp {
                u64_at(received, &["packets"])
            } else {
                None
            },
            jitter_ms: if udp {
                f64_at(received, &["jitter_ms"])
            } else {
                None
            },
            host_cpu_percent: f64_at(end, &["cpu_utilization_percent", "host_total"]),
            remote_cpu_percent: f64_at(end, &["cpu_utilization_percent", "remote_total"]),
            congestion: end
                .get("sender_tcp_congestion")
                .and_then(Value::as_str)
                .map(str::to_owned),
            protocol,
            streams,
            reverse,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    // Trimmed from real iperf3 3.12 output (`-J -R` over veth).
    const TCP_REVERSE: &str = r#"{
      "start": {"test_start": {"protocol": "TCP", "num_streams": 1, "blksize": 131072,
                "omit": 0, "duration": 2, "bytes": 0, "blocks": 0, "reverse": 1}},
      "intervals": [],
      "end": {
        "streams": [],
        "sum_sent": {"start": 0, "end": 2.001084, "seconds": 2.001084, "bytes": 4645847040,
                     "bits_per_second": 18573321419.790474, "retransmits": 13310, "sender": false},
        "sum_received": {"start": 0, "end": 2.000038, "seconds": 2.000038, "bytes": 4644666640,
                         "bits_per_second": 18578313572.04213, "sender": false},
        "cpu_utilization_percent": {"host_total": 37.6, "host_user": 1.4, "host_system": 36.2,
                                    "remote_total": 88.1, "remote_user": 0.2, "remote_system": 87.9},
        "sender_tcp_congestion": "bbr", "receiver_tcp_congestion": "bbr"
      }
    }"#;

    const UDP: &str = r#"{
      "start": {"test_start": {"protocol": "UDP", "num_streams": 1, "blksize": 1372,
                "duration": 2, "reverse": 0, "target_bitrate": 1000000000}},
      "end": {
        "sum": {"seconds": 2.000168, "bytes": 249952332, "bits_per_second": 999746843.8,
                "jitter_ms": 0.0007, "lost_packets": 1112, "packets": 182181, "lost_percent": 0.61},
        "sum_sent": {"seconds": 2.000125, "bytes": 249952332, "bits_per_second": 999746843.8,
                     "jitter_ms": 0, "lost_packets": 0, "packets": 182181, "lost_percent": 0},
        "sum_received": {"seconds": 2.000168, "bytes": 248426668, "bits_per_second": 993623207.6,
                         "jitter_ms": 0.0007, "lost_packets": 1112, "packets": 182181,
                         "lost_percent": 0.61},
        "cpu_utilization_percent": {"host_total": 22.0, "remote_total": 15.5}
      }
    }"#;

    #[test]
    fn tcp_reverse() {
        let r = IperfReport::parse(TCP_REVERSE).unwrap();
        assert_eq!(r.protocol, "TCP");
        assert!(r.reverse);
        assert_eq!(r.streams, 1);
        assert_eq!(r.received_bytes, 4644666640);
        assert!((r.received_bps - 18578313572.04213).abs() < 1.0);
        assert_eq!(r.retransmits, Some(13310));
        assert_eq!(r.lost_percent, None);
        assert_eq!(r.remote_cpu_percent, Some(88.1));
        assert_eq!(r.congestion.as_deref(), Some("bbr"));
    }

    #[test]
    fn udp() {
        let r = IperfReport::parse(UDP).unwrap();
        assert_eq!(r.protocol, "UDP");
        assert!(!r.reverse);
        assert_eq!(r.received_bytes, 248426668);
        assert_eq!(r.retransmits, None);
        assert_eq!(r.lost_percent, Some(0.61));
        assert_eq!(r.lost_packets, Some(1112));
        assert_eq!(r.packets, Some(182181));
        assert!((r.sent_bps - 999746843.8).abs() < 1.0);
    }

    #[test]
    fn errors() {
        let e = IperfReport::parse(r#"{"start": {}, "end": {}, "error": "unable to connect"}"#)
            .unwrap_err();
        assert!(format!("{e}").contains("unable to connect"));
        assert!(IperfReport::parse("not json").is_err());
        assert!(IperfReport::parse(r#"{"start": {"test_start": {}}, "end": {}}"#).is_err());
    }
}
