//! The lifecycle-only session (`zombies`): the tracer with the lifecycle programs alone,
//! the driver, and the process table fed from it. It observes, then answers once
//! ([`LifeSession::zombies`]), or tells what happens as it happens
//! ([`LifeSession::watch`]); the view renders what it is handed.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{
    driver::{Driver, Step},
    lifecycle::{self, Lifecycle, LifecycleOptions},
    parents, procfs, start,
    tracer::{Tracer, TracerOptions},
};
use crate::model::{
    parent_info::Context,
    proctable::{ForkStats, Key, Notice, ReapedProc, Zombie},
};

/// How often `--watch` looks at zombie ages and orphans' new parents.
const WATCH_POLL: Duration = Duration::from_millis(50);

/// Something `--watch` shows.
#[derive(Debug)]
pub enum Happened {
    /// A reported zombie was reaped by its parent, `parent_comm`.
    Reaped {
        proc: ReapedProc,
        parent_comm: String,
        dead_for_ns: Option<u64>,
    },
    /// A child (alive or a zombie) of a process that died, handed to another parent.
    Orphan {
        pid: u32,
        comm: String,
        old_ppid: u32,
        old_parent_comm: String,
        new_ppid: u32,
        new_parent_comm: String,
    },
    /// A zombie reached the minimum age; its parent holds `parent_zombies` of them.
    Appeared {
        zombie: Zombie,
        parent_zombies: usize,
    },
}

/// One parent's fork statistics since the start, and over the last interval.
#[derive(Debug)]
pub struct ParentForks {
    pub key: Key,
    pub comm: String,
    pub total: ForkStats,
    pub delta: ForkStats,
    /// Its children alive or zombies now.
    pub children: usize,
}

/// The table at the end of an interval.
#[derive(Debug)]
pub struct Stats {
    pub interval_s: f64,
    /// Parents that forked or whose children died, by key.
    pub parents: Vec<ParentForks>,
    pub tracked: usize,
    pub repairs: u64,
    /// Zombies at least the minimum age old.
    pub zombies: usize,
}

/// What one poll or tick of `--watch` found.
#[derive(Debug)]
pub struct Watched {
    /// Ring buffer drops so far.
    pub lost: u64,
    pub happened: Vec<Happened>,
    /// The parents of the zombies that appeared, and the machine's headroom.
    pub context: Context,
    /// At each interval's end.
    pub stats: Option<Stats>,
}

/// The tracer, the driver and the process table fed from it.
pub struct LifeSession {
    tracer: Tracer,
    driver: Driver,
    life: Lifecycle,
}

impl LifeSession {
    /// Starts the lifecycle programs alone (no program on every context switch). A
    /// parent's wait channel (/proc/PID/wchan) is readable only to who may ptrace it:
    /// another user's, or root's with every capability, needs `CAP_SYS_PTRACE`, kept
    /// when held.
    pub fn tracer() -> Result<Tracer> {
        start::start_keeping(
            &[],
            None,
            TracerOptions {
                switches: false,
                ..TracerOptions::default()
            },
            |_| vec![caps::Capability::CAP_SYS_PTRACE],
        )
    }

    /// A session that answers once. Call it inside the tokio runtime.
    pub fn start(tracer: Tracer) -> Result<Self> {
        Self::with_driver(tracer, None)
    }

    /// A session that watches: ages and orphans every [`WATCH_POLL`], statistics every
    /// `interval`. Call it inside the tokio runtime.
    pub fn watching(tracer: Tracer, interval: Duration) -> Result<Self> {
        Self::with_driver(tracer, Some(interval))
    }

    fn with_driver(mut tracer: Tracer, ticks: Option<Duration>) -> Result<Self> {
        let mut driver = Driver::new(&mut tracer, ticks)?;
        if ticks.is_some() {
            driver = driver.poll_every(WATCH_POLL);
        }
        // Attached first, seeded second: whatever happens after the scan is in the stream.
        Ok(Self {
            tracer,
            driver,
            // No cgroup filter: every exit is seen.
            life: Lifecycle::start(&LifecycleOptions::default()),
        })
    }

    /// The next step of the driver, its events applied to the process table as they are
    /// read (`THREAD_EXIT`, switch accounting, is of no use here).
    async fn next(&mut self) -> Result<Step> {
        let life = &mut self.life;
        let step = self
            .driver
            .next(&mut |ev| {
                life.apply_one(&ev);
            })
            .await?;
        life.end_batch();
        Ok(step)
    }

    /// Applies the events pending now, then checks the table against /proc (at most
    /// every repair period).
    fn drain(&mut self) -> Result<()> {
        let life = &mut self.life;
        self.driver.drain(&mut |ev| {
            life.apply_one(&ev);
        });
        life.end_batch();
        let lost = self.lost()?;
        let tracer = &mut self.tracer;
        self.life
            .check(lost, self.driver.watermark(), || tracer.zombies_now().ok());
        Ok(())
    }

    /// Ring buffer drops so far.
    pub fn lost(&self) -> Result<u64> {
        Ok(self.tracer.health()?.ringbuf_drops)
    }

