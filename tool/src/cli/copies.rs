//! `proclens copies`: per process, which path its bytes take (read/write through user
//! space, or `sendfile/splice/tee/copy_file_range` inside the kernel), what that costs in
//! mode switches, and what zero-copy would save.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::ViewArgs;
use crate::{
    collect::{
        copies::Want,
        extras::{Extras, ExtrasOptions},
        procfs,
        session::RowKinds,
        tracer::{Health, TracerOptions},
    },
    model::{copy_report::ProcRow, selection::Selection},
    render::copies::{Dropped, Frame},
};

/// How a copy is classified and what the derived numbers mean.
const COPIES_MODEL_HELP: &str = "\
Paths: each copy-family syscall is counted per process and per kind of source and
destination (file, socket, pipe, other, user memory, another process's memory;
`unknown` for an fd that is not open). Bytes are the syscall's return value (what
actually moved; recvmmsg/sendmmsg: the messages' msg_len); a file-backed mmap counts its
mapped length. Failed calls move no bytes and are split three ways: would-block
(EAGAIN, a non-blocking fd with nothing to do), interrupted (EINTR, or a call the kernel
restarts after a signal, which then counts again) and errors (everything else).

  user_copy       the CPU copies every byte between a kernel buffer and user memory:
                  read/write, pread64/pwrite64, readv/writev, preadv(2)/pwritev(2),
                  recvfrom/sendto, recvmsg/sendmsg, recvmmsg/sendmmsg, vmsplice out of a
                  pipe; or between two processes: process_vm_readv/writev.
  in_kernel_copy  the bytes stay in the kernel but the CPU copies them there:
                  copy_file_range, splice out of a socket or device or into a file,
                  sendfile to a file. (A filesystem that clones, such as btrfs or XFS with
                  reflink, may share extents for copy_file_range instead; a syscall's
                  result cannot tell, so it is counted as a copy.)
  zero_copy       no byte is copied, pages are referenced: sendfile from a file to a
                  socket or pipe, splice from a file into a pipe or from a pipe into a
                  socket or pipe, tee, vmsplice into a pipe. Into a socket this assumes a
                  device with scatter-gather DMA (loopback and practically every NIC) and
                  no software kTLS on it; without them the kernel copies once.
  zero-copy%      zero_copy / (user_copy + in_kernel_copy + zero_copy) bytes.

sendfile would save: the kernel follows each thread's file data. Its reads from regular
files into user memory (read, pread64, readv, preadv, preadv2) are queued, the last four
at most; its socket writes from user memory (write, writev, send*, pwrite*) are credited
to them, oldest first. A read whose bytes have all been written on is eligible (E); one
still short when four later reads came is dropped: a server that reads pages and
answers with fewer bytes (a database) is not eligible. read()+write()
copies each byte twice through user memory and needs the reads; sendfile() copies none
through user memory and replaces the reads: saved 2*E bytes of CPU copies and the paired
file reads, 2 mode switches each. Assumed: scatter-gather DMA (else sendfile still copies
once, inside the kernel), and that the process sends what it read: a process that
encrypts in user space (TLS without kTLS) writes ciphertext, pairs all the same, and can
use sendfile only with kernel TLS.

Mode switches: every syscall is one user->kernel transition; syscalls/s counts them all,
each as it returns (like syscount: a blocked call counts when it returns), exit and
exit_group at the thread's exit (not when a fatal signal ends it), rt_sigreturn by the
-1 it leaves for its number.
32-bit programs on a 64-bit kernel make compat syscalls: they are named from the i386
table (JSON `abi`), counted in `compat_syscalls_total`, and their copy paths are
accounted like the 64-bit ones (except socketcall and the old mmap, whose arguments are
in memory). io_uring submissions bypass these syscalls: processes seen calling
io_uring_setup/enter/register, or holding an io_uring fd when proclens starts, are
flagged and their bytes are not counted.

Cost: every syscall of every traced process runs one small program (sys_exit): on
one-byte pipe round trips, about a fifth of what an equivalent bpftrace script adds per
syscall. A filtered-out process (-p, --comm, --cgroup) still enters it, and it stops at
the filter (a compare or a lookup): 28 ns per syscall of another process on the machine
last measured, against 41 ns for bpftrace's pid predicate (BENCHMARKS.md: syscall-heavy,
filters).";

#[derive(Args, Debug)]
#[command(after_help = COPIES_MODEL_HELP)]
#[allow(
    clippy::doc_markdown,
    reason = "the doc comments are the --help text, printed as written"
)]
pub struct CopiesArgs {
    #[command(flatten)]
    pub view: ViewArgs,
    /// Also show each process's busiest syscalls of the interval (like syscount), this
    /// many (default 10 when given without a value). In JSON: `top_syscalls`, a list of
    /// {name, nr, count, per_s, count_total}, busiest in the interval first, then by total.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "10", value_parser = clap::value_parser!(u16).range(1..))]
    pub syscalls: Option<u16>,
    /// Also show processes that made no syscall in the interval.
    #[arg(short = 'a', long)]
    pub all: bool,
}

pub fn run(args: &CopiesArgs) -> Result<ExitCode> {
    // Copy paths and syscalls only: no program on every context switch.
    let tracer = args.view.filter.start(TracerOptions {
        switches: false,
        syscalls: true,
        copies: Want::Required,
        ..TracerOptions::default()
    })?;
    let selection = args.view.filter.selection();
    super::print_periodic(
        tracer,
        RowKinds::Processes,
        ExtrasOptions::default(),
        &args.view.period,
        &args.view.output,
        |snap, out| {
            out.print(&Frame {
                unix_time: snap.unix_time,
                clock: snap.clock,
                elapsed_s: snap.elapsed_s,
                top_syscalls: args.syscalls.map(usize::from),
                dropped: dropped(&snap.health),
                rows: select_rows(snap.extras, &selection, args.all),
            })
        },
    )
}

/// Every in-kernel drop counter, as this view shows them.
fn dropped(h: &Health) -> Dropped {
    Dropped {
        lost_events: h.ringbuf_drops,
        untracked_threads: h.thread_map_full,
        inflight_full: h.inflight_full,
        copy_map_full: h.copy_map_full,
        syscall_map_full: h.syscall_map_full,
        comm_map_full: h.comm_map_full,
    }
}

/// Applies `-p`, `--comm` and `--all` to the interval's rows, with their names and
/// whether they live. A requested process that has made no syscall since proclens started
/// is still shown, with zeros. A process is reported gone exactly in the interval its
/// entries are pruned.
fn select_rows(x: Extras, selection: &Selection, all: bool) -> Vec<(ProcRow, String, bool)> {
    let mut rows = x.procs.unwrap_or_default();
    for &pid in &selection.pids {
        if !rows
            .iter()
            .any(|r| r.tgid == pid && !x.gone.contains(&r.key()))
            && procfs::exists(pid)
        {
            let mut idle = ProcRow {
                tgid: pid,
                ..ProcRow::default()
            };
            idle.syscalls.io_uring = x.io_uring_at_start.contains(&pid);
            rows.push(idle);
        }
    }
    rows.into_iter()
        .filter(|r| all || !selection.pids.is_empty() || !r.is_idle())
        .map(|r| {
            let alive = !x.gone.contains(&r.key());
            let comm = x
                .proc_comms
                .get(&r.key())
                .cloned()
                .or_else(|| procfs::comm(r.tgid))
                .unwrap_or_else(|| "?".into());
            (r, comm, alive)
        })
        .filter(|(r, c, _)| selection.matches(r.tgid, c))
        .collect()
}
