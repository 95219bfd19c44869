//! `proclens zombies`: current zombies grouped by parent (default), a live stream of
//! zombie/reap/orphan events (`--watch`), or a health check (`--check`).

use std::{
    collections::{BTreeSet, HashMap},
    io::Write as _,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Args;

use super::Output;
use crate::{
    collect::{
        driver::{Driver, Step},
        lifecycle::{self, Lifecycle, LifecycleOptions},
        parents, procfs,
        session::clock_now,
        start,
        tracer::{Tracer, TracerOptions},
    },
    model::proctable::{ForkStats, Key, Notice, Zombie},
    render::zombies as render,
};

#[derive(Args, Debug)]
#[allow(
    clippy::doc_markdown,
    reason = "the doc comments are the --help text, printed as written"
)]
pub struct ZombiesArgs {
    /// A dead process counts as a zombie once its parent has left it unreaped this long
    /// (seconds, fractions allowed, >= 0). Without --watch, proclens answers at once: the
    /// kernel tells when the zombies older than proclens last ran, during which they died
    /// (a task iterator, Linux 5.8+ with sched_info). Where it cannot, their ages count
    /// from start-up and proclens observes for --min-age before it reports.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_min_age)]
    pub min_age: f64,
    /// Stream events until Ctrl-C: a zombie appeared (reached --min-age), a zombie was
    /// reaped (and after how long), an orphan was re-parented (and to whom), plus a stats
    /// line every --interval with fork statistics per parent and the lost-event count.
    #[arg(long, conflicts_with = "check")]
    pub watch: bool,
    /// Health check: print the zombies, then exit 0 when at most --max zombies at least
    /// --min-age old exist, 1 otherwise.
    #[arg(long)]
    pub check: bool,
    /// With --check: how many zombies are tolerated.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "check")]
    pub max: u64,
    /// With --watch: seconds between stats lines (> 0).
    #[arg(short = 'i', long, value_name = "SECS", default_value = "1", value_parser = super::parse_interval)]
    pub interval: f64,
    #[command(flatten)]
    pub output: Output,
}

fn parse_min_age(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("minimum age must be 0 seconds or more, got `{s}`"));
    }
    if v > 86_400.0 * 365.0 {
        return Err(format!("minimum age `{s}` is longer than a year"));
    }
    Ok(v)
}

pub fn run(args: ZombiesArgs) -> Result<ExitCode> {
    // Zombies come from lifecycle events alone: no program on every context switch.
    // A parent's wait channel (/proc/PID/wchan) is readable only to who may ptrace it:
    // another user's, or root's with every capability, needs CAP_SYS_PTRACE, kept when held.
    let tracer = start::start_keeping(
        &[],
        None,
        TracerOptions {
            switches: false,
            ..TracerOptions::default()
        },
        |_| vec![caps::Capability::CAP_SYS_PTRACE],
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        if args.watch {
            let stats = Some(Duration::from_secs_f64(args.interval));
            // Zombie ages and orphans' new parents are checked every 50 ms.
            let poll = Duration::from_millis(50);
            Session::start(tracer, stats, Some(poll))?
                .watch(&args)
                .await
        } else {
            Session::start(tracer, None, None)?.snapshot(&args).await
        }
    })
}

/// The tracer, the driver and the process table fed from it.
struct Session {
    tracer: Tracer,
    driver: Driver,
    life: Lifecycle,
}

