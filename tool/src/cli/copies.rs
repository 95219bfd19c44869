//! `proclens copies`: per process, which path its bytes take (read/write through user
//! space, or sendfile/splice/tee/copy_file_range inside the kernel), what that costs in
//! mode switches, and what zero-copy would save.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::{Filter, Output, Period};
use crate::{
    collect::{
        copies::Want,
        extras::{Extras, ExtrasOptions},
        procfs,
        session::{self, RowKinds},
        tracer::{Health, TracerOptions},
    },
    model::{copy_report::ProcRow, selection::Selection},
    render::copies::{Dropped, Frame, json_lines, plain_lines},
};

/// How a copy is classified and what the derived numbers mean.
const COPIES_MODEL_HELP: &str = "\
Paths: each copy-family syscall is counted per process and per kind of source and
destination (file, socket, pipe, other, user memory; `unknown` for an fd that is not
open). Bytes are the syscall's return value (what actually moved); failed calls are
counted as errors and move no bytes; a file-backed mmap counts its mapped length.

  user_copy   read, write, pread64, pwrite64, readv, writev, preadv(2), pwritev(2),
              recvfrom, sendto, recvmsg, sendmsg, and vmsplice out of a pipe: the CPU
              copies every byte between a kernel buffer and the caller's buffer.
  in_kernel   sendfile, splice, tee, copy_file_range: the bytes never cross into user
              space. vmsplice into a pipe references the user pages (no copy).
  zero-copy%  zero-copy bytes / (user-copy bytes + zero-copy bytes).

sendfile model (shown for processes that read regular files and write to sockets with the
read/write family): eligible bytes E = min(bytes read from files, bytes written to
sockets). read()+write() copies each byte twice with the CPU (kernel->user, user->kernel)
and needs two syscalls per chunk (4 user/kernel mode switches); sendfile() needs one
syscall (2 mode switches) and no copy through user space. Saved: 2*E bytes of CPU copies,
and the file reads that carried E (file read calls * E / file read bytes) = 2 mode
switches each.

Mode switches: every syscall is one user->kernel transition; syscalls/s counts them all.
io_uring submissions bypass these syscalls: processes seen calling io_uring_setup/enter/
register are flagged and their bytes are not counted. 32-bit (compat) syscalls of a
64-bit kernel are not in the copy paths.";

#[derive(Args, Debug)]
#[command(after_help = COPIES_MODEL_HELP)]
pub struct CopiesArgs {
    #[command(flatten)]
    pub filter: Filter,
    #[command(flatten)]
    pub period: Period,
    #[command(flatten)]
    pub output: Output,
    /// Also show each process's busiest syscalls of the interval (like syscount), this
    /// many (default 10 when given without a value). In JSON: `top_syscalls`, a list of
    /// {name, nr, count, per_s, count_total}, busiest in the interval first, then by total.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "10", value_parser = clap::value_parser!(u16).range(1..))]
    pub syscalls: Option<u16>,
    /// Also show processes that made no syscall in the interval.
    #[arg(short = 'a', long)]
    pub all: bool,
}

pub fn run(args: CopiesArgs) -> Result<ExitCode> {
    // Copy paths and syscalls only: no program on every context switch.
    let tracer = args.filter.start(TracerOptions {
        switches: false,
        syscalls: true,
        copies: Want::Required,
        ..TracerOptions::default()
    })?;
    let selection = args.filter.selection();
    let mut stdout = std::io::stdout().lock();
    session::run_periodic(
        tracer,
        RowKinds::Processes,
        ExtrasOptions::default(),
        args.period.interval,
        args.period.count,
        |snap| {
            let frame = Frame {
                unix_time: snap.unix_time,
                clock: snap.clock,
                elapsed_s: snap.elapsed_s,
                top_syscalls: args.syscalls.map(usize::from),
                dropped: dropped(&snap.health),
                rows: select_rows(snap.extras, &selection, args.all),
            };
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
            rows.push(ProcRow {
                tgid: pid,
                ..ProcRow::default()
            });
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
