//! Latency histograms (HDR, microseconds) and their summaries in milliseconds, plus the exact
//! percentile of a small sample that the per-second timeline uses, and the per-order figures of
//! every section.

use hdrhistogram::Histogram;
use serde::Serialize;

/// 1 µs .. 120 s at 3 significant digits: a latency is known to 0.1 % wherever it falls.
const LOWEST_US: u64 = 1;
const HIGHEST_US: u64 = 120_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        Latencies(
            Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
                .expect("constant bounds are valid for an HDR histogram"),
        )
    }

    /// Values outside the range are clamped to it rather than lost: a 5-minute straggler
    /// still counts, as 120 s, so the tail is never flattered.
    pub fn record(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(LOWEST_US, HIGHEST_US));
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value at quantile `q` (0..=1), in ms; None when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.0.is_empty()).then(|| us_to_ms(self.0.value_at_quantile(q)))
    }

    pub fn summary(&self) -> Summary {
        let h = &self.0;
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            p50: Some(us_to_ms(h.value_at_quantile(0.50))),
            p90: Some(us_to_ms(h.value_at_quantile(0.90))),
            p99: Some(us_to_ms(h.value_at_quantile(0.99))),
            p99_9: Some(us_to_ms(h.value_at_quantile(0.999))),
            max: Some(us_to_ms(h.max())),
            mean: Some(round3(h.mean() / 1000.0)),
        }
    }
}

/// A histogram summarized in milliseconds; every figure null when nothing was recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p99_9: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

fn us_to_ms(us: u64) -> f64 {
    round3(us as f64 / 1000.0)
}

/// Microsecond resolution is all the data has: more digits would only be noise in the JSON.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The nearest-rank percentile (`q` in 0..=1) of `values`, which it sorts. For the timeline's
/// per-second buckets, small enough to be exact.
pub fn percentile(values: &mut [u64], q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (q * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

/// `value` per accepted order; none without orders.
pub fn per_order(value: f64, orders: u64) -> Option<f64> {
    (orders > 0).then(|| value / orders as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_histogram_summarizes_to_nulls() {
        let s = Latencies::new().summary();
        assert_eq!(s.count, 0);
        assert_eq!(s.p99, None);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["p50"], serde_json::Value::Null);
    }

    #[test]
    fn summary_gives_percentiles_in_milliseconds_within_a_tenth_of_a_percent() {
        let mut h = Latencies::new();
        // 1..=1000 ms, one each.
        for ms in 1..=1000u64 {
            h.record(ms * 1000);
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        let close = |got: Option<f64>, want: f64| {
            let got = got.unwrap();
            assert!((got - want).abs() <= want * 0.001 + 0.001, "got {got}, want {want}");
        };
        close(s.p50, 500.0);
        close(s.p90, 900.0);
        close(s.p99, 990.0);
        close(s.p99_9, 999.0);
        close(s.max, 1000.0);
        close(s.mean, 500.5);
    }

    #[test]
    fn values_beyond_the_range_are_clamped_not_dropped() {
        let mut h = Latencies::new();
        h.record(0);
        h.record(600_000_000);
        assert_eq!(h.len(), 2);
        let max = h.summary().max.unwrap();
        assert!((max - 120_000.0).abs() < 120.0, "{max}");
    }

    #[test]
    fn percentile_uses_the_nearest_rank() {
        let mut v = vec![5, 1, 4, 2, 3];
        assert_eq!(percentile(&mut v, 0.5), Some(3));
        assert_eq!(percentile(&mut v, 0.99), Some(5));
        assert_eq!(percentile(&mut v, 0.0), Some(1));
        assert_eq!(percentile(&mut [], 0.99), None);
        let mut hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&mut hundred, 0.99), Some(99));
    }
}
