//! `proclens run` report: a short text summary (perf stat style) or one JSON object.

use std::fmt::Write as _;

use crate::{
    model::{
        run_blocked::BlockedInSection,
        run_report::{Latency, RunReport},
        run_sections::{CopiesSection, ZombieEntry, ZombiesSection},
    },
    render::copies::human_bytes,
};

fn lat(l: &Latency) -> String {
    // A bucket's bound is exclusive; a percentile capped at the longest wait is not.
    let f = |v: Option<u64>| {
        v.map_or("-".to_string(), |us| {
            if us >= l.max_us {
                format!("<={us}us")
            } else {
                format!("<{us}us")
            }
        })
    };
    format!(
        "p50 {}, p99 {}, max {}us",
        f(l.p50_us),
        f(l.p99_us),
        l.max_us
    )
}

fn shell_quote(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn plain(r: &RunReport) -> String {
    let s = &r.switches;
    let exit = match (r.exit.code, r.exit.signal) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown".into(),
    };
    let mut out = format!(
        "\n proclens run: {}\n\n\
         {:>14}  {exit}\n\
         {:>14}  {:.3} s\n\
         {:>14}  user {:.3} s, system {:.3} s (traced on-CPU time {:.3} s)\n\
         {:>14}  blocked {:.3} s, waiting for a CPU {:.3} s (summed over its threads)\n\
         {:>14}  {} processes, {} threads (forked: {} processes, {} threads)\n\
         {:>14}  {} voluntary, {} involuntary\n\
         {:>14}  same-process {}, cross-process {}, idle/kernel {}\n\
         {:>14}  {}\n",
        shell_quote(&r.command),
        "status",
        "wall time",
        r.wall_s,
        "CPU time",
        r.user_cpu_s,
        r.system_cpu_s,
        r.oncpu_s,
        "off CPU",
        r.blocked_s,
        r.runq_s,
        "traced",
        r.processes,
        r.threads,
        r.forked_processes,
        r.forked_threads,
        "switches out",
        s.voluntary,
        s.involuntary,
        "switches in",
        s.same_process,
        s.cross_process,
        s.idle_or_kernel,
        "run-queue lat.",
        lat(&r.runq_latency),
    );
    for (what, n) in [
        ("untracked thr.", r.untracked_threads),
        ("uncounted sys.", r.uncounted_syscalls),
        ("uncounted cp.", r.uncounted_copies),
    ] {
        if n > 0 {
            let _ = writeln!(
                out,
                "{what:>14}  {n} (a kernel map was full: figures are incomplete)"
            );
        }
    }
    if r.lost_events > 0 {
        let _ = writeln!(
            out,
            "{:>14}  {} (figures may be incomplete)",
            "lost events", r.lost_events
        );
    }
    if let Some(c) = &r.copies {
        copies_lines(&mut out, c);
    }
    if let Some(i) = &r.interrupted {
        let _ = writeln!(
            out,
            "{:>14}  hard IRQs {:.3} ms ({}), softirqs {:.3} ms ({}): {:.2}% of its on-CPU time",
            "interrupted",
            i.hard_s * 1e3,
            i.hard,
            i.soft_s * 1e3,
            i.soft,
            i.oncpu_pct
        );
    }
    if let Some(b) = &r.blocked_in {
        blocked_lines(&mut out, b);
    }
    zombies_lines(&mut out, &r.zombies);
    if let Some(f) = &r.forks {
        out.extend(super::forks::run_lines(f).into_iter().map(|l| l + "\n"));
    }
    let _ = write!(
        out,
        "\n {:>8} {:>9} {:>11} {:>8} {:>8} {:>8} {:>9} {:>10} {:>8} {:>9}  COMMAND\n",
        "PID",
        "voluntary",
        "involuntary",
        "same-in",
        "cross-in",
        "idle-in",
        "oncpu-ms",
        "blocked-ms",
        "runq-ms",
        "syscalls"
    );
    for p in &r.per_process {
        let s = &p.switches;
        let _ = writeln!(
            out,
            " {:>8} {:>9} {:>11} {:>8} {:>8} {:>8} {:>9.1} {:>10.1} {:>8.1} {:>9}  {}",
            p.pid,
            s.voluntary,
            s.involuntary,
            s.same_process,
            s.cross_process,
            s.idle_or_kernel,
            p.oncpu_s * 1e3,
            p.blocked_s * 1e3,
            p.runq_s * 1e3,
            p.syscalls.map_or("-".to_string(), |n| n.to_string()),
            p.comm
        );
    }
    out
}

