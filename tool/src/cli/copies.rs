//! `proclens copies`: per process, which path its bytes take (read/write through user
//! space, or sendfile/splice/tee/copy_file_range inside the kernel), what that costs in
//! mode switches, and what zero-copy would save.

use std::{process::ExitCode, time::Duration};

use anyhow::{Context as _, Result};
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};

use super::{Filter, Output, Period, top};
use crate::collect::session::clock_now;
use crate::{
    collect::{
        copies,
        events::{Event, EventStream},
        procfs::{self, CommCache},
        tracer::{Health, Tracer, TracerOptions},
    },
    model::{
        copy_report::{CopiesModel, ProcRow},
        proctable::Key,
    },
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
    let tracer = top::start_with(
        &args.filter,
        TracerOptions {
            syscalls: true,
            copies: true,
            ..TracerOptions::default()
        },
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(copies_loop(tracer, args))
}

async fn copies_loop(mut tracer: Tracer, args: CopiesArgs) -> Result<ExitCode> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let period = Duration::from_secs_f64(args.period.interval);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // The switch and lifecycle programs share the event rings; this view uses none of
    // their events, but drains them so that `lost_events` means what it means in every
    // view (events the kernel could not queue), not "nobody read them".
    let mut stream = EventStream::new(tracer.take_events().context("ring buffer already taken")?)?;
    let mut events: Vec<Event> = Vec::new();
    let tick_ns = procfs::tick_ns();
    let mut model = CopiesModel::new();
    let mut comms: CommCache<Key> = CommCache::default();
    let mut last_tick = std::time::Instant::now();
    let mut reports = 0u64;
    let mut stdout = std::io::stdout().lock();
    {
        // Counts before the first interval are not part of any report.
        let maps = tracer.copy_maps().context("copy maps not loaded")?;
        model.update(&maps.copies()?, &maps.syscalls()?);
    }

    loop {
        tokio::select! {
            _ = ticker.tick() => {
                // The report's time is taken before the maps are read: everything a
                // process did before `time` is in the report.
                let (unix_time, clock) = clock_now();
                let now = std::time::Instant::now();
                let elapsed_s = now.duration_since(last_tick).as_secs_f64();
                last_tick = now;
                let maps = tracer.copy_maps().context("copy maps not loaded")?;
                let snap = maps.snapshot()?;
                let rows = model.update(&snap.copies, &snap.syscalls);
                let gone = copies::gone_processes(&rows, tick_ns);
                let health = tracer.health()?;
                let maps = tracer.copy_maps().context("copy maps not loaded")?;
                let rows = select_rows(rows, &gone, &args, &mut comms, |k| maps.comm(k));
                let frame = Frame {
                    unix_time,
                    clock,
                    elapsed_s,
                    top_syscalls: args.syscalls.map(usize::from),
                    dropped: dropped(&health),
                    rows,
                };
                let lines = if args.output.json { json_lines(&frame) } else { plain_lines(&frame) };
                super::write_report(&mut stdout, &lines, args.output.json)?;
                // Gone processes have had their last report: free their map entries.
                tracer.copy_maps().context("copy maps not loaded")?.prune(&gone)?;
                comms.retain(|k| !gone.contains(k));
                reports += 1;
                if args.period.count.is_some_and(|c| reports >= c) {
                    break;
                }
            }
            r = stream.recv(&mut events) => {
                r?;
                events.clear();
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => break,
        }
    }
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

/// Applies `-p`, `--comm` and `--all`, and names the rows. A requested process that has
/// made no syscall since proclens started is still shown, with zeros. `gone` decides
/// `alive`, so a process is reported gone exactly in the interval its entries are pruned.
fn select_rows(
    mut rows: Vec<ProcRow>,
    gone: &[Key],
    args: &CopiesArgs,
    comms: &mut CommCache<Key>,
    kernel_comm: impl Fn(Key) -> Option<String>,
) -> Vec<(ProcRow, String, bool)> {
    for &pid in &args.filter.pids {
        if !rows
            .iter()
            .any(|r| r.tgid == pid && !gone.contains(&r.key()))
            && procfs::exists(pid)
        {
            rows.push(ProcRow {
                tgid: pid,
                ..ProcRow::default()
            });
        }
    }
    rows.into_iter()
        .filter(|r| args.filter.pids.is_empty() || args.filter.pids.contains(&r.tgid))
        .filter(|r| args.all || !args.filter.pids.is_empty() || !r.is_idle())
        .map(|r| {
            let alive = !gone.contains(&r.key());
            // /proc while the process lives; for one that exited before proclens saw it
            // alive, the name the kernel recorded.
            let mut comm = comms.get(r.key(), r.tgid, alive, None);
            if comm == "?"
                && let Some(k) = kernel_comm(r.key())
            {
                comm = k;
            }
            (r, comm, alive)
        })
        .filter(|(_, c, _)| {
            args.filter
                .comm
                .as_ref()
                .is_none_or(|want| c.contains(want.as_str()))
        })
        .collect()
}
