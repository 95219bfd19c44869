//! The period a thread is in when it is read (on CPU since its last arrival, or off CPU
//! since its last switch out), credited to its entry so that every interval shows the time
//! that elapsed in it: a thread asleep for 30 s shows ~1 s blocked in each 1 s interval,
//! not 30 s when it next runs, and one that never runs again still shows its time.
//!
//! The kernel credits a period when it closes (at the thread's next switch out, see
//! tool-ebpf/src/switch.rs). What is credited here for an open period is exactly what the
//! switch program will credit for it when it closes, read at an earlier moment, so each
//! figure only grows from one reading to the next and the sum over intervals is the total.

use proclens_common::switch::{LiveThread, ThreadSwitches, flags, state};

/// How the switch programs time waits on this kernel (see `collect::switch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// From the scheduler's `sched_info` (`run_delay`, `last_arrival`, `last_queued`), on
    /// the run queue's clock.
    SchedInfo,
    /// From wakeups the wakeup programs time (kernels without `sched_info`): a run in
    /// progress, and the wait before it, are then credited when it ends, as the start of
    /// a run is only kept per CPU. Never more than the kernel will credit, but a thread's
    /// wait credited while it was queued is taken back while it runs: the views' totals
    /// hold their highest value meanwhile (`Counts::at_least`).
    Wakeups,
}

/// The entry of `t` with its open period credited (on-CPU, blocked and run-queue time;
/// counts and histograms are left to the switch out that closes it).
pub fn credited(t: &LiveThread, timing: Timing) -> ThreadSwitches {
    let mut e = t.stats;
    let open = open_period(t, timing);
    e.oncpu_ns += open.oncpu_ns;
    e.blocked_ns += open.blocked_ns;
    e.runq_ns += open.runq_ns;
    e
}

/// Time in the period in progress, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(
    clippy::struct_field_names,
    reason = "the suffix is the unit, as in every other figure"
)]
pub struct Open {
    pub oncpu_ns: u64,
    pub blocked_ns: u64,
    pub runq_ns: u64,
}

/// What the switch program will credit for the period `t` is in, counted up to `t.now`.
pub fn open_period(t: &LiveThread, timing: Timing) -> Open {
    let e = &t.stats;
    if e.out_ts == 0 || t.now < e.out_ts {
        // Never seen switching out (nothing to start from), or a clock behind it.
        return Open::default();
    }
    match timing {
        Timing::SchedInfo => sched_info(t),
        Timing::Wakeups => wakeups(t),
    }
}

/// The run's start by the switch program's rule (a thread seeded on CPU runs from its
/// seed), when `t` is on a CPU in a run that began after its last switch out.
fn run_start(t: &LiveThread, arrival: u64) -> Option<u64> {
    let e = &t.stats;
    if e.flags & flags::RUN_FROM_OUT != 0 {
        return Some(arrival.max(e.out_ts));
    }
    // An arrival before the last switch out is a stale stamp (the scheduler skips it for a
    // task it never saw queued): the run's start is unknown until it ends.
    (arrival >= e.out_ts).then_some(arrival)
}

fn sched_info(t: &LiveThread) -> Open {
    let e = &t.stats;
    let on_cpu = t.state & state::ON_CPU != 0;
    let start = if on_cpu {
        match run_start(t, t.last_arrival) {
            Some(s) => Some(s),
            None => return Open::default(),
        }
    } else {
        None
    };
    // The wait since the last switch out: what the scheduler has added to `run_delay`
    // (at an arrival, or a migration while queued), plus the wait still going on (which
    // a thread seeded while queued has in its baseline already, from before its seed).
    let mut waited = t.run_delay;
    if !on_cpu && t.last_queued != 0 {
        waited += t.now.saturating_sub(t.last_queued);
    }
    let wait = waited.saturating_sub(e.run_delay_seen);
    let known = e.flags & flags::WAIT_KNOWN != 0;
    // Off CPU from the last switch out until the run began, or until now.
    let off_until = start.unwrap_or(t.now);
    let blocked = if known && e.flags & flags::OUT_VOLUNTARY != 0 && off_until >= e.out_ts {
        (off_until - e.out_ts).saturating_sub(wait)
    } else {
        0
    };
    Open {
        oncpu_ns: start.map_or(0, |s| t.now.saturating_sub(s)),
        blocked_ns: blocked,
        runq_ns: if known { wait } else { 0 },
    }
}

fn wakeups(t: &LiveThread) -> Open {
    let e = &t.stats;
    let on_cpu = t.state & state::ON_CPU != 0;
    let woken = e.wake_ts != 0 && e.wake_ts >= e.out_ts && e.wake_ts <= t.now;
    if on_cpu {
        // The run's start is unknown here; the time blocked before it is not.
        let blocked = if woken { e.wake_ts - e.out_ts } else { 0 };
        return Open {
            blocked_ns: blocked,
            ..Open::default()
        };
    }
    if woken {
        return Open {
            oncpu_ns: 0,
            blocked_ns: e.wake_ts - e.out_ts,
            runq_ns: t.now - e.wake_ts,
        };
    }
    if e.flags & flags::OUT_VOLUNTARY != 0 && t.state & state::QUEUED == 0 {
        return Open {
            blocked_ns: t.now - e.out_ts,
            ..Open::default()
        };
    }
    Open::default()
}

#[cfg(test)]
mod tests;
