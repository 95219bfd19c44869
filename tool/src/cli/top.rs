//! `proclens top`: per-process context switches every interval.

use std::{
    io::Write as _,
    process::ExitCode,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use clap::Args;
use proclens_common::event::ThreadExit;
use tokio::signal::unix::{SignalKind, signal};

use super::{Filter, Output, Period};
use crate::{
    collect::{
        events::{Event, EventStream},
        procfs::{self, CommCache},
        tracer::{Tracer, TracerOptions},
    },
    model::switches::{Key, Row, SwitchModel},
    render::top::{Frame, SystemSplit, json_lines, plain_lines},
};

#[derive(Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    pub filter: Filter,
    #[command(flatten)]
    pub period: Period,
    #[command(flatten)]
    pub output: Output,
    /// Show threads apart instead of summing them into their process.
    #[arg(short = 't', long)]
    pub threads: bool,
    /// Also show processes with no switches in the interval.
    #[arg(short = 'a', long)]
    pub all: bool,
}

pub fn run(args: TopArgs) -> Result<ExitCode> {
    procfs::check_pids(&args.filter.pids)?;
    let tracer = Tracer::start(&TracerOptions {
        include_self: args.filter.include_self,
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(top_loop(tracer, args))
}

pub(super) fn clock_now() -> (f64, String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // SAFETY: localtime_r with valid pointers.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let secs = now.as_secs() as libc::time_t;
    unsafe { libc::localtime_r(&secs, &mut tm) };
    (
        now.as_secs_f64(),
        format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec),
    )
}

async fn top_loop(mut tracer: Tracer, args: TopArgs) -> Result<ExitCode> {
    let mut stream = EventStream::new(tracer.take_events().context("ring buffer already taken")?)?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let period = Duration::from_secs_f64(args.period.interval);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut model = SwitchModel::new(args.threads);
    let mut comms: CommCache<Key> = CommCache::default();
    let mut events: Vec<Event> = Vec::new();
    let mut last_system = tracer.cpu_totals()?;
    let mut last_tick = Instant::now();
    let mut reports = 0u64;
    let mut stdout = std::io::stdout().lock();
    // Counts before the first interval are not part of any report.
    model.update(&tracer.threads()?, &[]);

    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let live = tracer.threads()?;
                stream.drain(&mut events);
                let exits = thread_exits(&mut events);
                let rows = model.update(&live, &exits);
                let now = Instant::now();
                let elapsed_s = now.duration_since(last_tick).as_secs_f64();
                last_tick = now;
                let system = tracer.cpu_totals()?;
                let health = tracer.health()?;
                let split = SystemSplit {
                    switches: system.switches - last_system.switches,
                    same_process: system.same_process - last_system.same_process,
                    cross_process: system.cross_process - last_system.cross_process,
                    idle_or_kernel: system.idle_or_kernel - last_system.idle_or_kernel,
                };
                last_system = system;
                let (unix_time, clock) = clock_now();
                let mut rows = rows;
                // A requested process that has not switched since proclens started is
                // still shown, with zeros.
                for &pid in &args.filter.pids {
                    if !args.threads && !rows.iter().any(|r| r.key.tgid == pid) && procfs::exists(pid) {
                        rows.push(Row::idle(Key { id: pid, tgid: pid, start_ns: 0 }));
                    }
                }
                let rows = rows
                    .into_iter()
                    .filter(|r| args.all || !args.filter.pids.is_empty() || !r.delta.is_zero())
                    .filter(|r| args.filter.pids.is_empty() || args.filter.pids.contains(&r.key.tgid))
                    .map(|r| {
                        let comm = comms.get(r.key, r.key.id, r.alive);
                        (r, comm)
                    })
                    .filter(|(_, c)| args.filter.comm.as_ref().is_none_or(|want| c.contains(want.as_str())))
                    .collect();
                let frame = Frame {
                    unix_time,
                    clock,
                    elapsed_s,
                    per_thread: args.threads,
                    system: split,
                    lost_events: health.ringbuf_drops,
                    untracked_threads: health.thread_map_full,
                    rows,
                };
                let lines = if args.output.json { json_lines(&frame) } else { plain_lines(&frame) };
                for l in lines {
                    writeln!(stdout, "{l}")?;
                }
                if !args.output.json {
                    writeln!(stdout)?;
                }
                stdout.flush()?;
                comms.retain(|k| model.contains(k));
                reports += 1;
                if args.period.count.is_some_and(|c| reports >= c) {
                    break;
                }
            }
            r = stream.recv(&mut events) => r?,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Takes the thread exits out of the pending events; `top` has no use for the others.
fn thread_exits(events: &mut Vec<Event>) -> Vec<ThreadExit> {
    #[allow(
        irrefutable_let_patterns,
        reason = "more event kinds come with other features"
    )]
    events
        .drain(..)
        .filter_map(|ev| {
            if let Event::ThreadExit(e) = ev {
                Some(e)
            } else {
                None
            }
        })
        .collect()
}
