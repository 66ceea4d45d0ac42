//! Medians, percentiles, geometric means, and the RTTs in `ping` output.

use serde::Serialize;

/// Median of the finite values; `None` if there are none. An even count gives
/// the mean of the two middle values.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v.get(mid).copied()
    } else {
        Some((v.get(mid - 1)? + v.get(mid)?) / 2.0)
    }
}

/// The `p`-th percentile (0–100) by the nearest-rank method: the smallest value
/// such that at least `p`% of the values are at or below it.
pub(crate) fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v.get(rank.clamp(1, v.len()) - 1).copied()
}

/// Geometric mean of positive values; `None` if any is missing or not positive.
pub(crate) fn geomean(values: &[Option<f64>]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut log_sum = 0.0;
    for v in values {
        let v = (*v)?;
        if v <= 0.0 || !v.is_finite() {
            return None;
        }
        log_sum += v.ln();
    }
    Some((log_sum / values.len() as f64).exp())
}

/// Round-trip times of one `ping` run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Rtt {
    /// Echo requests sent.
    pub(crate) sent: u64,
    /// Replies received.
    pub(crate) received: u64,
    /// Every reply's RTT, milliseconds, in order.
    pub(crate) rtts_ms: Vec<f64>,
    /// Median RTT, ms.
    pub(crate) median_ms: Option<f64>,
    /// 99th percentile RTT, ms.
    pub(crate) p99_ms: Option<f64>,
}

impl Rtt {
    /// Parses the output of `ping -n` (iputils): one `time=X ms` per reply and
    /// the `N packets transmitted, M received` summary.
    pub(crate) fn parse_ping(text: &str) -> Self {
        let mut rtts = Vec::new();
        let mut sent = 0;
        let mut received = 0;
        for line in text.lines() {
            if let Some(rest) = line.split("time=").nth(1) {
                if let Some(ms) = rest
                    .split_whitespace()
                    .next()
                    .and_then(|t| t.parse::<f64>().ok())
                {
                    rtts.push(ms);
                }
            }
            if line.contains("packets transmitted") {
                let nums: Vec<u64> = line
                    .split([',', ' '])
                    .filter_map(|w| w.parse::<u64>().ok())
                    .collect();
                sent = nums.first().copied().unwrap_or(0);
                received = nums.get(1).copied().unwrap_or(0);
            }
        }
        if received == 0 {
            received = rtts.len() as u64;
        }
        Self {
            sent,
            received,
            median_ms: median(&rtts),
            p99_ms: percentile(&rtts, 99.0),
            rtts_ms: rtts,
        }
    }

    /// Percent of requests without a reply.
    pub(crate) fn loss_percent(&self) -> Option<f64> {
        (self.sent > 0)
            .then(|| 100.0 * (self.sent.saturating_sub(self.received)) as f64 / self.sent as f64)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[5.0], 99.0), Some(5.0));
        assert_eq!(percentile(&[], 99.0), None);
    }

    #[test]
    fn geomeans() {
        let g = geomean(&[Some(1.0), Some(4.0)]).unwrap();
        assert!((g - 2.0).abs() < 1e-12);
        assert_eq!(geomean(&[Some(1.0), None]), None);
        assert_eq!(geomean(&[Some(0.0)]), None);
        assert_eq!(geomean(&[]), None);
    }

    #[test]
    fn parses_ping() {
        let out = "PING 10.77.0.2 (10.77.0.2) 56(84) bytes of data.\n\
                   64 bytes from 10.77.0.2: icmp_seq=1 ttl=64 time=0.114 ms\n\
                   64 bytes from 10.77.0.2: icmp_seq=2 ttl=64 time=0.046 ms\n\
                   64 bytes from 10.77.0.2: icmp_seq=4 ttl=64 time=12.5 ms\n\
                   \n--- 10.77.0.2 ping statistics ---\n\
                   4 packets transmitted, 3 received, 25% packet loss, time 223ms\n\
                   rtt min/avg/max/mdev = 0.023/0.054/0.114/0.030 ms\n";
        let r = Rtt::parse_ping(out);
        assert_eq!((r.sent, r.received), (4, 3));
        assert_eq!(r.rtts_ms, vec![0.114, 0.046, 12.5]);
        assert_eq!(r.median_ms, Some(0.114));
        assert_eq!(r.p99_ms, Some(12.5));
        assert_eq!(r.loss_percent(), Some(25.0));
        let none = Rtt::parse_ping("");
        assert_eq!(none.loss_percent(), None);
        assert_eq!(none.median_ms, None);
    }
}
