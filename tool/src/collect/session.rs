//! The periodic collector shared by the interval views: it owns the tracer, drains the
//! ring buffer as events arrive, and every interval turns the kernel's maps into one
//! [`Snapshot`] handed to the view. It stops on Ctrl-C, SIGTERM or SIGHUP, or after
//! `count` snapshots.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};

use super::{
    events::{Event, EventStream},
    extras::{Extras, ExtrasCollector, ExtrasOptions},
    procfs::CommCache,
    tracer::{Health, Tracer},
};
use crate::model::switches::{Key, Row, SwitchModel};

/// The system-wide switch split over one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemSplit {
    pub switches: u64,
    pub same_process: u64,
    pub cross_process: u64,
    pub idle_or_kernel: u64,
}

/// Which rows a view wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKinds {
    /// One row per process (threads summed).
    Processes,
    /// One row per thread.
    Threads,
    /// Processes in `rows`, threads in `thread_rows` (the TUI toggles between them).
    Both,
}

/// What one interval collected.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Seconds since the epoch.
    pub unix_time: f64,
    /// Local time of day, `HH:MM:SS`.
    pub clock: String,
    pub elapsed_s: f64,
    pub system: SystemSplit,
    pub health: Health,
    /// Rows (processes or threads) with their command names, busiest first.
    pub rows: Vec<(Row, String)>,
    /// Thread rows, with [`RowKinds::Both`] only.
    pub thread_rows: Vec<(Row, String)>,
    /// The BPF programs' own cost (bpf_stats).
    pub programs: Vec<crate::model::exporter::ProgramCost>,
    /// Syscalls, copy paths, zombies and forks per process, as far as asked for.
    pub extras: Extras,
}

pub fn clock_now() -> (f64, String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // SAFETY: zeroed tm is valid; localtime_r with valid pointers.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let secs = now.as_secs() as libc::time_t;
    unsafe { libc::localtime_r(&secs, &mut tm) };
    (
        now.as_secs_f64(),
        format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec),
    )
}

/// A process that exec'd has a new name: read it again.
fn forget_execs(comms: &mut CommCache<Key>, events: &[Event]) {
    for e in events {
        if let Event::Exec(x) = e {
            let tgid = x.task.tgid;
            comms.forget(|k| k.tgid == tgid);
        }
    }
}

/// Runs until a signal or `count` snapshots, calling `on_tick` every `interval_s`.
pub fn run_periodic(
    tracer: Tracer,
    kinds: RowKinds,
    extras: ExtrasOptions,
    interval_s: f64,
    count: Option<u64>,
    on_tick: impl FnMut(Snapshot) -> Result<()>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(periodic(tracer, kinds, extras, interval_s, count, on_tick))
}

/// The collector loop itself, for views that run other tasks beside it (`serve`).
pub async fn periodic(
    mut tracer: Tracer,
    kinds: RowKinds,
    extras: ExtrasOptions,
    interval_s: f64,
    count: Option<u64>,
    mut on_tick: impl FnMut(Snapshot) -> Result<()>,
) -> Result<()> {
    let mut stream = EventStream::new(tracer.take_events().context("ring buffer already taken")?)?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let period = Duration::from_secs_f64(interval_s);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut model = SwitchModel::new(kinds == RowKinds::Threads);
    let mut thread_model = (kinds == RowKinds::Both).then(|| SwitchModel::new(true));
    let mut comms: CommCache<Key> = CommCache::default();
    let mut events: Vec<Event> = Vec::new();
    let mut last_system = tracer.cpu_totals()?;
    let mut last_tick = Instant::now();
    let mut reports = 0u64;
    let mut extra_models = ExtrasCollector::start(&mut tracer, extras)?;
    // What happened before the first interval belongs to no report.
    let first = tracer.threads()?;
    model.update(&first, &[]);
    if let Some(m) = &mut thread_model {
        m.update(&first, &[]);
    }

    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let live = tracer.threads()?;
                stream.drain(&mut events);
                forget_execs(&mut comms, &events);
                extra_models.apply(&mut events);
                let exits: Vec<_> = events.drain(..).filter_map(|e| e.thread_exit().copied()).collect();
                let rows = model.update(&live, &exits);
                let thread_rows = thread_model.as_mut().map(|m| m.update(&live, &exits)).unwrap_or_default();
                let now = Instant::now();
                let elapsed_s = now.duration_since(last_tick).as_secs_f64();
                last_tick = now;
                let system = tracer.cpu_totals()?;
                let split = SystemSplit {
                    switches: system.switches - last_system.switches,
                    same_process: system.same_process - last_system.same_process,
                    cross_process: system.cross_process - last_system.cross_process,
                    idle_or_kernel: system.idle_or_kernel - last_system.idle_or_kernel,
                };
                last_system = system;
                let mut named = |rows: Vec<Row>| -> Vec<(Row, String)> {
                    rows.into_iter()
                        .map(|r| {
                            let comm = comms.get(r.key, r.key.id, r.alive, r.exit_comm.as_deref());
                            (r, comm)
                        })
                        .collect()
                };
                let rows = named(rows);
                let thread_rows = named(thread_rows);
                comms.retain(|k| model.contains(k) || thread_model.as_ref().is_some_and(|m| m.contains(k)));
                let (unix_time, clock) = clock_now();
                let health = tracer.health()?;
                let extras = extra_models.tick(&mut tracer, health.ringbuf_drops)?;
                on_tick(Snapshot {
                    unix_time,
                    clock,
                    elapsed_s,
                    system: split,
                    health,
                    programs: tracer.program_costs(),
                    rows,
                    thread_rows,
                    extras,
                })?;
                reports += 1;
                if count.is_some_and(|c| reports >= c) {
                    return Ok(());
                }
            }
            r = stream.recv(&mut events) => {
                r?;
                forget_execs(&mut comms, &events);
                // Into the process table as they come; only thread exits wait for the
                // interval, so a fork storm does not pile events up in memory.
                extra_models.apply(&mut events);
            }
            _ = sigint.recv() => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
            _ = sighup.recv() => return Ok(()),
        }
    }
}
