//! `proclens run -- CMD`: trace one command and all its descendants from its first
//! instruction to its exit, then print one report. Exit code: the command's.

use std::{io::Write as _, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::Args;

use super::{Output, ThreadTable};
use crate::{
    collect::{
        cgroup::RunCgroup,
        command,
        copies::Want,
        extras::ZOMBIE_MIN_AGE_NS,
        procfs,
        run::{self, RunOutcome},
        tracer::{Tracer, TracerOptions},
    },
    model::{
        forks,
        irq::Taken,
        run_blocked,
        run_report::{self, RunExtras, RunFacts, RunReport},
        run_sections,
    },
    render,
};

#[derive(Args, Debug)]
#[allow(
    clippy::doc_markdown,
    reason = "the doc comments are the --help text, printed as written"
)]
pub struct RunArgs {
    #[command(flatten)]
    pub output: Output,
    #[command(flatten)]
    pub table: ThreadTable,
    /// Write the report to FILE instead of standard error (the command keeps stdout).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output_file: Option<PathBuf>,
    /// The command to run and its arguments, after `--`. Under sudo it runs as the
    /// invoking user (SUDO_UID/SUDO_GID). If it cannot be started proclens exits with 127.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

pub fn run(args: &RunArgs) -> Result<ExitCode> {
    let cgroup = RunCgroup::create()?;
    // Switches, lifecycle, syscalls, and copy paths, the interrupts its tasks lose and
    // the syscalls they block in (each left out, with a warning, where the kernel lacks
    // what it needs), all filtered in the kernel on the command's cgroup.
    let tracer = Tracer::start(&TracerOptions {
        cgroup: Some(cgroup.filter.clone()),
        syscalls: true,
        skip_spawning: true,
        copies: Want::IfAvailable,
        max_threads: args.table.max_threads,
        forks: true,
        irq: Want::IfAvailable,
        waits: Want::IfAvailable,
        ..TracerOptions::default()
    })?;
    let user = command::invoking_user()?;
    // Keep only what starting the command as the invoking user and removing its cgroup
    // take; the rest goes now, before any other thread exists.
    let mut keep = RunCgroup::REMOVAL_CAPS.to_vec();
    if user.is_some() {
        keep.extend([caps::Capability::CAP_SETUID, caps::Capability::CAP_SETGID]);
    }
    tracer.drop_privileges(&keep)?;
    let copies_on = tracer.copies_on();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = rt.block_on(run::trace(
        tracer,
        &cgroup,
        user,
        &args.command,
        RunCgroup::REMOVAL_CAPS,
    ))?;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            eprintln!("proclens: cannot run `{}`: {e}", args.command[0]);
            return Ok(ExitCode::from(127));
        }
    };
    let report = report(args.command.clone(), outcome, copies_on);
    let text = if args.output.json {
        render::run::json(&report) + "\n"
    } else {
        render::run::plain(&report)
    };
    match &args.output_file {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        None => std::io::stderr().write_all(text.as_bytes())?,
    }
    Ok(ExitCode::from(report.exit.shell_code()))
}

/// The report of a run, from what was collected.
fn report(command: Vec<String>, o: RunOutcome, copies_on: bool) -> RunReport {
    let mut snap = o.snapshot;
    let forks = snap.extras.after_fork.take().map(|a| {
        forks::section(
            &a.rows,
            &a.comms,
            a.execs,
            a.page_size,
            a.available.faults,
            a.available.timed,
        )
    });
    let h = snap.health;
    let facts = RunFacts {
        wall_s: o.wall_s,
        user_cpu_s: o.reaped.user_s,
        system_cpu_s: o.reaped.system_s,
        threads_seen: o.totals.threads() as u64,
        lost_events: h.ringbuf_drops,
        untracked_threads: h.thread_map_full,
        uncounted_syscalls: h.syscall_map_full,
        uncounted_copies: h.inflight_full + h.copy_map_full,
    };
    let procs = o.totals.procs();
    let names = &o.freed_names;
    // A parent freed before the report is named from its free.
    let left: Vec<_> = snap
        .extras
        .zombies
        .unwrap_or_default()
        .into_iter()
        .map(|mut z| {
            if z.parent_comm == "?"
                && let Some(c) = names.get(&z.ppid)
            {
                z.parent_comm = c.clone();
            }
            z
        })
        .collect();
    let zombies = run_sections::zombies(&left, &o.late_reaps, ZOMBIE_MIN_AGE_NS, |ppid| {
        names.get(&ppid).cloned()
    });
    let extras = RunExtras {
        // Only the command's tasks are charged (the cgroup filter): every victim is one
        // of its processes.
        interrupted: snap.irq.as_ref().map(|i| {
            i.interval
                .victims
                .iter()
                .fold(Taken::default(), |mut t, v| {
                    t.add(&v.total);
                    t
                })
        }),
        forked_processes: o.forked.processes,
        forked_threads: o.forked.threads,
        copies: copies_on.then(|| run_sections::copies(&procs, o.wall_s)),
        zombies,
        forks,
        // Every process's final figures, those that ended before the last snapshot too.
        blocked_in: snap.waits.as_ref().map(|w| {
            let uncounted = run_blocked::Uncounted {
                blocks: h.wait_map_full,
                readiness: h.ready_map_full,
            };
            run_blocked::section(o.totals.waits(), w.by_syscall, w.readiness, uncounted)
        }),
    };
    let boot_offset = procfs::boot_ns().saturating_sub(procfs::monotonic_ns());
    let joined = o.totals.join(boot_offset);
    run_report::build(command, o.reaped.exit, facts, &joined, extras)
}
