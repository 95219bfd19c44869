//! log2 latency histograms (bucket `i` = `[2^i, 2^(i+1))` µs, bucket 0 also < 1 µs).

use proclens_common::switch::RUNQ_BUCKETS;

pub type Hist = [u64; RUNQ_BUCKETS];

/// Upper bound (µs) of the bucket holding the `p`-th percentile (0 < p <= 100), or `None`
/// for an empty histogram. The bound is exclusive: latencies in the bucket are below it.
pub fn percentile_us(hist: &Hist, p: f64) -> Option<u64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    // The smallest count that reaches p% of the samples (at least one sample).
    let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(1u64 << (i + 1));
        }
    }
    Some(1u64 << RUNQ_BUCKETS)
}

/// [`percentile_us`], capped at the longest wait seen (`max_ns`, shown in whole µs): no
/// percentile exceeds it, so the cap is the tighter bound whenever the percentile falls in
/// the bucket that holds the longest wait, and a percentile never reads above the maximum
/// printed beside it.
pub fn percentile_capped_us(hist: &Hist, p: f64, max_ns: u64) -> Option<u64> {
    percentile_us(hist, p).map(|bound| bound.min(max_ns / 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut h: Hist = [0; RUNQ_BUCKETS];
        assert_eq!(percentile_us(&h, 50.0), None);
        h[0] = 90; // < 2 µs
        h[10] = 10; // [1024, 2048) µs
        assert_eq!(percentile_us(&h, 50.0), Some(2));
        assert_eq!(percentile_us(&h, 90.0), Some(2));
        assert_eq!(percentile_us(&h, 91.0), Some(2048));
        assert_eq!(percentile_us(&h, 99.0), Some(2048));
        assert_eq!(percentile_us(&h, 100.0), Some(2048));
    }

    #[test]
    fn percentiles_never_exceed_the_longest_wait() {
        let mut h: Hist = [0; RUNQ_BUCKETS];
        assert_eq!(percentile_capped_us(&h, 50.0, 0), None);
        h[0] = 3; // all under 1 µs
        assert_eq!(percentile_capped_us(&h, 50.0, 700), Some(0));
        h[4] = 1; // one wait of 24.5 µs, in [16, 32)
        assert_eq!(percentile_capped_us(&h, 50.0, 24_500), Some(2));
        assert_eq!(percentile_capped_us(&h, 99.0, 24_500), Some(24));
    }
}
