//! `proclens top`: per-process context switches every interval.

use std::{io::IsTerminal as _, process::ExitCode};

use anyhow::Result;
use clap::Args;

use super::{Filter, Output, Period};
use crate::{
    collect::{
        cgroup,
        extras::ExtrasOptions,
        procfs,
        session::{self, RowKinds, Snapshot},
        tracer::{Tracer, TracerOptions},
    },
    model::switches::{Key, Row},
    render::top::{Frame, TopRow, json_lines, plain_lines},
};

/// What `top` (lines and live table) traces: switches, every syscall per process (the
/// syscalls/s column) and the lifecycle (the zombies column).
pub const TOP_TRACING: TracerOptions = TracerOptions {
    include_self: false,
    cgroup: None,
    syscalls: true,
    copies: false,
    no_switches: false,
};

/// `top`'s process table (the zombies column), its zombies limited to `--cgroup`.
pub fn top_extras(filter: &Filter) -> ExtrasOptions {
    ExtrasOptions {
        lifecycle: true,
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
    if !args.plain
        && !args.output.json
        && std::io::stdout().is_terminal()
        && std::io::stdin().is_terminal()
    {
        // The live table also has a Copies view: bytes by copy path when tracefs allows.
        let (tracer, copies) = start_checked(&args.filter, TOP_TRACING, |o| {
            Tracer::start_copies_if_possible(o)
        })?;
        let (pid, comm) = (args.filter.pids.first().copied(), args.filter.comm.clone());
        let extras = top_extras(&args.filter);
        super::tui::run(tracer, extras, args.period.interval, args.threads, |app| {
            app.pid_filter = pid;
            app.comm_filter = comm;
            app.has_copies = copies;
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let tracer = start_with(&args.filter, TOP_TRACING)?;
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
            let lines = if args.output.json {
                json_lines(&frame)
            } else {
                plain_lines(&frame)
            };
            super::write_report(&mut stdout, &lines, args.output.json)?;
            Ok(())
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Checks the filter's pids and cgroup, then loads and attaches the programs.
pub fn start(filter: &Filter) -> Result<Tracer> {
    start_with(filter, TracerOptions::default())
}

/// [`start`] with more features (`opts`'s filter fields are taken from `filter`), then
/// drops every privilege loading needed.
pub fn start_with(filter: &Filter, opts: TracerOptions) -> Result<Tracer> {
    Ok(start_checked(filter, opts, |o| Ok((Tracer::start(o)?, ())))?.0)
}

/// Checks `filter`, starts a tracer with `start` and drops privileges.
fn start_checked<T>(
    filter: &Filter,
    opts: TracerOptions,
    start: impl FnOnce(&TracerOptions) -> Result<(Tracer, T)>,
) -> Result<(Tracer, T)> {
    procfs::check_pids(&filter.pids)?;
    let cgroup = filter
        .cgroup
        .as_deref()
        .map(cgroup::check_exists)
        .transpose()?;
    let (tracer, extra) = start(&TracerOptions {
        include_self: filter.include_self,
        cgroup,
        ..opts
    })?;
    // Everything is loaded and attached: from here on proclens only reads held fds.
    tracer.drop_privileges(&[])?;
    Ok((tracer, extra))
}

/// Whether a row passes `-p` and `--comm`.
pub fn selected(filter: &Filter, row: &Row, comm: &str) -> bool {
    (filter.pids.is_empty() || filter.pids.contains(&row.key.tgid))
        && filter
            .comm
            .as_ref()
            .is_none_or(|want| comm.contains(want.as_str()))
}

/// Rows (with zeros) for the processes in `pids` that are not among `rows` yet: a
/// requested process that has not switched since proclens started is still shown.
pub fn idle_rows<'a>(
    pids: impl IntoIterator<Item = &'a u32>,
    rows: &[(Row, String)],
) -> Vec<(Row, String)> {
    let mut out: Vec<(Row, String)> = Vec::new();
    for &pid in pids {
        if rows.iter().chain(&out).any(|(r, _)| r.key.tgid == pid) {
            continue;
        }
        if let Some(comm) = procfs::comm(pid) {
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
    let rows = rows
        .into_iter()
        .filter(|(r, c)| selected(&args.filter, r, c))
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
