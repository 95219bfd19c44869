//! Gauges that are always in `/metrics`, whatever the processes do: the machine's
//! processes, threads, zombies and pid headroom, and proclens's own cost. A family that
//! only appears when something happens (the zombies by parent) cannot tell an alert "0"
//! from "the exporter is broken"; these can.

/// The machine's figures, read every collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostGauges {
    /// Processes (thread-group leaders) /proc lists, zombies included.
    pub processes: u64,
    /// Threads the kernel counts (`nr_threads`, /proc/loadavg's fourth field).
    pub threads: u64,
    /// Zombies of any age, from the process table proclens keeps from the lifecycle
    /// events (and checked against /proc).
    pub zombies: u64,
    /// Tasks that can still be created before fork fails: the lower of
    /// `kernel.pid_max` and `kernel.threads-max`, less the threads that exist.
    pub pid_headroom: u64,
}

impl HostGauges {
    /// Series these gauges show.
    pub const SERIES: usize = 4;

    /// The headroom from the kernel's limits and the threads that exist.
    pub fn headroom(pid_max: u64, threads_max: u64, threads: u64) -> u64 {
        pid_max.min(threads_max).saturating_sub(threads)
    }
}

/// proclens's own figures, read when `/metrics` is asked for (`client_golang`'s
/// `process_*` names, which dashboards and alerts already know).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SelfGauges {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub start_time_seconds: f64,
    pub threads: u64,
}

/// Upper bounds (seconds) of the scrape-duration histogram's buckets.
pub const SCRAPE_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Series of proclens's own families: the seven `process_*` gauges and counter, tracked
/// processes, table repairs, label sets, series, the cap, folded label sets, and the scrape-duration
/// histogram (its buckets, `+Inf`, `_sum`, `_count`).
pub const SELF_SERIES: usize = 7 + 6 + SCRAPE_BUCKETS.len() + 3;

/// Durations of the scrapes served so far, as a histogram.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScrapeDurations {
    /// Scrapes per bucket (not cumulative); the last one is `+Inf`.
    pub buckets: [u64; SCRAPE_BUCKETS.len() + 1],
    pub sum_seconds: f64,
    pub count: u64,
}

impl ScrapeDurations {
    pub fn observe(&mut self, seconds: f64) {
        let i = SCRAPE_BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(SCRAPE_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_is_the_tighter_limit_less_the_threads() {
        assert_eq!(HostGauges::headroom(4_194_304, 192_000, 1_000), 191_000);
        assert_eq!(HostGauges::headroom(32_768, 192_000, 1_000), 31_768);
        assert_eq!(HostGauges::headroom(100, 192_000, 1_000), 0);
    }

    #[test]
    fn scrape_durations_fall_in_their_bucket() {
        let mut d = ScrapeDurations::default();
        for s in [0.0005, 0.001, 0.003, 2.0] {
            d.observe(s);
        }
        assert_eq!(d.buckets[0], 2, "le=0.001 holds 0.5 ms and 1 ms");
        assert_eq!(d.buckets[2], 1, "3 ms in le=0.005");
        assert_eq!(d.buckets[SCRAPE_BUCKETS.len()], 1, "2 s only in +Inf");
        assert_eq!(d.count, 4);
        assert!((d.sum_seconds - 2.0045).abs() < 1e-12);
    }
}