    /// The zombies at least `min_age` old that the kernel still shows, with their
    /// parents' context: at once when the kernel dated the zombies older than proclens,
    /// else after observing for `min_age` (or until a signal).
    pub async fn zombies(&mut self, min_age: Duration) -> Result<(Vec<Zombie>, Context)> {
        let undated = lifecycle::start_zombies_undated().is_some();
        self.driver
            .stop_after(if undated { min_age } else { Duration::ZERO });
        loop {
            match self.next().await? {
                Step::Signal(_) | Step::Deadline => break,
                // Nobody reads the notices here.
                _ => drop(self.life.take_notices()),
            }
        }
        self.drain()?;
        let tick_ns = self.life.tick_ns;
        let zombies: Vec<_> = self
            .life
            .table
            .zombies(procfs::boot_ns(), min_age.as_nanos() as u64)
            .into_iter()
            .filter(|z| lifecycle::is_zombie_now(&z.key, tick_ns))
            .collect();
        let context = context(&zombies);
        Ok((zombies, context))
    }

    /// Tells `on` what happened at every poll, with the statistics at every interval's
    /// end (the first one interval in, so that its rates cover a whole interval), until
    /// a signal.
    pub async fn watch(
        &mut self,
        min_age: Duration,
        mut on: impl FnMut(Watched) -> Result<()>,
    ) -> Result<()> {
        let min_age_ns = min_age.as_nanos() as u64;
        let mut last_stats: HashMap<Key, ForkStats> = HashMap::new();
        let mut last_tick = Instant::now();
        loop {
            let tick = match self.next().await? {
                Step::Events | Step::Deadline => continue,
                Step::Signal(_) => return Ok(()),
                Step::Poll => false,
                Step::Tick => true,
            };
            self.drain()?;
            let (happened, context) = self.happened(min_age_ns);
            let stats = tick.then(|| {
                let now = Instant::now();
                let interval_s = now.duration_since(last_tick).as_secs_f64();
                last_tick = now;
                self.stats(interval_s, min_age_ns, &mut last_stats)
            });
            on(Watched {
                lost: self.lost()?,
                happened,
                context,
                stats,
            })?;
        }
    }

    /// What happened since the last call: reaps and orphans (from the table's notices)
    /// and zombies that reached the minimum age, with the context of their parents.
    fn happened(&mut self, min_age_ns: u64) -> (Vec<Happened>, Context) {
        let mut out = Vec::new();
        for n in self.life.take_notices() {
            match n {
                Notice::Reaped {
                    proc, dead_for_ns, ..
                } if proc.reported => {
                    let parent_comm = self.life.parent_comm(proc.parent, proc.ppid);
                    out.push(Happened::Reaped {
                        proc,
                        parent_comm,
                        dead_for_ns,
                    });
                }
                Notice::Orphaned {
                    parent,
                    parent_comm,
                    children,
                    heir: Some(heir),
                } => {
                    let new_parent_comm = self.life.parent_comm(heir.key, heir.tgid);
                    for c in children {
                        out.push(Happened::Orphan {
                            pid: c.tgid,
                            comm: self.comm(&c),
                            old_ppid: parent.tgid,
                            old_parent_comm: parent_comm.clone(),
                            new_ppid: heir.tgid,
                            new_parent_comm: new_parent_comm.clone(),
                        });
                    }
                }
                _ => {}
            }
        }
        let fresh = self.life.new_zombies(min_age_ns);
        if fresh.is_empty() {
            return (out, Context::default());
        }
        let per_parent = self
            .life
            .table
            .zombies_per_parent(procfs::boot_ns(), min_age_ns);
        let context = context(&fresh);
        out.extend(fresh.into_iter().map(|z| Happened::Appeared {
            parent_zombies: per_parent.get(&z.ppid).copied().unwrap_or(1),
            zombie: z,
        }));
        (out, context)
    }

    /// The name the table has for `key`, else `?`.
    fn comm(&self, key: &Key) -> String {
        self.life
            .table
            .get(key)
            .map_or_else(|| "?".into(), |p| p.comm.to_string())
    }

    /// The fork statistics of every parent that forked or lost a child, since the start
    /// and since `last` (which becomes now's).
    fn stats(&self, interval_s: f64, min_age_ns: u64, last: &mut HashMap<Key, ForkStats>) -> Stats {
        let table = &self.life.table;
        let mut parents: Vec<ParentForks> = table
            .all_fork_stats()
            .filter(|(_, t)| t.processes + t.threads + t.child_exits > 0)
            .map(|(key, total)| ParentForks {
                key: *key,
                comm: self.comm(key),
                total: *total,
                delta: total.since(&last.get(key).copied().unwrap_or_default()),
                children: table.children_of(key.tgid),
            })
            .collect();
        parents.sort_by_key(|p| p.key);
        *last = table.all_fork_stats().map(|(k, v)| (*k, *v)).collect();
        Stats {
            interval_s,
            parents,
            tracked: table.len(),
            repairs: table.repairs(),
            zombies: table.zombies(procfs::boot_ns(), min_age_ns).len(),
        }
    }
}

/// Each parent's context and the machine's headroom, for the zombies shown.
fn context<'a>(zombies: impl IntoIterator<Item = &'a Zombie>) -> Context {
    let parents: BTreeSet<u32> = zombies.into_iter().map(|z| z.ppid).collect();
    Context {
        parents: parents.into_iter().map(|p| (p, parents::info(p))).collect(),
        headroom: parents::headroom(),
    }
}
