use proclens_common::switch::{ThreadSwitches, flags, state};
use proptest::prelude::*;

use super::*;

/// One thread as the scheduler and the switch program (tool-ebpf/src/switch.rs, whose
/// crediting rule `switch_out` mirrors) see it.
#[derive(Debug, Clone, Default)]
struct Sim {
    e: ThreadSwitches,
    run_delay: u64,
    last_arrival: u64,
    last_queued: u64,
    on_cpu: bool,
    queued: bool,
    /// `CpuSwitches::last_ts` of the run in progress (0: unknown).
    in_ts: u64,
    timing: Option<Timing>,
}

impl Sim {
    fn timing(&self) -> Timing {
        self.timing.unwrap_or(Timing::SchedInfo)
    }

    /// A thread that blocked at `t`, first seen then (its entry as a switch out leaves it).
    fn blocked_at(t: u64, timing: Timing) -> Self {
        Self {
            e: ThreadSwitches {
                tgid: 1,
                out_ts: t,
                voluntary: 1,
                flags: flags::WAIT_KNOWN | flags::NVCSW_KNOWN | flags::OUT_VOLUNTARY,
                ..Default::default()
            },
            timing: Some(timing),
            ..Default::default()
        }
    }

    fn read(&self, now: u64) -> LiveThread {
        let mut st = 0;
        if self.on_cpu {
            st |= state::ON_CPU;
        } else if self.queued {
            st |= state::QUEUED;
        }
        let si = self.timing() == Timing::SchedInfo;
        LiveThread {
            tid: 7,
            state: st,
            now,
            run_delay: if si { self.run_delay } else { 0 },
            last_arrival: if si { self.last_arrival } else { 0 },
            last_queued: if si { self.last_queued } else { 0 },
            process_start: 0,
            stats: self.e,
        }
    }

    fn wake(&mut self, t: u64) {
        assert!(!self.on_cpu && !self.queued);
        self.queued = true;
        self.last_queued = t;
        if self.e.wake_ts == 0 || self.e.wake_ts < self.e.out_ts {
            self.e.wake_ts = t;
        }
    }

    fn arrive(&mut self, t: u64) {
        assert!(self.queued);
        self.run_delay += t - self.last_queued;
        self.last_queued = 0;
        self.last_arrival = t;
        self.in_ts = t;
        self.queued = false;
        self.on_cpu = true;
    }

    /// The switch program's crediting at a switch out at `now` (voluntary or preempted).
    fn switch_out(&mut self, now: u64, voluntary: bool) {
        assert!(self.on_cpu);
        let e = &mut self.e;
        let in_ts = self.in_ts;
        let start = if e.flags & flags::RUN_FROM_OUT != 0 && e.out_ts > in_ts {
            e.out_ts
        } else {
            in_ts
        };
        let ran = start != 0 && start <= now;
        if ran {
            e.oncpu_ns += now - start;
        }
        if self.timing == Some(Timing::Wakeups) {
            let wake = e.wake_ts;
            if ran && e.out_ts != 0 && e.out_ts <= wake && wake <= in_ts {
                e.blocked_ns += wake - e.out_ts;
                e.runq_ns += in_ts - wake;
            }
        } else {
            let wait = self.run_delay.saturating_sub(e.run_delay_seen);
            e.run_delay_seen = self.run_delay;
            if e.flags & flags::WAIT_KNOWN != 0 {
                e.runq_ns += wait;
                if ran && e.flags & flags::OUT_VOLUNTARY != 0 && e.out_ts != 0 && e.out_ts <= in_ts
                {
                    e.blocked_ns += (in_ts - e.out_ts).saturating_sub(wait);
                }
            }
        }
        if voluntary {
            e.voluntary += 1;
            e.wake_ts = 0;
            e.flags = flags::WAIT_KNOWN | flags::NVCSW_KNOWN | flags::OUT_VOLUNTARY;
        } else {
            e.involuntary += 1;
            e.wake_ts = now;
            e.flags = flags::WAIT_KNOWN | flags::NVCSW_KNOWN;
        }
        e.out_ts = now;
        self.on_cpu = false;
        self.queued = !voluntary;
        if !voluntary {
            self.last_queued = now;
        }
    }
}

fn times(e: &ThreadSwitches) -> (u64, u64, u64) {
    (e.oncpu_ns, e.blocked_ns, e.runq_ns)
}

#[test]
fn a_thread_asleep_shows_its_sleep_as_it_goes() {
    let s = Sim::blocked_at(1_000, Timing::SchedInfo);
    for now in [1_000, 1_500, 2_000, 31_000] {
        let got = open_period(&s.read(now), Timing::SchedInfo);
        assert_eq!(
            got,
            Open {
                blocked_ns: now - 1_000,
                ..Open::default()
            }
        );
    }
}

#[test]
fn a_woken_thread_waits_then_runs() {
    let mut s = Sim::blocked_at(1_000, Timing::SchedInfo);
    s.wake(4_000);
    assert_eq!(
        open_period(&s.read(4_500), Timing::SchedInfo),
        Open {
            oncpu_ns: 0,
            blocked_ns: 3_000,
            runq_ns: 500
        }
    );
    s.arrive(5_000);
    assert_eq!(
        open_period(&s.read(7_000), Timing::SchedInfo),
        Open {
            oncpu_ns: 2_000,
            blocked_ns: 3_000,
            runq_ns: 1_000
        }
    );
    // At its switch out the kernel credits exactly that, and nothing is open any more.
    s.switch_out(7_000, true);
    assert_eq!(times(&s.e), (2_000, 3_000, 1_000));
    assert_eq!(
        open_period(&s.read(7_000), Timing::SchedInfo),
        Open::default()
    );
}

