//! `proclens top`: per-process context switches every interval.

use std::{io::IsTerminal as _, process::ExitCode};

use anyhow::Result;
use clap::Args;

use super::{Filter, Output, Period};
use crate::{
    collect::{
        copies::Want,
        extras::ExtrasOptions,
        lifecycle::LifecycleOptions,
        session::{self, RowKinds, Snapshot, idle_rows},
        tracer::TracerOptions,
    },
    model::switches::Row,
    render::top::{Frame, TopRow, json_lines, plain_lines},
};

/// What `top` (lines and live table) traces: switches, every syscall per process (the
/// syscalls/s column), the lifecycle (the zombies column) and interrupts (the irq%
/// column), the latter left out with a warning where the kernel cannot time them.
pub fn top_tracing() -> TracerOptions {
    TracerOptions {
        syscalls: true,
        irq: Want::IfAvailable,
        ..TracerOptions::default()
    }
}

/// `top`'s process table (the zombies column), its zombies limited to `--cgroup`.
pub fn top_extras(filter: &Filter) -> ExtrasOptions {
    ExtrasOptions {
        lifecycle: Some(LifecycleOptions {
            exits_filtered: filter.cgroup.is_some(),
            ..LifecycleOptions::default()
        }),
        cgroup: filter.cgroup.clone(),
    }
}

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
    /// Print lines even on a terminal (the live table is the default there).
    #[arg(long)]
    pub plain: bool,
}

pub fn run(args: TopArgs) -> Result<ExitCode> {
    let live_table = !args.plain
        && !args.output.json
        && std::io::stdout().is_terminal()
        && std::io::stdin().is_terminal();
    if live_table {
        // The live table also has a Copies view: bytes by copy path when tracefs allows.
        // The live table shows no interrupts: they are not traced.
        let tracer = args.filter.start(TracerOptions {
            copies: Want::IfAvailable,
            irq: Want::Off,
            ..top_tracing()
        })?;
        let (pid, comm) = (args.filter.pids.first().copied(), args.filter.comm.clone());
        let copies = tracer.copies_on();
        let extras = top_extras(&args.filter);
        super::tui::run(tracer, extras, args.period.interval, args.threads, |app| {
            app.pid_filter = pid;
            app.comm_filter = comm;
            app.has_copies = copies;
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let tracer = args.filter.start(top_tracing())?;
    let mut stdout = std::io::stdout().lock();
    let kinds = if args.threads {
        RowKinds::Threads
    } else {
        RowKinds::Processes
    };
    session::run_periodic(
        tracer,
        kinds,
        top_extras(&args.filter),
        args.period.interval,
        args.period.count,
        |snap| {
            let frame = frame(&args, snap);
            super::write_frame(
                &mut stdout,
                &frame,
                args.output.json,
                json_lines,
                plain_lines,
            )
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

fn frame(args: &TopArgs, snap: Snapshot) -> Frame {
    let extras = &snap.extras;
    let holds_zombies = |r: &Row| !args.threads && extras.zombies_of(r.key.tgid).unwrap_or(0) > 0;
    let mut rows: Vec<(Row, String)> = snap
        .rows
        .into_iter()
        .filter(|(r, _)| {
            args.all || !args.filter.pids.is_empty() || !r.delta.is_zero() || holds_zombies(r)
        })
        .collect();
    if !args.threads {
        // Requested processes, and parents holding zombies (under --cgroup, the extras
        // hold only those inside), even when they did not switch.
        let parents: Vec<u32> = extras.zombie_parents().iter().map(|p| p.0).collect();
        rows.extend(idle_rows(args.filter.pids.iter().chain(&parents), &rows));
    }
    let selection = args.filter.selection();
    let rows = rows
        .into_iter()
        .filter(|(r, c)| selection.matches(r.key.tgid, c))
        .map(|(row, comm)| {
            let mut t = TopRow::new(row, comm);
            if !args.threads {
                let pid = t.row.key.tgid;
                t.syscalls = extras.procs.as_ref().map(|_| {
                    extras
                        .proc_row(pid)
                        .map_or((0, 0), |p| (p.syscalls.delta, p.syscalls.total))
                });
                t.zombies = extras.zombies_of(pid);
                t.irq = snap.irq.as_ref().map(|i| {
                    i.interval
                        .victim(pid)
                        .map_or_else(Default::default, |v| v.delta)
                });
            }
            t
        })
        .collect();
    Frame {
        unix_time: snap.unix_time,
        clock: snap.clock,
        elapsed_s: snap.elapsed_s,
        per_thread: args.threads,
        system: snap.system,
        lost_events: snap.health.ringbuf_drops,
        untracked_threads: snap.health.thread_map_full,
        uncounted_syscalls: snap.health.syscall_map_full,
        rows,
    }
}