fn copies_lines(out: &mut String, c: &CopiesSection) {
    let mut notes = String::new();
    if c.compat_syscalls > 0 {
        let _ = write!(notes, "; {} of them 32-bit", c.compat_syscalls);
    }
    if c.io_uring {
        notes.push_str("; uses io_uring: its submissions are not counted");
    }
    let _ = writeln!(
        out,
        "{:>14}  {} ({:.0}/s){notes}",
        "syscalls", c.syscalls, c.syscalls_per_s,
    );
    let _ = writeln!(
        out,
        "{:>14}  copied through user memory {}, copied in the kernel {}, zero-copy {} ({:.1}%), mmap {} in {} calls",
        "bytes moved",
        human_bytes(c.user_copy_bytes as f64),
        human_bytes(c.in_kernel_copy_bytes as f64),
        human_bytes(c.zero_copy_bytes as f64),
        c.zero_copy_pct,
        human_bytes(c.mmap_bytes as f64),
        c.mmap_calls,
    );
    for p in &c.paths {
        let mut failed = String::new();
        for (n, what) in [
            (p.errors, "failed"),
            (p.would_block, "would block"),
            (p.interrupted, "interrupted"),
        ] {
            if n > 0 {
                let _ = write!(failed, ", {n} {what}");
            }
        }
        let _ = writeln!(
            out,
            "{:>14}  {:<16} {:<14} {:>10} in {} calls{failed} ({})",
            "",
            p.syscall,
            format!("{}->{}", p.src, p.dst),
            human_bytes(p.bytes as f64),
            p.calls,
            p.class,
        );
    }
    if let Some(s) = &c.sendfile_would_save {
        let _ = writeln!(
            out,
            "{:>14}  {} of CPU copies and {} mode switches ({} of file data read, then written to sockets with read+write)",
            "sendfile saves",
            human_bytes(s.cpu_copy_bytes as f64),
            s.mode_switches,
            human_bytes(s.eligible_bytes as f64),
        );
    }
}

/// Syscalls blocked in that the text report lists (the JSON has them all).
const BLOCKED_ROWS: usize = 10;

fn blocked_lines(out: &mut String, b: &BlockedInSection) {
    let _ = writeln!(
        out,
        "{:>14}  {:.3} s in {} blocks, {}",
        "blocked in",
        b.blocked_s,
        b.switches,
        if b.by_syscall {
            "by the syscall each began in"
        } else {
            "not told apart by syscall on this kernel (5.15+)"
        }
    );
    for r in b.syscalls.iter().take(BLOCKED_ROWS) {
        let name = match r.abi {
            Some("i386") => format!("{} (i386)", r.syscall),
            _ => r.syscall.clone(),
        };
        let _ = writeln!(
            out,
            "{:>14}  {name:<18} {:>9.3} s {:>5.1}% {:>8} switches",
            "",
            r.blocked_s,
            100.0 * r.share,
            r.switches
        );
    }
    if b.syscalls.len() > BLOCKED_ROWS {
        let _ = writeln!(
            out,
            "{:>14}  and {} more (--json lists them all)",
            "",
            b.syscalls.len() - BLOCKED_ROWS
        );
    }
    for (what, n) in [
        ("uncounted blk.", b.uncounted_blocks),
        ("uncounted rdy.", b.uncounted_readiness),
    ] {
        if n > 0 {
            let _ = writeln!(
                out,
                "{what:>14}  {n} (a kernel map was full: figures are incomplete)"
            );
        }
    }
    if !b.readiness_counted {
        let _ = writeln!(
            out,
            "{:>14}  select, poll and epoll not counted",
            "readiness"
        );
    }
    for (i, r) in b.readiness.iter().enumerate() {
        let watched = if r.interest_per_call > 0.0 {
            format!(" (of {:.1} watched)", r.interest_per_call)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:>14}  {:<12} {} calls, {:.1} fds in/call, {:.2} ready/call{watched}, {:.0}% empty, {} failed, {:.3} ms blocked/call",
            if i == 0 { "readiness" } else { "" },
            r.syscall,
            r.calls,
            r.fds_in_per_call,
            r.ready_per_call,
            100.0 * r.empty_share,
            r.errors,
            r.blocked_ms_per_call
        );
    }
}

fn zombie_line(z: &ZombieEntry) -> String {
    let status = z.status.text();
    format!(
        "{:>14}  pid {} {} ({status}), parent {} {}, zombie for {:.2} s\n",
        "", z.pid, z.comm, z.ppid, z.parent_comm, z.zombie_s
    )
}

fn zombies_lines(out: &mut String, z: &ZombiesSection) {
    let _ = writeln!(
        out,
        "{:>14}  {} left unreaped, {} reaped {} s or more after dying",
        "zombies",
        z.left.len(),
        z.reaped_late.len(),
        z.min_age_s
    );
    for e in z.left.iter().chain(&z.reaped_late) {
        out.push_str(&zombie_line(e));
    }
}

pub fn json(r: &RunReport) -> String {
    serde_json::to_string(r).expect("plain struct serialises")
}

#[cfg(test)]
mod tests;