#[test]
fn a_thread_seeded_on_cpu_runs_from_its_seed() {
    let mut s = Sim {
        e: ThreadSwitches {
            tgid: 1,
            out_ts: 10_000,
            flags: flags::NVCSW_KNOWN | flags::RUN_FROM_OUT,
            ..Default::default()
        },
        on_cpu: true,
        last_arrival: 4_000,
        ..Default::default()
    };
    let got = open_period(&s.read(12_000), Timing::SchedInfo);
    assert_eq!(
        got,
        Open {
            oncpu_ns: 2_000,
            ..Open::default()
        }
    );
    // Its first switch out on a CPU whose last switch proclens did not see.
    s.switch_out(13_000, false);
    assert_eq!(times(&s.e), (3_000, 0, 0));
}

#[test]
fn a_thread_seeded_while_queued_counts_the_wait_from_its_seed() {
    // Queued since 3,000, seeded at 10,000: the seed moves the baseline by 7,000.
    let mut s = Sim {
        e: ThreadSwitches {
            tgid: 1,
            out_ts: 10_000,
            run_delay_seen: 500 + 7_000,
            wake_ts: 10_000,
            flags: flags::NVCSW_KNOWN | flags::WAIT_KNOWN,
            ..Default::default()
        },
        run_delay: 500,
        queued: true,
        last_queued: 3_000,
        ..Default::default()
    };
    assert_eq!(open_period(&s.read(10_400), Timing::SchedInfo).runq_ns, 400);
    s.arrive(11_000);
    s.switch_out(11_500, true);
    assert_eq!(times(&s.e), (500, 0, 1_000));
}

#[test]
fn a_stale_arrival_credits_nothing_until_the_run_ends() {
    let mut s = Sim::blocked_at(5_000, Timing::SchedInfo);
    s.on_cpu = true;
    s.last_arrival = 1_000;
    assert_eq!(
        open_period(&s.read(9_000), Timing::SchedInfo),
        Open::default()
    );
}

#[test]
fn a_clock_behind_the_entry_credits_nothing() {
    let s = Sim::blocked_at(5_000, Timing::SchedInfo);
    assert_eq!(
        open_period(&s.read(4_000), Timing::SchedInfo),
        Open::default()
    );
    let never = LiveThread::default();
    assert_eq!(open_period(&never, Timing::SchedInfo), Open::default());
}

#[test]
fn with_timed_wakeups_a_run_in_progress_waits_for_its_end() {
    let mut s = Sim::blocked_at(1_000, Timing::Wakeups);
    assert_eq!(
        open_period(&s.read(3_000), Timing::Wakeups).blocked_ns,
        2_000
    );
    s.wake(4_000);
    assert_eq!(
        open_period(&s.read(4_100), Timing::Wakeups),
        Open {
            oncpu_ns: 0,
            blocked_ns: 3_000,
            runq_ns: 100
        }
    );
    s.arrive(5_000);
    assert_eq!(
        open_period(&s.read(6_000), Timing::Wakeups),
        Open {
            blocked_ns: 3_000,
            ..Open::default()
        }
    );
    s.switch_out(6_000, false);
    assert_eq!(times(&s.e), (1_000, 3_000, 1_000));
    // Preempted: waiting from its switch out.
    assert_eq!(open_period(&s.read(6_300), Timing::Wakeups).runq_ns, 300);
}

/// A step of a thread's life, or a reading.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Time passes, then userspace reads.
    Read(u64),
    /// Time passes, then the next transition happens: blocked → woken → running →
    /// switched out (voluntarily or not).
    Next(u64, bool),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            (0u64..5_000).prop_map(Step::Read),
            (1u64..5_000, any::<bool>()).prop_map(|(d, v)| Step::Next(d, v)),
        ],
        0..60,
    )
}

proptest! {
    /// Whatever the thread does and whenever userspace reads, what is credited at a
    /// reading is never more than the kernel has closed at the thread's next switch out,
    /// and equals it then. With the scheduler's figures (`sched_info`) each credited time
    /// also only grows, and every ns since the first switch out is in one of them: the
    /// sum of the intervals' shares is the total.
    #[test]
    fn credited_time_grows_and_meets_the_kernels(steps in steps(), helpers in any::<bool>()) {
        let timing = if helpers { Timing::Wakeups } else { Timing::SchedInfo };
        let mut s = Sim::blocked_at(1_000, timing);
        let mut now = 1_000u64;
        let mut last = times(&credited(&s.read(now), timing));
        let mut since_close = vec![last];
        for step in steps {
            match step {
                Step::Read(d) => now += d,
                Step::Next(d, voluntary) => {
                    now += d;
                    if s.on_cpu {
                        s.switch_out(now, voluntary);
                        let closed = times(&s.e);
                        prop_assert_eq!(times(&credited(&s.read(now), timing)), closed);
                        for r in since_close.drain(..) {
                            prop_assert!(r.0 <= closed.0 && r.1 <= closed.1 && r.2 <= closed.2,
                                "read {:?}, closed {:?}", r, closed);
                        }
                    } else if s.queued {
                        s.arrive(now);
                    } else {
                        s.wake(now);
                    }
                }
            }
            let got = times(&credited(&s.read(now), timing));
            since_close.push(got);
            if timing == Timing::SchedInfo {
                prop_assert!(got.0 >= last.0 && got.1 >= last.1 && got.2 >= last.2,
                    "{:?} after {:?}", got, last);
                prop_assert_eq!(got.0 + got.1 + got.2, now - 1_000);
            }
            last = got;
        }
    }
}
