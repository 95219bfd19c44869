//! `proclens top`: per-process context switches every interval.

use std::{
    io::{IsTerminal as _, Write as _},
    process::ExitCode,
};

use anyhow::Result;
use clap::Args;

use super::{Filter, Output, Period};
use crate::{
    collect::{
        cgroup, procfs,
        session::{self, RowKinds, Snapshot},
        tracer::{Tracer, TracerOptions},
    },
    model::switches::{Key, Row},
    render::top::{Frame, json_lines, plain_lines},
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
    /// Print lines even on a terminal (the live table is the default there).
    #[arg(long)]
    pub plain: bool,
}

pub fn run(args: TopArgs) -> Result<ExitCode> {
    let tracer = start(&args.filter)?;
    if !args.plain && !args.output.json && std::io::stdout().is_terminal() {
        let (pid, comm) = (args.filter.pids.first().copied(), args.filter.comm.clone());
        super::tui::run(tracer, args.period.interval, args.threads, |app| {
            app.pid_filter = pid;
            app.comm_filter = comm;
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut stdout = std::io::stdout().lock();
    let kinds = if args.threads {
        RowKinds::Threads
    } else {
        RowKinds::Processes
    };
    session::run_periodic(
        tracer,
        kinds,
        args.period.interval,
        args.period.count,
        |snap| {
            let frame = frame(&args, snap);
            let lines = if args.output.json {
                json_lines(&frame)
            } else {
                plain_lines(&frame)
            };
            for l in lines {
                writeln!(stdout, "{l}")?;
            }
            if !args.output.json {
                writeln!(stdout)?;
            }
            stdout.flush()?;
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
    procfs::check_pids(&filter.pids)?;
    let cgroup = filter
        .cgroup
        .as_deref()
        .map(cgroup::check_exists)
        .transpose()?;
    let tracer = Tracer::start(&TracerOptions {
        include_self: filter.include_self,
        cgroup,
        ..opts
    })?;
    // Everything is loaded and attached: from here on proclens only reads held fds.
    tracer.drop_privileges(&[])?;
    Ok(tracer)
}

/// Whether a row passes `-p` and `--comm`.
pub fn selected(filter: &Filter, row: &Row, comm: &str) -> bool {
    (filter.pids.is_empty() || filter.pids.contains(&row.key.tgid))
        && filter
            .comm
            .as_ref()
            .is_none_or(|want| comm.contains(want.as_str()))
}

fn frame(args: &TopArgs, snap: Snapshot) -> Frame {
    let mut rows: Vec<(Row, String)> = snap
        .rows
        .into_iter()
        .filter(|(r, c)| selected(&args.filter, r, c))
        .filter(|(r, _)| args.all || !args.filter.pids.is_empty() || !r.delta.is_zero())
        .collect();
    // A requested process that has not switched since proclens started is still shown,
    // with zeros.
    for &pid in &args.filter.pids {
        if !args.threads
            && !rows.iter().any(|(r, _)| r.key.tgid == pid)
            && let Some(comm) = procfs::comm(pid)
        {
            rows.push((
                Row::idle(Key {
                    id: pid,
                    tgid: pid,
                    start_ns: 0,
                }),
                comm,
            ));
        }
    }
    Frame {
        unix_time: snap.unix_time,
        clock: snap.clock,
        elapsed_s: snap.elapsed_s,
        per_thread: args.threads,
        system: snap.system,
        lost_events: snap.health.ringbuf_drops,
        untracked_threads: snap.health.thread_map_full,
        rows,
    }
}