impl Session {
    fn start(mut tracer: Tracer, ticks: Option<Duration>, poll: Option<Duration>) -> Result<Self> {
        let mut driver = Driver::new(&mut tracer, ticks)?;
        if let Some(p) = poll {
            driver = driver.poll_every(p);
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

    fn lost(&self) -> Result<u64> {
        Ok(self.tracer.health()?.ringbuf_drops)
    }

    /// Each parent's context and the machine's headroom, for the zombies shown.
    fn context<'a>(zombies: impl IntoIterator<Item = &'a Zombie>) -> render::Context {
        let parents: BTreeSet<u32> = zombies.into_iter().map(|z| z.ppid).collect();
        render::Context {
            parents: parents.into_iter().map(|p| (p, parents::info(p))).collect(),
            headroom: parents::headroom(),
        }
    }

    /// Prints the zombies at least --min-age old: at once when the kernel dated the
    /// zombies older than proclens, else after observing for --min-age.
    async fn snapshot(&mut self, args: &ZombiesArgs) -> Result<ExitCode> {
        let min_age_ns = (args.min_age * 1e9) as u64;
        let wait = if lifecycle::start_zombies_undated().is_some() {
            Duration::from_secs_f64(args.min_age)
        } else {
            Duration::ZERO
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                step = self.next() => {
                    if let Step::Signal(_) = step? {
                        break;
                    }
                    // Nobody reads the notices here.
                    self.life.take_notices();
                }
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.drain()?;
        let tick_ns = self.life.tick_ns;
        let zombies: Vec<_> = self
            .life
            .table
            .zombies(procfs::boot_ns(), min_age_ns)
            .into_iter()
            .filter(|z| lifecycle::is_zombie_now(&z.key, tick_ns))
            .collect();
        let ctx = Self::context(&zombies);
        let lost = self.lost()?;
        let (time, _) = clock_now();
        let lines = if args.output.json {
            render::snapshot_json(time, &zombies, &ctx, lost, args.min_age)
        } else {
            render::snapshot_plain(&zombies, &ctx, lost, args.min_age)
        };
        let mut out = std::io::stdout().lock();
        for l in lines {
            writeln!(out, "{l}")?;
        }
        out.flush()?;
        if args.check && zombies.len() as u64 > args.max {
            eprintln!(
                "proclens: {} zombies at least {}s old (at most {} allowed)",
                zombies.len(),
                args.min_age,
                args.max
            );
            return Ok(ExitCode::from(1));
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Streams zombie, reaped and orphan events, and a stats line every interval.
    async fn watch(&mut self, args: &ZombiesArgs) -> Result<ExitCode> {
        let json = args.output.json;
        let min_age_ns = (args.min_age * 1e9) as u64;
        let mut last_stats: HashMap<Key, ForkStats> = HashMap::new();
        let mut last_tick = Instant::now();
        let mut out = std::io::stdout().lock();
        loop {
            let mut lines: Vec<String> = Vec::new();
            match self.next().await? {
                Step::Events => {}
                Step::Poll => {
                    self.drain()?;
                    lines.extend(self.watch_lines(json, min_age_ns)?);
                }
                // A stats line every interval; the first one interval in, so its rates
                // cover a whole interval.
                Step::Tick => {
                    self.drain()?;
                    lines.extend(self.watch_lines(json, min_age_ns)?);
                    let now = Instant::now();
                    let interval_s = now.duration_since(last_tick).as_secs_f64();
                    last_tick = now;
                    lines.extend(self.stats_lines(
                        json,
                        interval_s,
                        min_age_ns,
                        &mut last_stats,
                    )?);
                }
                Step::Signal(_) => break,
            }
            if !lines.is_empty() {
                for l in lines {
                    writeln!(out, "{l}")?;
                }
                out.flush()?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Lines for what happened since the last call: reaps and orphans (from notices) and
    /// zombies that reached the minimum age.
    fn watch_lines(&mut self, json: bool, min_age_ns: u64) -> Result<Vec<String>> {
        let lost = self.lost()?;
        let (time, clock) = clock_now();
        let mut lines = Vec::new();
        for n in self.life.take_notices() {
            match n {
                Notice::Reaped {
                    proc, dead_for_ns, ..
                } if proc.reported => {
                    let parent_comm = self.life.parent_comm(proc.parent, proc.ppid);
                    lines.push(render::reaped(
                        json,
                        time,
                        &clock,
                        &proc,
                        &parent_comm,
                        dead_for_ns,
                        lost,
                    ));
                }
                Notice::Orphaned {
                    parent,
                    parent_comm,
                    children,
                    heir: Some(heir),
                } => {
                    for c in children {
                        let comm = self
                            .life
                            .table
                            .get(&c)
                            .map_or_else(|| "?".into(), |p| p.comm.to_string());
                        let new_comm = self.life.parent_comm(heir.key, heir.tgid);
                        let o = render::Orphan {
                            pid: c.tgid,
                            comm: &comm,
                            old_ppid: parent.tgid,
                            old_parent_comm: &parent_comm,
                            new_ppid: heir.tgid,
                            new_parent_comm: &new_comm,
                        };
                        lines.push(render::orphan(json, time, &clock, &o, lost));
                    }
                }
                _ => {}
            }
        }
        let fresh = self.life.new_zombies(min_age_ns);
        if !fresh.is_empty() {
            let per_parent = self
                .life
                .table
                .zombies_per_parent(procfs::boot_ns(), min_age_ns);
            let ctx = Self::context(&fresh);
            for z in fresh {
                let n = per_parent.get(&z.ppid).copied().unwrap_or(1);
                lines.push(render::appeared(json, time, &clock, &z, n, &ctx, lost));
            }
        }
        Ok(lines)
    }

    fn stats_lines(
        &mut self,
        json: bool,
        interval_s: f64,
        min_age_ns: u64,
        last: &mut HashMap<Key, ForkStats>,
    ) -> Result<Vec<String>> {
        let lost = self.lost()?;
        let (time, clock) = clock_now();
        let mut owned: Vec<(Key, String, ForkStats, ForkStats, usize)> = Vec::new();
        for (key, total) in self.life.table.all_fork_stats() {
            if total.processes + total.threads + total.child_exits == 0 {
                continue;
            }
            let delta = total.since(&last.get(key).copied().unwrap_or_default());
            let comm = self
                .life
                .table
                .get(key)
                .map_or_else(|| "?".into(), |p| p.comm.to_string());
            owned.push((
                *key,
                comm,
                *total,
                delta,
                self.life.table.children_of(key.tgid),
            ));
        }
        owned.sort_by_key(|(k, ..)| *k);
        *last = self
            .life
            .table
            .all_fork_stats()
            .map(|(k, v)| (*k, *v))
            .collect();
        let parents = owned
            .iter()
            .map(|(k, comm, total, delta, children)| render::ParentStats {
                pid: k.tgid,
                comm,
                total: *total,
                delta: *delta,
                children: *children,
            })
            .collect();
        let s = render::Stats {
            time,
            clock: &clock,
            interval_s,
            lost,
            tracked: self.life.table.len(),
            repairs: self.life.table.repairs(),
            zombies: self.life.table.zombies(procfs::boot_ns(), min_age_ns).len(),
            parents,
        };
        Ok(render::stats(json, &s))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<super::ZombiesArgs, clap::Error> {
        let mut v = vec!["proclens", "zombies"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).map(|c| match c.command {
            Command::Zombies(z) => z,
            other => panic!("parsed as {other:?}"),
        })
    }

    #[test]
    fn defaults_and_flags() {
        let z = parse(&[]).unwrap();
        assert!((z.min_age - 1.0).abs() < f64::EPSILON);
        assert!(!z.watch && !z.check && z.max == 0 && !z.output.json);
        let z = parse(&["--check", "--max", "3", "--min-age", "0.5", "--json"]).unwrap();
        assert!(z.check && z.max == 3 && z.output.json && (z.min_age - 0.5).abs() < f64::EPSILON);
        assert!(parse(&["--min-age", "0"]).is_ok());
    }

    #[test]
    fn bad_arguments_are_rejected_with_2() {
        for bad in [
            &["--min-age", "-1"][..],
            &["--min-age", "nan"],
            &["--min-age", "abc"],
            &["--max", "2"],
            &["--watch", "--check"],
            &["--check", "--max", "-1"],
            &["--watch", "--interval", "0"],
        ] {
            let err = parse(bad)
                .err()
                .unwrap_or_else(|| panic!("accepted {bad:?}"));
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }
}
