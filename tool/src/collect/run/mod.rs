//! `run -- CMD`'s collection: the command started in its cgroup, traced on the driver by
//! the same [`Collector`] as every interval view, until it ends and its last figures have
//! come in. A snapshot every [`FOLD_EVERY`] moves the figures of processes that have
//! finished into userspace ([`RunTotals`]) and frees their kernel map entries, so the
//! maps hold only live processes however many come and go; the report is every
//! process's latest figures.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::{
    cgroup::RunCgroup,
    command::{self, Identity, Reaped},
    driver::{Driver, Settle, Settled, Sig, Step},
    extras::{ExtrasOptions, ZOMBIE_MIN_AGE_NS},
    forks::AfterFork,
    lifecycle::{Forked, LifecycleOptions, Reaps, Seed},
    procfs,
    session::{Collector, RowKinds, Snapshot},
    tracer::Tracer,
};
use crate::model::{
    event::Event,
    forks::CostRow,
    proctable::{Key, Notice},
    run_totals::RunTotals,
};
use anyhow::{Context as _, Result};

/// After the command ends, how proclens waits for its last figures. The leader's final
/// switch comes a few ms after proclens reaped it: looked for every 2 ms. Then the last
/// switches of every thread that exited, and the reaps of its dead descendants, every
/// 10 ms; once the leader's last switch is in they get 300 ms, and those still unreaped
/// then are reported as left behind. 2 s in all at most.
const SETTLE: Settle = Settle {
    limit: Duration::from_secs(2),
    soon: Duration::from_millis(2),
    poll: Duration::from_millis(10),
    grace: Duration::from_millis(300),
};
/// How often finished processes' figures are folded into userspace and their entries
/// deleted: a fork storm of ~60,000 short processes a second leaves ~15,000 processes'
/// entries per fold, well within the maps' sizes.
const FOLD_EVERY: Duration = Duration::from_millis(250);

/// Everything `run` reports, collected.
pub struct RunOutcome {
    pub reaped: Reaped,
    pub wall_s: f64,
    /// Every process's and thread's latest figures.
    pub totals: RunTotals,
    /// The last snapshot: the kernel's drop counters, zombies left (its rows, the waits'
    /// too, are in `totals`).
    pub snapshot: Snapshot,
    pub forked: Forked,
    /// Reaps of processes dead at least [`ZOMBIE_MIN_AGE_NS`] when reaped.
    pub late_reaps: Vec<Notice>,
    /// Names of the processes freed during the run, by pid: parents that are gone by
    /// the report still have a name.
    pub freed_names: HashMap<u32, String>,
}

/// The command's process table: seeded with its leader, fed by the events the cgroup
/// filter lets through, every reap noticed (the late ones are kept).
fn lifecycle(pid: u32) -> ExtrasOptions {
    ExtrasOptions {
        lifecycle: Some(LifecycleOptions {
            seed: Seed::Pids(vec![pid]),
            exits_filtered: false,
            reaps: Reaps::All,
        }),
        ..ExtrasOptions::default()
    }
}

/// Keeps what the report needs of the reap notices, as they come (a fork storm's would
/// pile up otherwise).
#[derive(Default)]
struct ReapLog {
    late: Vec<Notice>,
    freed_names: HashMap<u32, String>,
}

impl ReapLog {
    fn take(&mut self, c: &mut Collector) {
        if let Some(life) = c.lifecycle_mut() {
            let notices = life.take_notices();
            self.fold(notices);
        }
    }

    fn fold(&mut self, notices: Vec<Notice>) {
        for n in notices {
            if let Notice::Reaped {
                proc: p,
                dead_for_ns,
                ..
            } = &n
            {
                self.freed_names.insert(p.key.tgid, p.comm.to_string());
                if dead_for_ns.is_some_and(|d| d >= ZOMBIE_MIN_AGE_NS) {
                    self.late.push(n);
                }
            }
        }
    }
}

