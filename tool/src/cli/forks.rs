//! `proclens forks`: what forks cost after the call returns (copy-on-write faults in the
//! parent and its children, time in fork/vfork/clone), and what fd tables share across
//! fork and exec.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;

use super::ViewArgs;
use crate::{
    collect::{
        extras::ExtrasOptions,
        forks::{AfterFork, FdSource, FdTables},
        procfs,
        session::RowKinds,
        tracer::{Health, TracerOptions},
    },
    model::{
        fdtables::ProcFds,
        forks::{Cost, CostRow},
        proctable::Key,
        selection::Selection,
    },
    render::forks::{Dropped, Frame, ViewRow},
};

/// What the figures mean.
const FORKS_HELP: &str = "\
After fork, parent and child share every page read-only; the first write to a page
faults and the kernel copies it (copy-on-write). So a fork costs its time in the call and,
later, a fault and a page copy per page written by either side.

  FORKS, FORK-ms   children made by fork/clone (and CLONE_VM clones) in the interval, and
                   the time the caller spent inside those calls; VFORKS apart (a vfork's
                   time includes the wait until its child exec'd or exited)
  COW-FAULTS       write faults on present pages, by the process or by the kernel writing
                   its memory (x86's page-fault error code PROT|WRITE); COW-MiB the same x
                   base page size: an upper bound of what was copied, since a write to a
                   page no other process maps any more reuses it (hugetlb pages apart:
                   below)
  AFTER-FORK       of which since the process's first fork seen (fork, or a clone without
                   CLONE_VM, vfork-style ones too): every later write fault, after
                   whichever fork, even once no child shares the page (not per fork)
  INHERITED        of which in an address space inherited through fork, before any exec
  CHILD-COW        its children's INHERITED faults: what its forks cost them
  FDS, SHARED      open fds, and those whose open file description (offset, flags) is also
                   in another process's fd table, as after fork (listed below the table)
  NOCLOEXEC        fds above 2 without close-on-exec: an exec would hand them on

Each exec is listed with the fds above 2 that crossed it (leak candidates). fd tables are
read with the BPF task-file iterator where the kernel loads it, else from /proc/PID/fd,
fdinfo and kcmp(2); the header says which.

Huge pages. Transparent: the first write to a huge page shared since fork splits that
process's huge mapping (thp_split_pmd in /proc/vmstat) and copies one base page; every
base page written is then a fault of its own, so faults and bytes hold. A write once the
other side has gone keeps the huge page: one fault, nothing copied. hugetlbfs
(MAP_HUGETLB): one fault copies the whole huge page (2 MiB on x86), and COW-MiB counts
it whole (JSON: cow_hugetlb_faults, and the *_bytes fields). The fault tracepoint gives
the address, not the mapping: in a process that maps hugetlb pages at all, each
copy-on-write fault looks its mapping up (bpf_find_vma, 5.17+; it needs the mmap lock at
once, else the fault counts as a base page, as it always does on PREEMPT_RT kernels). A
write to a hugetlb page no other process maps any more reuses it, and counts a whole
huge page all the same: hugetlb bytes are an upper bound, as base pages' are. Before 5.17 (5.10) a hugetlb fault counts as
one base page, 1/512 of what was copied.
Copy-on-write faults are counted on x86 only (the tracepoint is x86's).";

#[derive(Args, Debug)]
#[command(after_help = FORKS_HELP)]
pub struct ForksArgs {
    #[command(flatten)]
    pub view: ViewArgs,
    /// Also show processes with no fork call or copy-on-write fault in the interval.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not read the fd tables (no FDS, SHARED or NOCLOEXEC; execs are still listed).
    #[arg(long, conflicts_with = "fds_from")]
    pub no_fds: bool,
    /// Where the fd tables are read from: `auto` (the BPF task-file iterator where the
    /// kernel loads it, else /proc) or `proc` (/proc/PID/fd, fdinfo and kcmp(2) even
    /// where the iterator loads, to compare the two).
    #[arg(long, value_name = "SOURCE", value_enum)]
    pub fds_from: Option<FdsFrom>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdsFrom {
    Auto,
    Proc,
}

impl ForksArgs {
    fn fd_tables(&self) -> FdTables {
        match (self.no_fds, self.fds_from) {
            (true, _) => FdTables::Off,
            (false, Some(FdsFrom::Proc)) => FdTables::Proc,
            (false, _) => FdTables::Best,
        }
    }
}

pub fn run(args: &ForksArgs) -> Result<ExitCode> {
    // No program on every context switch: lifecycle (who forked whom) and the after-fork
    // programs only.
    let tracer = args.view.filter.start_keeping(
        TracerOptions {
            switches: false,
            forks: true,
            ..TracerOptions::default()
        },
        |t| {
            // Reading other users' fd tables through /proc takes what ptrace's read
            // check and the fd directories' modes ask; the iterator needs neither.
            let proc = match args.fd_tables() {
                FdTables::Off => false,
                FdTables::Proc => true,
                FdTables::Best => t.forks_available().is_some_and(|a| a.fds == FdSource::Proc),
            };
            if proc {
                vec![
                    caps::Capability::CAP_SYS_PTRACE,
                    caps::Capability::CAP_DAC_READ_SEARCH,
                ]
            } else {
                Vec::new()
            }
        },
    )?;
    let available = tracer
        .forks_available()
        .context("after-fork programs not loaded")?;
    if args.fd_tables() == FdTables::Best
        && let Some(why) = &available.fds_why_proc
    {
        eprintln!(
            "proclens: note: fd tables are read from /proc and kcmp(2), not the BPF task-file iterator: {why}"
        );
    }
    let selection = args.view.filter.selection();
    super::print_periodic(
        tracer,
        RowKinds::Processes,
        ExtrasOptions {
            fd_tables: args.fd_tables(),
            ..ExtrasOptions::default()
        },
        &args.view.period,
        &args.view.output,
        |snap, out| {
            let a = snap
                .extras
                .after_fork
                .context("after-fork figures missing")?;
            out.print(&frame(
                a,
                &selection,
                args.all,
                snap.unix_time,
                snap.clock,
                snap.elapsed_s,
                &snap.health,
            ))
        },
    )
}

/// The interval's frame: rows with activity, or gone in the interval (their last report),
/// all with `--all`; `-p`'s processes always (with zeros when they have no figures);
/// filtered by `-p` and `--comm`.
fn frame(
    mut a: AfterFork,
    selection: &Selection,
    all: bool,
    unix_time: f64,
    clock: String,
    elapsed_s: f64,
    h: &Health,
) -> Frame {
    let mut fds = a.fds.take();
    let mut take_fds = |pid: u32| -> Option<ProcFds> {
        let f = fds.as_mut()?;
        Some(f.remove(&pid).unwrap_or(ProcFds {
            pid,
            ..ProcFds::default()
        }))
    };
    let mut rows = Vec::new();
    for r in a.rows {
        let comm = a.comms.get(&r.key).cloned().unwrap_or_else(|| "?".into());
        let alive = !a.gone.contains(&r.key);
        // A process that has gone is shown once more, with its final totals.
        let shown = all
            || !r.delta.is_zero()
            || (!alive && !r.total.is_zero())
            || selection.pids.contains(&r.key.tgid);
        if !shown || !selection.matches(r.key.tgid, &comm) {
            continue;
        }
        let fds = alive.then(|| take_fds(r.key.tgid)).flatten();
        rows.push(ViewRow {
            row: r,
            comm,
            alive,
            fds,
        });
    }
    for &pid in &selection.pids {
        if rows.iter().any(|v| v.row.key.tgid == pid && v.alive) || !procfs::exists(pid) {
            continue;
        }
        let comm = procfs::comm(pid).unwrap_or_else(|| "?".into());
        if !selection.matches(pid, &comm) {
            continue;
        }
        rows.push(ViewRow {
            row: CostRow {
                key: Key {
                    tgid: pid,
                    start_ns: 0,
                },
                creator: procfs::stat(pid).map(|s| s.ppid),
                delta: Cost::default(),
                total: Cost::default(),
            },
            comm,
            alive: true,
            fds: take_fds(pid),
        });
    }
    let execs = a
        .execs
        .into_iter()
        .filter(|e| selection.matches(e.pid, &e.comm))
        .collect();
    Frame {
        unix_time,
        clock,
        elapsed_s,
        page_size: a.page_size,
        fds_source: a.fds_source.map(FdSource::as_str),
        cow_faults_counted: a.available.faults,
        timed_calls: a.available.timed.clone(),
        dropped: Dropped {
            lost_events: h.ringbuf_drops,
            fault_map_full: h.fault_map_full,
            fork_map_full: h.fork_map_full,
        },
        rows,
        execs,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::super::{Cli, Command};

    #[test]
    fn forks_arguments() {
        let c = Cli::try_parse_from([
            "proclens", "forks", "-p", "7", "-i", "0.5", "-c", "2", "--json", "-a", "--no-fds",
        ])
        .unwrap();
        let Command::Forks(f) = c.command else {
            panic!("not forks")
        };
        assert_eq!(f.view.filter.pids, vec![7]);
        assert_eq!(f.view.period.count, Some(2));
        assert!(f.view.output.json && f.all && f.no_fds);
        let p = Cli::try_parse_from(["proclens", "forks", "--fds-from", "proc"]).unwrap();
        let Command::Forks(p) = p.command else {
            panic!("not forks")
        };
        assert_eq!(p.fds_from, Some(super::FdsFrom::Proc));
        let d = Cli::try_parse_from(["proclens", "forks"]).unwrap();
        let Command::Forks(d) = d.command else {
            panic!("not forks")
        };
        assert!(!d.all && !d.no_fds && d.view.period.count.is_none());
        for bad in [
            &["proclens", "forks", "-i", "0"][..],
            &["proclens", "forks", "-p", "x"],
            &["proclens", "forks", "--fds"],
            &["proclens", "forks", "--fds-from", "nope"],
            &["proclens", "forks", "--no-fds", "--fds-from", "proc"],
        ] {
            assert_eq!(
                Cli::try_parse_from(bad).unwrap_err().exit_code(),
                2,
                "{bad:?}"
            );
        }
    }
}
