//! `proclens waits`: per process, the syscalls it blocks in with their share of its
//! blocked time, and what its select, poll and epoll calls cost.

use std::{collections::HashMap, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::Args;

use super::ViewArgs;
use crate::{
    collect::{
        copies::Want,
        extras::ExtrasOptions,
        procfs,
        session::{RowKinds, Snapshot},
        tracer::TracerOptions,
    },
    model::{proctable::Key, selection::Selection, waits::ProcWaits},
    render::waits::{Dropped, Frame, Row},
};

/// What the figures mean.
const WAITS_HELP: &str = "\
Blocked time is a thread's time switched out voluntarily until it was woken (the
run-queue wait after the wakeup is not in it), as in `top`. Each block is charged to the
syscall the thread was in when it switched out, read once from its saved user registers
(the number in orig_ax, -ENOSYS still in ax: the call has not returned); a block outside
any syscall (a page fault from user mode, a stop on the way back to user mode) is
`(outside syscalls)`. Kernels before 5.15 have no bpf_task_pt_regs: there every block is
`(syscall unknown)`. A block still in progress is credited up to now, so a thread asleep
for a minute shows its time in every interval. Switches are the voluntary switches that
began the blocks (the kernel's nvcsw).

Readiness: select, pselect6, poll, ppoll, epoll_wait, epoll_pwait and epoll_pwait2, each
counted as it returns (64-bit callers; a call already under way when proclens started is
not counted). fds in per call: select's and poll's nfds (all of which the kernel scans),
epoll's maxevents. Watched per call (epoll): the instance's interest set, kept from
epoll_ctl ADD and DEL (an fd closed without DEL still counts, and an instance inherited
across fork counts as empty). Ready per call: the fds returned; empty: calls that
returned 0 (the timeout); blocked per call: the time blocked in that syscall over its
calls.

Cost: the switch program reads the registers at each voluntary switch out and adds to a
per-process table when the block ends; the readiness programs run on those seven calls
(and epoll_ctl, epoll_create) only.";

#[derive(Args, Debug)]
#[command(after_help = WAITS_HELP)]
#[allow(
    clippy::doc_markdown,
    reason = "the doc comments are the --help text, printed as written"
)]
pub struct WaitsArgs {
    #[command(flatten)]
    pub view: ViewArgs,
    /// Also show processes that did not block in the interval.
    #[arg(short = 'a', long)]
    pub all: bool,
}

pub fn run(args: &WaitsArgs) -> Result<ExitCode> {
    let tracer = args.view.filter.start(TracerOptions {
        waits: Want::Required,
        ..TracerOptions::default()
    })?;
    let selection = args.view.filter.selection();
    super::print_periodic(
        tracer,
        RowKinds::Processes,
        ExtrasOptions::default(),
        &args.view.period,
        &args.view.output,
        |snap, out| out.print(&frame(snap, &selection, args.all)?),
    )
}

/// The interval's frame: the selected processes, busiest blocked first.
fn frame(snap: Snapshot, selection: &Selection, all: bool) -> Result<Frame> {
    let w = snap.waits.context("the waits programs are not loaded")?;
    let names: HashMap<u32, &str> = snap
        .rows
        .iter()
        .map(|(r, c)| (r.key.tgid, c.as_str()))
        .collect();
    let mut rows: Vec<Row> = Vec::new();
    for p in w.procs {
        let alive = !w.gone.contains(&p.key);
        let comm = names
            .get(&p.key.tgid)
            .map(|c| (*c).to_string())
            .or_else(|| procfs::comm(p.key.tgid))
            .unwrap_or_else(|| "?".into());
        if !selection.matches(p.key.tgid, &comm) {
            continue;
        }
        let (d, _) = p.blocked();
        let active = d.blocked_ns > 0
            || d.switches > 0
            || p.syscalls.iter().any(|s| s.delta.ready.calls > 0);
        if active || all || selection.pids.contains(&p.key.tgid) {
            rows.push(Row {
                waits: p,
                comm,
                alive,
            });
        }
    }
    // A requested process that has not blocked since proclens started: shown, with zeros.
    for &pid in &selection.pids {
        if !rows.iter().any(|r| r.waits.key.tgid == pid)
            && let Some(comm) = procfs::comm(pid)
        {
            rows.push(Row {
                waits: ProcWaits {
                    key: Key {
                        tgid: pid,
                        start_ns: 0,
                    },
                    syscalls: Vec::new(),
                },
                comm,
                alive: true,
            });
        }
    }
    rows.sort_by(|a, b| {
        let (da, ta) = a.waits.blocked();
        let (db, tb) = b.waits.blocked();
        (db.blocked_ns, tb.blocked_ns, a.waits.key).cmp(&(
            da.blocked_ns,
            ta.blocked_ns,
            b.waits.key,
        ))
    });
    Ok(Frame {
        unix_time: snap.unix_time,
        clock: snap.clock,
        elapsed_s: snap.elapsed_s,
        by_syscall: w.by_syscall,
        readiness: w.readiness,
        dropped: Dropped {
            wait_map_full: snap.health.wait_map_full,
            ready_map_full: snap.health.ready_map_full,
            untracked_threads: snap.health.thread_map_full,
        },
        rows,
    })
}
