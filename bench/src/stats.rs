//! Latency histograms (HdrHistogram, microsecond resolution) and their
//! percentile summaries.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Largest latency a histogram can hold; larger samples are clamped to it.
const MAX_MICROS: u64 = 120_000_000;

/// A latency distribution in microseconds, 3 significant digits.
#[derive(Clone)]
pub struct LatencyHistogram {
    inner: Histogram<u64>,
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LatencyHistogram({:?})", self.summary())
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        LatencyHistogram {
            inner: Histogram::new_with_bounds(1, MAX_MICROS, 3)
                .expect("static histogram bounds are valid"),
        }
    }

    /// Records one sample; below 1 µs counts as 1 µs, above the bound as the bound.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(MAX_MICROS)
            .clamp(1, MAX_MICROS);
        self.inner.saturating_record(micros);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        self.inner
            .add(&other.inner)
            .expect("histograms share the same bounds");
    }

    /// The recorded values as (µs, count) pairs, to send to another process.
    pub fn to_pairs(&self) -> Vec<(u64, u64)> {
        self.inner
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    /// The inverse of [`Self::to_pairs`] (values in the same buckets).
    pub fn from_pairs(pairs: &[(u64, u64)]) -> Self {
        let mut h = Self::new();
        for &(v, n) in pairs {
            let _ = h.inner.record_n(v.clamp(1, MAX_MICROS), n);
        }
        h
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.inner.len()
    }

    /// The value at quantile `q` (0..=1), in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.inner.is_empty() {
            return 0.0;
        }
        self.inner.value_at_quantile(q) as f64 / 1000.0
    }

    /// The distribution as (percentile, ms) pairs at 50, 75, 90, 95, 99,
    /// 99.5, 99.9, 99.99 and 100 (the max); empty when nothing was recorded.
    pub fn curve(&self) -> Vec<[f64; 2]> {
        if self.inner.is_empty() {
            return Vec::new();
        }
        [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99, 100.0]
            .into_iter()
            .map(|p| [p, round3(self.quantile_ms(p / 100.0))])
            .collect()
    }

    /// Percentiles, max and mean.
    pub fn summary(&self) -> LatencySummary {
        let empty = self.inner.is_empty();
        LatencySummary {
            count: self.count(),
            p50_ms: self.quantile_ms(0.50),
            p99_ms: self.quantile_ms(0.99),
            p999_ms: self.quantile_ms(0.999),
            max_ms: if empty {
                0.0
            } else {
                self.inner.max() as f64 / 1000.0
            },
            mean_ms: if empty {
                0.0
            } else {
                self.inner.mean() / 1000.0
            },
        }
    }
}

/// Percentiles of one run, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
}

/// Rounds to 3 decimals (microseconds when the unit is ms) for stable JSON.
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        let mut h = LatencyHistogram::new();
        for us in [5u64, 5, 900, 12_345, 1_000_000] {
            h.record(Duration::from_micros(us));
        }
        let back = LatencyHistogram::from_pairs(&h.to_pairs());
        assert_eq!(back.count(), 5);
        assert_eq!(back.summary(), h.summary());
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= b.abs() * rel
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = LatencyHistogram::new();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!(close(s.p50_ms, 500.0, 0.002), "p50 {}", s.p50_ms);
        assert!(close(s.p99_ms, 990.0, 0.002), "p99 {}", s.p99_ms);
        assert!(close(s.p999_ms, 999.0, 0.002), "p999 {}", s.p999_ms);
        assert!(close(s.max_ms, 1000.0, 0.002), "max {}", s.max_ms);
        assert!(close(s.mean_ms, 500.5, 0.002), "mean {}", s.mean_ms);
    }

    #[test]
    fn tail_is_visible_at_p999_but_not_p99() {
        let mut h = LatencyHistogram::new();
        for _ in 0..9_990 {
            h.record(Duration::from_micros(200));
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(50));
        }
        let s = h.summary();
        assert!(close(s.p99_ms, 0.2, 0.01), "p99 {}", s.p99_ms);
        assert!(close(s.p999_ms, 0.2, 0.01), "p999 {}", s.p999_ms);
        assert!(close(s.max_ms, 50.0, 0.01), "max {}", s.max_ms);
        h.record(Duration::from_millis(50));
        assert!(close(h.quantile_ms(0.999), 50.0, 0.01));
    }

    #[test]
    fn merge_adds_counts_and_extremes_clamp() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        a.record(Duration::from_nanos(10)); // below 1 µs → 1 µs
        b.record(Duration::from_secs(10_000)); // above the bound → clamped
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert!(a.summary().max_ms >= 119_000.0);
        assert_eq!(LatencyHistogram::new().summary(), LatencySummary::default());
    }

    #[test]
    fn curve_rises_to_the_max() {
        assert!(LatencyHistogram::new().curve().is_empty());
        let mut h = LatencyHistogram::new();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let c = h.curve();
        assert_eq!(c.first().unwrap()[0], 50.0);
        assert_eq!(c.last().unwrap()[0], 100.0);
        assert!(c.windows(2).all(|w| w[0][1] <= w[1][1]));
        assert!((c.last().unwrap()[1] - 1000.0).abs() < 2.0);
    }

    #[test]
    fn rounding() {
        assert_eq!(round3(1.23456), 1.235);
        assert_eq!(round3(0.0004), 0.0);
    }
}
