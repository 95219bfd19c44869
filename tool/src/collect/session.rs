//! The one accounting path of the interval views (`top` in every form, `latency`,
//! `copies`, `serve`) and of `run`'s report: a [`Collector`] folds the events the driver
//! hands it and, at every report, turns the kernel's maps into one [`Snapshot`].
//! [`periodic`] runs it on the driver until a signal or `count` reports.

use std::{
    collections::HashMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use proclens_common::{event::ThreadExit, switch::ThreadSwitches};

use super::{
    driver::{Driver, Step},
    extras::{Extras, ExtrasCollector, ExtrasOptions},
    gone::Exited,
    irq::{IrqCollector, IrqSnapshot},
    procfs::CommCache,
    tracer::{Health, Tracer},
    waits::{WaitsCollector, WaitsSnapshot},
};
use crate::model::{
    event::Event,
    exporter::ProgramCost,
    switches::{Key, Row, SwitchModel},
};

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
    /// The BPF programs' own cost (`bpf_stats`).
    pub programs: Vec<ProgramCost>,
    /// Syscalls, copy paths, zombies and forks per process, as far as asked for.
    pub extras: Extras,
    /// Interrupts per CPU and kind, and their victims, when traced.
    pub irq: Option<IrqSnapshot>,
    /// Blocked time by syscall and the readiness calls, when traced.
    pub waits: Option<WaitsSnapshot>,
}

pub fn clock_now() -> (f64, String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // SAFETY: zeroed tm is valid; localtime_r with valid pointers.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let secs = now.as_secs() as libc::time_t;
    unsafe { libc::localtime_r(&raw const secs, &raw mut tm) };
    (
        now.as_secs_f64(),
        format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec),
    )
}

/// The tracer and the models fed from it between reports.
pub struct Collector {
    tracer: Tracer,
    model: SwitchModel,
    thread_model: Option<SwitchModel>,
    comms: CommCache<Key>,
    /// Processes the events saw die lately: gone without a look in /proc.
    exited: Exited,
    /// Final counts of threads that exited since the last report.
    exits: Vec<ThreadExit>,
    extras: ExtrasCollector,
    irq: Option<IrqCollector>,
    waits: Option<WaitsCollector>,
    last_system: proclens_common::switch::CpuSwitches,
    last_report: Instant,
}

impl Collector {
    /// Starts the models; call it once the tracer is attached (the process table is seeded
    /// from /proc here). What happened before belongs to no report.
    pub fn new(mut tracer: Tracer, kinds: RowKinds, extras: ExtrasOptions) -> Result<Self> {
        let mut model = SwitchModel::new(kinds == RowKinds::Threads);
        let mut thread_model = (kinds == RowKinds::Both).then(|| SwitchModel::new(true));
        let extras = ExtrasCollector::start(&mut tracer, extras)?;
        let irq = tracer
            .irq_maps()
            .map(|m| IrqCollector::start(m))
            .transpose()?;
        // The waits maps before the live threads (see `WaitsCollector`).
        let closed = tracer.waits_maps().map(|m| m.reading()).transpose()?;
        let first = tracer.threads()?;
        let open = tracer.open_blocks().to_vec();
        let waits = closed.map(|r| WaitsCollector::start(&r, &open));
        model.update(&first, &[]);
        if let Some(m) = &mut thread_model {
            m.update(&first, &[]);
        }
        Ok(Self {
            last_system: tracer.cpu_totals()?,
            tracer,
            model,
            thread_model,
            comms: CommCache::default(),
            exited: Exited::default(),
            exits: Vec::new(),
            extras,
            irq,
            waits,
            last_report: Instant::now(),
        })
    }

    /// Folds one event: lifecycle events into the process table as they come, thread
    /// exits kept for the next report.
    pub fn absorb(&mut self, ev: Event) {
        if let Event::Exec(x) = &ev {
            // A process that exec'd has a new name: read it again.
            let tgid = x.task.tgid;
            self.comms.forget(|k| k.tgid == tgid);
        }
        self.exited.absorb(&ev);
        if !self.extras.absorb(&ev)
            && let Event::ThreadExit(t) = ev
        {
            self.exits.push(*t);
        }
    }

    /// After a batch of events, with the driver's watermark after it.
    pub fn end_batch(&mut self, watermark: u64) {
        self.extras.end_batch(watermark);
    }

    /// The process table, when the view keeps one.
    pub fn lifecycle_mut(&mut self) -> Option<&mut super::lifecycle::Lifecycle> {
        self.extras.lifecycle_mut()
    }

