//! `proclens top`: per-process context switches every interval.

use std::{io::IsTerminal as _, process::ExitCode};

use anyhow::Result;
use clap::Args;

use super::ViewArgs;
use crate::{
    collect::{
        copies::Want,
        session::{RowKinds, Snapshot, idle_rows},
        tracer::TracerOptions,
    },
    model::switches::Row,
    render::top::{Frame, TopRow},
};

/// What each figure means (`--help`), by its JSON field name; the plain columns and the
/// live table show the same figures as rates and shares (the live table all but the
/// interrupt ones).
pub const FIGURES: &str = "\
Figures, by JSON field (per interval; `_total` fields: since proclens started):
  voluntary, involuntary
      Switches out, as the kernel counts them (nvcsw/nivcsw, /proc/PID/status):
      voluntary when the task blocked (one that blocks with a signal pending
      included), involuntary when it was preempted or yielded while runnable.
  same_process_in
      Switches in that kept the address space: the task before had the same mm
      (a thread of the same process, or a vfork/CLONE_VM child or parent).
  cross_process_in
      Switches in that changed the address space: the task before left another
      mm loaded (its own, or one it had borrowed), so the kernel loaded this
      task's page tables.
  idle_or_kernel_in
      Switches in from the idle task or a kernel thread that had kept this task's
      own mm loaded (lazy TLB: nothing to load); for a kernel thread, every switch
      in (it has no mm of its own).
  oncpu_ms, blocked_ms, runq_ms
      Time on a CPU, blocked (off CPU after a voluntary switch, until woken) and
      waiting for a CPU (runnable). A period still in progress at a report is
      counted up to it, a thread already asleep when proclens starts from then:
      each interval shows the time that elapsed in it, and the intervals add up
      to the total.
  system line: same_process, cross_process, idle_or_kernel
      Every switch on the machine, by the same rule; address_space_switch_pct is
      cross_process's share.
  irq_hard_ms, irq_soft_ms, irq_pct
      Hard IRQ and softirq time that ran while the process was on a CPU, and
      their share of oncpu_ms (the irq% column, capped at 100). Lines and JSON
      only: the live table does not trace interrupts.
  untracked_threads
      Traced threads the kernel's thread table had no room for (--max-threads),
      each counted once.";

#[derive(Args, Debug)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "one bool per command-line switch"
)]
pub struct TopArgs {
    #[command(flatten)]
    pub view: ViewArgs,
    /// Show threads apart instead of summing them into their process.
    #[arg(short = 't', long)]
    pub threads: bool,
    /// Also show processes with no switches in the interval.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Print lines even on a terminal (the live table is the default there; it does not
    /// trace interrupts, so it has no irq% column).
    #[arg(long)]
    pub plain: bool,
    /// Also count every syscall per process, as it returns (like syscount): the sysc/s
    /// column, and `syscalls`, `syscalls_per_s` and `syscalls_total` in JSON (absent
    /// without it); in the live table also the Copies view. Off by default because every syscall of every traced
    /// process then runs a program (~20-30 ns of BPF plus the kernel's syscall-tracing
    /// path: about +20% on a pipe ping-pong that makes a syscall per context switch,
    /// +50 ns per syscall; the copy paths of the Copies view add about as much again per
    /// copy-family call). With -p, --comm or --cgroup, other processes' syscalls still
    /// enter the program, which stops at the filter: 27 ns each on the machine last
    /// measured, against 40 ns for bpftrace's pid predicate (BENCHMARKS.md, filters).
    #[arg(long)]
    pub syscalls: bool,
}

pub fn run(args: &TopArgs) -> Result<ExitCode> {
    let live_table = !args.plain
        && !args.view.output.json
        && std::io::stdout().is_terminal()
        && std::io::stdin().is_terminal();
    if live_table {
        // The live table also has a Copies view: bytes by copy path, with --syscalls.
        let tracer = args.view.filter.start(TracerOptions {
            syscalls: args.syscalls,
            copies: if args.syscalls {
                Want::IfAvailable
            } else {
                Want::Off
            },
            irq: Want::Off,
            ..super::table_tracing()
        })?;
        let view = super::tui::View {
            selection: args.view.filter.selection(),
            threads: args.threads,
            has_copies: tracer.copies_on(),
        };
        super::tui::run(
            tracer,
            super::table_extras(&args.view.filter),
            &args.view.period,
            view,
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let tracer = args.view.filter.start(TracerOptions {
        syscalls: args.syscalls,
        ..super::table_tracing()
    })?;
    let kinds = if args.threads {
        RowKinds::Threads
    } else {
        RowKinds::Processes
    };
    super::print_periodic(
        tracer,
        kinds,
        super::table_extras(&args.view.filter),
        &args.view.period,
        &args.view.output,
        |snap, out| out.print(&frame(args, snap)),
    )
}

fn frame(args: &TopArgs, snap: Snapshot) -> Frame {
    let extras = &snap.extras;
    let holds_zombies = |r: &Row| !args.threads && extras.zombies_of(r.key.tgid).unwrap_or(0) > 0;
    let mut rows: Vec<(Row, String)> = snap
        .rows
        .into_iter()
        .filter(|(r, _)| {
            args.all || !args.view.filter.pids.is_empty() || !r.delta.is_zero() || holds_zombies(r)
        })
        .collect();
    if !args.threads {
        // Requested processes, and parents holding zombies (under --cgroup, the extras
        // hold only those inside), even when they did not switch.
        let parents: Vec<u32> = extras.zombie_parents().iter().map(|p| p.0).collect();
        rows.extend(idle_rows(
            args.view.filter.pids.iter().chain(&parents),
            &rows,
        ));
    }
    let selection = args.view.filter.selection();
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
        table: snap.extras.table,
        rows,
    }
}
