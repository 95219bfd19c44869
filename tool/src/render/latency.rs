//! Run-queue latency histograms (runqlat style) and their JSON form.

use serde::Serialize;

use crate::model::histogram::{Hist, percentile_us};

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Bucket {
    pub low_us: u64,
    pub high_us: u64,
    pub count: u64,
}

/// One histogram: system-wide (`pid` None) or one process's.
#[derive(Debug, Serialize)]
pub struct JsonHist<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: f64,
    pub interval_s: f64,
    pub pid: Option<u32>,
    pub comm: Option<&'a str>,
    /// Waits that ended in the interval.
    pub count: u64,
    /// Time spent waiting for a CPU in the interval (a wait still going on at the report
    /// included, up to it), as `top`'s `runq_ms`.
    pub runq_ms: f64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub buckets: Vec<Bucket>,
}

fn low(i: usize) -> u64 {
    if i == 0 { 0 } else { 1 << i }
}

/// Non-empty buckets, from the first to the last used one (runqlat shows the gaps too).
pub fn buckets(h: &Hist) -> Vec<Bucket> {
    let Some(first) = h.iter().position(|&n| n > 0) else {
        return Vec::new();
    };
    let last = h.iter().rposition(|&n| n > 0).unwrap_or(first);
    (first..=last)
        .map(|i| Bucket {
            low_us: low(i),
            high_us: (1u64 << (i + 1)) - 1,
            count: h[i],
        })
        .collect()
}

/// One histogram's JSON line: `h`, and `runq_ns` waited in the interval.
pub fn json(
    time: f64,
    interval_s: f64,
    pid: Option<u32>,
    comm: Option<&str>,
    h: &Hist,
    runq_ns: u64,
) -> String {
    serde_json::to_string(&JsonHist {
        kind: "latency",
        time,
        interval_s,
        pid,
        comm,
        count: h.iter().sum(),
        runq_ms: runq_ns as f64 / 1e6,
        p50_us: percentile_us(h, 50.0),
        p99_us: percentile_us(h, 99.0),
        buckets: buckets(h),
    })
    .expect("plain struct serialises")
}

/// The histogram with a 40-column bar per bucket.
pub fn plain(title: &str, h: &Hist) -> Vec<String> {
    let mut out = vec![title.to_string()];
    let bs = buckets(h);
    if bs.is_empty() {
        out.push("     (no run-queue waits)".into());
        return out;
    }
    let max = bs.iter().map(|b| b.count).max().unwrap_or(1).max(1);
    out.push(format!(
        "{:>24} : {:<8} {}",
        "usecs", "count", "distribution"
    ));
    for b in bs {
        let width = (b.count * 40).div_ceil(max) as usize;
        out.push(format!(
            "{:>10} -> {:<10} : {:<8} |{:<40}|",
            b.low_us,
            b.high_us,
            b.count,
            "*".repeat(width)
        ));
    }
    let f = |v: Option<u64>| v.map_or("-".into(), |us| format!("<{us}us"));
    out.push(format!(
        "     p50 {}  p99 {}  samples {}",
        f(percentile_us(h, 50.0)),
        f(percentile_us(h, 99.0)),
        h.iter().sum::<u64>()
    ));
    out
}

#[cfg(test)]
mod tests {
    use proclens_common::switch::RUNQ_BUCKETS;

    use super::*;

    #[test]
    fn histogram_rendering() {
        let mut h: Hist = [0; RUNQ_BUCKETS];
        h[1] = 10; // 2-3 us
        h[3] = 5; // 8-15 us
        let bs = buckets(&h);
        assert_eq!(bs.len(), 3, "gaps are shown");
        assert_eq!(
            bs[0],
            Bucket {
                low_us: 2,
                high_us: 3,
                count: 10
            }
        );
        assert_eq!(bs[1].count, 0);
        let lines = plain("all", &h);
        assert!(
            lines[2].contains("2 -> 3") && lines[2].contains(&"*".repeat(40)),
            "{lines:?}"
        );
        assert!(
            lines[4].contains(&format!("|{:<40}|", "*".repeat(20))),
            "{lines:?}"
        );
        let v: serde_json::Value =
            serde_json::from_str(&json(1.0, 1.0, Some(3), Some("x"), &h, 2_500_000)).unwrap();
        assert_eq!(v["count"], 15);
        assert_eq!(v["runq_ms"], 2.5);
        assert_eq!(v["p50_us"], 4);
        assert_eq!(v["buckets"][2]["low_us"], 8);
        assert!(plain("none", &[0; RUNQ_BUCKETS])[1].contains("no run-queue waits"));
    }
}