    /// The live threads' accounting now, each with the period it is in (on CPU since, off
    /// CPU since) credited up to now, so that every view shows time in the interval it
    /// elapses in: read it before the last drain of an interval, so that a thread that
    /// exits meanwhile is in one or the other (its final counts then supersede the live
    /// ones), never in neither.
    pub fn live_threads(&mut self) -> Result<HashMap<u32, ThreadSwitches>> {
        if let (Some(c), Some(maps)) = (&mut self.waits, self.tracer.waits_maps()) {
            c.before_threads(maps)?;
        }
        self.tracer.threads()
    }

    /// The report of the interval that ends now, from `live` (see
    /// [`Collector::live_threads`]) and the events absorbed since the last one.
    pub fn snapshot(&mut self, live: &HashMap<u32, ThreadSwitches>) -> Result<Snapshot> {
        let (unix_time, clock) = clock_now();
        let exits = std::mem::take(&mut self.exits);
        let rows = self.model.update(live, &exits);
        let thread_rows = self
            .thread_model
            .as_mut()
            .map(|m| m.update(live, &exits))
            .unwrap_or_default();
        let now = Instant::now();
        let elapsed_s = now.duration_since(self.last_report).as_secs_f64();
        self.last_report = now;
        let system = self.tracer.cpu_totals()?;
        let last = std::mem::replace(&mut self.last_system, system);
        let split = SystemSplit {
            switches: system.switches - last.switches,
            same_process: system.same_process - last.same_process,
            cross_process: system.cross_process - last.cross_process,
            idle_or_kernel: system.idle_or_kernel - last.idle_or_kernel,
        };
        let comms = &mut self.comms;
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
        let (model, thread_model) = (&self.model, &self.thread_model);
        self.comms
            .retain(|k| model.contains(k) || thread_model.as_ref().is_some_and(|m| m.contains(k)));
        let health = self.tracer.health()?;
        let extras = self
            .extras
            .tick(&mut self.tracer, health.ringbuf_drops, &self.exited)?;
        let irq = match (&mut self.irq, self.tracer.irq_maps()) {
            (Some(c), Some(maps)) => Some(c.tick(maps, &self.exited)?),
            _ => None,
        };
        let open = self.tracer.open_blocks().to_vec();
        let waits = match (&mut self.waits, self.tracer.waits_maps()) {
            (Some(c), Some(maps)) => Some(c.tick(maps, &open, &self.exited)?),
            _ => None,
        };
        self.exited.rotate(health.ringbuf_drops);
        Ok(Snapshot {
            unix_time,
            clock,
            elapsed_s,
            system: split,
            health,
            programs: self.tracer.program_costs(),
            rows,
            thread_rows,
            extras,
            irq,
            waits,
        })
    }
}

/// Runs until a signal or `count` reports, calling `on_tick` every `interval_s`.
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

/// The periodic views' loop on the driver, for views that run other tasks beside it
/// (`serve`).
pub async fn periodic(
    mut tracer: Tracer,
    kinds: RowKinds,
    extras: ExtrasOptions,
    interval_s: f64,
    count: Option<u64>,
    mut on_tick: impl FnMut(Snapshot) -> Result<()>,
) -> Result<()> {
    let mut driver = Driver::new(&mut tracer, Some(Duration::from_secs_f64(interval_s)))?;
    let mut c = Collector::new(tracer, kinds, extras)?;
    let mut reports = 0u64;
    loop {
        match driver.next(&mut |ev| c.absorb(ev)).await? {
            Step::Tick => {
                // Everything up to the report is in it.
                let live = c.live_threads()?;
                driver.drain(&mut |ev| c.absorb(ev));
                c.end_batch(driver.watermark());
                on_tick(c.snapshot(&live)?)?;
                // What a storm made and the report freed goes back to the system (glibc
                // keeps freed heap otherwise, and a long-running agent would hold its peak).
                // SAFETY: malloc_trim only releases free memory of the allocator.
                unsafe { libc::malloc_trim(0) };
                reports += 1;
                if count.is_some_and(|n| reports >= n) {
                    return Ok(());
                }
            }
            Step::Events => c.end_batch(driver.watermark()),
            Step::Poll | Step::Deadline => {}
            Step::Signal(_) => return Ok(()),
        }
    }
}

/// Rows (with zeros) for the processes in `pids` that are not among `rows` yet: a
/// requested process that has not switched since proclens started is still shown, named
/// from /proc (a pid that has gone is left out).
pub fn idle_rows<'a>(
    pids: impl IntoIterator<Item = &'a u32>,
    rows: &[(Row, String)],
) -> Vec<(Row, String)> {
    let mut out: Vec<(Row, String)> = Vec::new();
    for &pid in pids {
        if rows.iter().chain(&out).any(|(r, _)| r.key.tgid == pid) {
            continue;
        }
        if let Some(comm) = super::procfs::comm(pid) {
            let key = Key {
                id: pid,
                tgid: pid,
                start_ns: 0,
            };
            out.push((Row::idle(key), comm));
        }
    }
    out
}