/// Runs `args` in `cgroup` (as `user`) and traces it to its end. Ctrl-C reaches the
/// command through the terminal and proclens reports after it; SIGTERM and SIGHUP are
/// passed on to it.
pub async fn trace(
    mut tracer: Tracer,
    cgroup: &RunCgroup,
    user: Option<Identity>,
    args: &[String],
    keep: &[caps::Capability],
) -> Result<Result<RunOutcome, std::io::Error>> {
    let mut driver = Driver::new(&mut tracer, Some(FOLD_EVERY))?;
    let started = Instant::now();
    let child = match command::command(args, cgroup, user)?.spawn() {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let pid = child.id();
    // The command runs as its user now; proclens needs no more than map reads and, at
    // the end, what removing the cgroup takes.
    tracer.drop_privileges(keep)?;
    let mut c = Collector::new(tracer, RowKinds::Both, lifecycle(pid))?;
    let mut reaps = ReapLog::default();
    let mut totals = RunTotals::default();
    // The execs each periodic snapshot hands over (the report lists them all), and the
    // after-fork rows of processes that ended: a snapshot's row of an ended process is
    // its last (its entries are deleted after it), so the final one would not have it.
    let mut execs = Vec::new();
    let mut ended = EndedForkRows::default();
    // The leader's last switch and its process's death, whenever their events are read
    // (they may come in before the wait for the command returns).
    let mut leader = Leader::default();
    // The wait's return time is the command's reap (proclens's wait is not traced).
    let mut waiter = tokio::task::spawn_blocking(move || {
        command::wait4(pid as i32).map(|r| (r, procfs::boot_ns()))
    });
    let (reaped, reaped_ns) = loop {
        let step = {
            let mut absorb = absorber(&mut c, &mut leader, pid);
            tokio::select! {
                r = &mut waiter => break r.context("waiting for the command")??,
                step = driver.next(&mut absorb) => step?,
            }
        };
        match step {
            Step::Signal(Sig::Terminate) => forward(pid, libc::SIGTERM),
            Step::Signal(Sig::Hangup) => forward(pid, libc::SIGHUP),
            Step::Tick => {
                let mut snap = fold(&mut c, &mut driver, &mut totals, &mut leader, pid)?;
                if let Some(a) = &mut snap.extras.after_fork {
                    execs.append(&mut a.execs);
                    ended.keep(a);
                }
                reaps.take(&mut c);
                reaps.fold(snap.extras.notices);
            }
            _ => {
                c.end_batch(driver.watermark());
                reaps.take(&mut c);
            }
        }
    };
    let wall_s = started.elapsed().as_secs_f64();

    let live = driver
        .settle(&SETTLE, |driver, late| {
            // Until the leader's last switch is in, a drain each poll is all it takes: the
            // thread iterator runs once it is.
            if !leader.done() && !late {
                driver.drain(&mut absorber(&mut c, &mut leader, pid));
                if !leader.done() {
                    return Ok(Settled::Awaiting);
                }
            }
            let live = c.live_threads()?;
            driver.drain(&mut absorber(&mut c, &mut leader, pid));
            c.end_batch(driver.watermark());
            // Reaped by proclens's wait, which is not traced: its free would come only an
            // RCU grace period later (20-80 ms of every run). Its last figures are in
            // already: the leader's last switch, and the balance of exits and last
            // switches for the threads that died before it.
            if let Some(l) = c.lifecycle_mut() {
                l.reaped_by_proclens(pid, reaped_ns);
            }
            reaps.take(&mut c);
            let leader_gone = leader.done() && !live.values().any(|t| t.tgid == pid);
            Ok(if !leader_gone {
                Settled::Pending(live)
            } else if leader.all_switched_out()
                && c.lifecycle_mut().is_some_and(|l| l.all_dead_reaped())
            {
                Settled::Done(live)
            } else {
                Settled::Stragglers(live)
            })
        })
        .await?;
    let mut snapshot = c.snapshot(&live)?;
    take_rows(&mut totals, &mut snapshot);
    if let Some(a) = &mut snapshot.extras.after_fork {
        execs.append(&mut a.execs);
        a.execs = execs;
        ended.add_to(a);
    }
    reaps.fold(std::mem::take(&mut snapshot.extras.notices));
    Ok(Ok(RunOutcome {
        reaped,
        wall_s,
        totals,
        snapshot,
        forked: c.lifecycle_mut().map(|l| l.forked).unwrap_or_default(),
        late_reaps: reaps.late,
        freed_names: reaps.freed_names,
    }))
}

/// What the events have said so far of the command's end: its leader's last switch and
/// death, and which exited threads' last switches are still to come.
#[derive(Debug, Default)]
struct Leader {
    /// Its last switch (the switch programs' thread exit).
    switched_out: bool,
    /// Its process's death (the exit of its last thread). Events of the per-CPU rings
    /// are merged by time, so the process's fork and execs came in before it; the last
    /// switch, on another ring, may come in first.
    died: bool,
    /// Per thread (thread id, process id), exits less last switches read: a thread's
    /// last switch comes after its exit, sometimes after its parent reaped it, and it
    /// carries the thread's final figures. A thread with a positive balance has exited
    /// and its figures are still to come. Counted, not flagged, so that the two in
    /// either order, and a thread id used again, balance out.
    unswitched: HashMap<(u32, u32), i32>,
}

impl Leader {
    fn note(&mut self, ev: &Event, pid: u32) {
        self.died |= ev.process_death().is_some_and(|x| x.task.tgid == pid);
        let (tid, step) = match ev {
            Event::ThreadExit(t) => {
                self.switched_out |= t.header.tid == pid;
                ((t.header.tid, t.stats.tgid), -1)
            }
            Event::Exit(x) => ((x.task.pid, x.task.tgid), 1),
            _ => return,
        };
        let n = self.unswitched.entry(tid).or_default();
        *n += step;
        if *n == 0 {
            self.unswitched.remove(&tid);
        }
    }

    fn done(&self) -> bool {
        self.switched_out && self.died
    }

    /// Whether every thread that exited has had its last switch read.
    fn all_switched_out(&self) -> bool {
        self.unswitched.values().all(|&n| n <= 0)
    }
}

/// Where each event read goes: what the command's end waits for, and the collector.
fn absorber<'a>(c: &'a mut Collector, leader: &'a mut Leader, pid: u32) -> impl FnMut(Event) + 'a {
    move |ev| {
        leader.note(&ev, pid);
        c.absorb(ev);
    }
}

/// One periodic snapshot while the command runs, its rows folded into `totals` (the
/// kernel entries of processes that have finished are freed by it); returns the rest.
fn fold(
    c: &mut Collector,
    driver: &mut Driver,
    totals: &mut RunTotals,
    leader: &mut Leader,
    pid: u32,
) -> Result<Snapshot> {
    let live = c.live_threads()?;
    driver.drain(&mut absorber(c, leader, pid));
    c.end_batch(driver.watermark());
    let mut snap = c.snapshot(&live)?;
    take_rows(totals, &mut snap);
    Ok(snap)
}

/// Moves a snapshot's rows into `totals` (of the waits, the rows; the snapshot keeps
/// what the kernel could tell).
fn take_rows(totals: &mut RunTotals, s: &mut Snapshot) {
    totals.fold(
        std::mem::take(&mut s.rows),
        &std::mem::take(&mut s.thread_rows),
        s.extras.procs.take(),
        std::mem::take(&mut s.extras.proc_comms),
    );
    if let Some(w) = &mut s.waits {
        totals.fold_waits(std::mem::take(&mut w.procs));
    }
}

fn forward(pid: u32, sig: i32) {
    // SAFETY: kill with our child's pid.
    unsafe { libc::kill(pid as i32, sig) };
}

/// The last after-fork rows (and names) of processes that ended before the final snapshot.
#[derive(Default)]
struct EndedForkRows {
    rows: Vec<CostRow>,
    comms: HashMap<Key, String>,
}

impl EndedForkRows {
    fn keep(&mut self, a: &AfterFork) {
        for r in a.rows.iter().filter(|r| a.gone.contains(&r.key)) {
            self.rows.push(r.clone());
            if let Some(c) = a.comms.get(&r.key) {
                self.comms.insert(r.key, c.clone());
            }
        }
    }

    /// Adds the rows the final snapshot has no row of.
    fn add_to(self, a: &mut AfterFork) {
        let mut comms = self.comms;
        for r in self.rows {
            if !a.rows.iter().any(|x| x.key == r.key) {
                if let Some(c) = comms.remove(&r.key) {
                    a.comms.insert(r.key, c);
                }
                a.rows.push(r);
            }
        }
    }
}

#[cfg(test)]
mod tests;
