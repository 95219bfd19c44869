//! File descriptions across fork and exec.
//!
//! - `exec_fds` (BTF tracepoint `sched_process_exec`, beside the lifecycle's own program):
//!   the kernel has just closed the close-on-exec fds, so what the fd table holds now
//!   crossed the exec. Counts them from the `open_fds` bitmap, describes fds 3 to 34 with
//!   their kind, and sends one [`ExecFds`] event per exec.
//! - `fd_table` (a task-file iterator, `iter/task_file`, run when userspace reads it):
//!   one [`FdRecord`] per open fd of every process, naming its `struct file` and fd table
//!   by address so userspace can tell which descriptions and tables are shared.
//!
//! Offsets come from the running kernel's BTF (load-time globals); every read beyond the
//! tracepoint's or iterator's own typed pointers is a checked probe read.

use aya_ebpf::{
    bindings::seq_file,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str_bytes,
        generated::{bpf_probe_read_kernel, bpf_seq_write},
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use proclens_common::{
    copies::fd_kind,
    counters,
    event::{EventHeader, kind},
    forks::{ExecFds, FdRecord, InheritedFd, LISTED_FDS, SCANNED_FDS, exec_fds_flags},
    lifecycle::TaskRef,
};

use crate::{
    config, filter,
    maps::{count, events, read_failed, submit_flags},
    task::{field, probe, process_start, process_start_field},
};

/// Bitmap words of the fd table scanned at exec.
const WORDS: usize = SCANNED_FDS as usize / 64;
// The described fds are all in the bitmap's first word.
const _: () = assert!(LISTED_FDS + 3 <= 64);

#[inline(always)]
fn read<T>(base: u64, offset: u32) -> Option<T> {
    probe(base, offset).ok()
}

/// [`fd_kind`] of an open `struct file`.
#[inline(always)]
fn kind_of_file(file: u64) -> u8 {
    match read::<u64>(file, config::fds_file_inode_off()) {
        Some(inode) if inode != 0 => read::<u16>(inode, config::fds_inode_mode_off())
            .map_or(fd_kind::UNKNOWN, fd_kind::from_mode),
        _ => fd_kind::UNKNOWN,
    }
}

/// The fd table of `files` (a `files_struct`): (`max_fds`, fd array, `open_fds` bitmap,
/// `close_on_exec` bitmap).
#[inline(always)]
fn table(files: u64) -> Option<(u32, u64, u64, u64)> {
    if files == 0 {
        return None;
    }
    let fdt: u64 = read(files, config::fds_files_fdt_off())?;
    if fdt == 0 {
        return None;
    }
    Some((
        read(fdt, config::fds_fdt_max_fds_off())?,
        read(fdt, config::fds_fdt_fd_off())?,
        read(fdt, config::fds_fdt_open_fds_off())?,
        read(fdt, config::fds_fdt_close_on_exec_off())?,
    ))
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn exec_fds(ctx: BtfTracePointContext) -> u32 {
    try_exec_fds(&ctx);
    0
}

fn try_exec_fds(ctx: &BtfTracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !filter::traced_tgid(tgid) || !filter::current_in_cgroup() {
        return;
    }
    let task: u64 = ctx.arg(0);
    let bprm: u64 = ctx.arg(2);
    let ring = events();
    let Some(mut slot) = ring.reserve::<ExecFds>(0) else {
        count(ctx, counters::RINGBUF_DROPS);
        return;
    };
    let ev = slot.as_mut_ptr();
    // SAFETY: `ev` points at a reserved record of the right size; every field is written
    // before submit, the large ones in place (the record never sits on the BPF stack).
    unsafe {
        (*ev).header = EventHeader {
            kind: kind::EXEC_FDS,
            tid: pid_tgid as u32,
            ts: bpf_ktime_get_boot_ns(),
        };
        (*ev).task = TaskRef {
            pid: pid_tgid as u32,
            tgid,
            start_ns: process_start(bpf_get_current_task()),
        };
        (*ev).comm = bpf_get_current_comm().unwrap_or_default();
        let name = &mut (*ev).filename;
        name[0] = 0;
        let filename: u64 = field(bprm, config::fds_binprm_filename_off());
        let _ = bpf_probe_read_kernel_str_bytes(filename as *const u8, name);
        let files: u64 = field(task, config::fds_task_files_off());
        fill(&mut *ev, files);
        if (*ev).flags & exec_fds_flags::UNREADABLE != 0 {
            read_failed(ctx, "exec_fds");
        }
    }
    slot.submit(submit_flags(ring));
}

/// Counts the fds open in `files` and describes fds 3 to 3 + `LISTED_FDS` - 1 into `ev`.
/// Without a data-dependent loop, which older verifiers (5.10, 6.1) explore path by path
/// for minutes: the bitmap's first words are read with one helper call into a zeroed
/// buffer and counted word by word (a loop of constant length, unrolled), and each
/// description slot belongs to one fd number.
#[inline(always)]
fn fill(ev: &mut ExecFds, files: u64) {
    ev.open = 0;
    ev.inherited = 0;
    ev.listed = 0;
    ev.flags = 0;
    let Some((max_fds, fd_array, open_fds, _)) = table(files) else {
        ev.flags = exec_fds_flags::UNREADABLE;
        return;
    };
    if max_fds > SCANNED_FDS {
        ev.flags |= exec_fds_flags::TRUNCATED;
    }
    let mut bitmap = [0u64; WORDS];
    // The bitmap holds max_fds bits (a multiple of the word size).
    let bytes = (max_fds / 8).min(SCANNED_FDS / 8);
    // SAFETY: the helper writes at most `bytes` <= size_of_val(&bitmap) bytes.
    let r = unsafe {
        bpf_probe_read_kernel(
            bitmap.as_mut_ptr().cast(),
            bytes,
            open_fds as *const core::ffi::c_void,
        )
    };
    if r != 0 {
        ev.flags |= exec_fds_flags::UNREADABLE;
        return;
    }
    let open: u32 = bitmap.iter().map(|w| w.count_ones()).sum();
    let first = bitmap[0];
    ev.open = open;
    ev.inherited = open - (first & 0b111).count_ones();
    let mut listed = 0u32;
    for (i, slot) in ev.fds.iter_mut().enumerate() {
        let fd = 3 + i as u32;
        let file = if fd < max_fds && (first >> fd) & 1 != 0 {
            read::<u64>(fd_array, 8 * fd).unwrap_or(0)
        } else {
            0
        };
        *slot = if file == 0 {
            InheritedFd::default()
        } else {
            listed += 1;
            InheritedFd {
                fd,
                kind: kind_of_file(file),
                _pad: [0; 3],
            }
        };
    }
    ev.listed = listed;
}

/// The task-file iterator: one [`FdRecord`] per (task, fd), for tasks whose fd table is
/// not their leader's (the kernel visits a process's shared table once). The context is
/// `struct bpf_iter__task_file { meta, task, fd, file }`, one 8-byte slot each
/// (userspace checks this layout in BTF before loading; `bpf_iter_meta.seq` is first).
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_file")]
pub extern "C" fn fd_table(ctx: *mut core::ffi::c_void) -> i32 {
    let _ = try_fd_table(ctx.cast::<u64>());
    0
}

#[inline(always)]
fn try_fd_table(ctx: *const u64) -> Option<()> {
    // SAFETY: context loads at the iterator's argument slots, checked by the verifier.
    let (meta, task, fd, file) = unsafe {
        (
            core::ptr::read_volatile(ctx),
            core::ptr::read_volatile(ctx.add(1)),
            core::ptr::read_volatile(ctx.add(2).cast::<u32>()),
            core::ptr::read_volatile(ctx.add(3)),
        )
    };
    if task == 0 || file == 0 {
        return None;
    }
    let seq: u64 = field(meta, 0);
    let files: u64 = field(task, config::fds_task_files_off());
    let cloexec = table(files).and_then(|(_, _, _, bitmap)| {
        read::<u64>(bitmap, 8 * (fd / 64)).map(|w| ((w >> (fd % 64)) & 1) as u8)
    });
    let rec = FdRecord {
        tgid: field(task, config::task_tgid_off()),
        fd,
        start_ns: process_start_field(task),
        file,
        files,
        kind: kind_of_file(file),
        cloexec: cloexec.unwrap_or(0),
        _pad: [0; 2],
        tid: field(task, config::task_pid_off()),
    };
    // SAFETY: `seq` is the iterator's seq_file; the record is a plain value on the stack.
    unsafe {
        bpf_seq_write(
            seq as *mut seq_file,
            (&raw const rec).cast(),
            size_of::<FdRecord>() as u32,
        );
    }
    Some(())
}
