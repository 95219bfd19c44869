//! Copy paths and mode switches.
//!
//! - `sys_enter_all` (raw tracepoint `sys_enter`, every syscall): counts syscalls per
//!   (process, syscall number) in a per-CPU hash; this is the hot path, one map update.
//! - `enter_<op>` (classic `syscalls/sys_enter_<op>` of the copy family): resolves the kind
//!   of each fd and parks (path, mmap length) per thread in `INFLIGHT`.
//! - `copy_exit` (attached to each `syscalls/sys_exit_<op>`): adds the return value (bytes
//!   actually moved) or an error to the path's per-CPU totals.
//!
//! Nothing goes to userspace per call; record offsets come from tracefs format files and
//! struct offsets from BTF, both read at load time.
//!
//! Every key names a process by (tgid, leader's `start_boottime`), never by pid alone: a
//! pid freed by one process may go to the next fork within one reporting interval, and
//! the two must stay two rows.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task},
    macros::{map, raw_tracepoint, tracepoint},
    maps::{HashMap, PerCpuHashMap},
    programs::{RawTracePointContext, TracePointContext},
};
use proclens_common::{
    copies::{CopyKey, CopyStats, Inflight, ProcKey, SysKey, fd_kind, layout, op},
    counters,
};

use crate::{config, fdkind, filter, maps::count, task::process_start};

const BPF_ANY: u64 = 0;

/// Syscall counts per (process, syscall number); per CPU, summed by userspace. Bounded:
/// a syscall that finds it full is counted in `COUNTERS[SYSCALL_MAP_FULL]`, and userspace
/// deletes the entries of processes that have gone after their last report.
#[map]
static SYSCALLS: PerCpuHashMap<SysKey, u64> = PerCpuHashMap::with_max_entries(16384, 0);

/// Command name per process, written when the process makes a syscall it had not made
/// before (the `SYSCALLS` miss path, so not per call): userspace names processes that
/// have exited before it could read /proc from here. After an exec the new program's
/// first new syscalls rewrite it. A full map is counted in `COUNTERS[COMM_MAP_FULL]`.
#[map]
static COMMS: HashMap<ProcKey, [u8; 16]> = HashMap::with_max_entries(32768, 0);

/// Path totals per (process, op, source kind, destination kind); per CPU.
#[map]
static COPIES: PerCpuHashMap<CopyKey, CopyStats> = PerCpuHashMap::with_max_entries(8192, 0);

/// Copy-family calls between enter and exit, by thread id. Enter and exit may run on
/// different CPUs, so this one is shared. A thread's entry is updated in place (its op set
/// to `OP_NONE` at exit) rather than inserted and deleted on every call, which halves the
/// map work on the hot path; userspace deletes the entries of threads that have gone.
#[map]
static INFLIGHT: HashMap<u32, Inflight> = HashMap::with_max_entries(65536, 0);

/// `Inflight::key.op` of a thread with no copy-family call in flight.
const OP_NONE: u8 = u8::MAX;

#[inline(always)]
fn layout_of(op: u8, field: usize) -> u32 {
    let i = op as usize * layout::PER_OP + field;
    if i >= layout::SIZE {
        return layout::NONE;
    }
    config::copy_layout(i)
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter_all(ctx: RawTracePointContext) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == config::self_tgid() || !filter::current_in_cgroup() {
        return 0;
    }
    // TP_PROTO(struct pt_regs *regs, long id)
    let nr: i64 = ctx.arg(1);
    let start_ns = process_start(unsafe { bpf_get_current_task() });
    let key = SysKey {
        tgid,
        nr: nr as u32,
        start_ns,
    };
    match SYSCALLS.get_ptr_mut(&key) {
        // SAFETY: this CPU's slot; the program runs with preemption disabled.
        Some(n) => unsafe { *n += 1 },
        None => {
            // BPF_ANY on a per-CPU hash sets only this CPU's slot, so a concurrent insert
            // by another CPU loses nothing.
            if SYSCALLS.insert(&key, &1, BPF_ANY).is_err() {
                count(&ctx, counters::SYSCALL_MAP_FULL);
                // No name either: userspace prunes names with the processes it sees in
                // SYSCALLS/COPIES, and would never free this one.
                return 0;
            }
            if let Ok(comm) = bpf_get_current_comm() {
                let pk = ProcKey {
                    tgid,
                    _pad: 0,
                    start_ns,
                };
                // A full map leaves the name to /proc (counted).
                if COMMS.insert(&pk, &comm, BPF_ANY).is_err() {
                    count(&ctx, counters::COMM_MAP_FULL);
                }
            }
        }
    }
    0
}

macro_rules! enter_programs {
    ($($name:ident => $op:expr;)*) => {
        $(
            #[tracepoint]
            pub fn $name(ctx: TracePointContext) -> u32 {
                let _ = try_enter(&ctx, $op);
                0
            }
        )*
    };
}

enter_programs! {
    enter_read => op::READ;
    enter_write => op::WRITE;
    enter_pread64 => op::PREAD64;
    enter_pwrite64 => op::PWRITE64;
    enter_readv => op::READV;
    enter_writev => op::WRITEV;
    enter_preadv => op::PREADV;
    enter_pwritev => op::PWRITEV;
    enter_preadv2 => op::PREADV2;
    enter_pwritev2 => op::PWRITEV2;
    enter_recvfrom => op::RECVFROM;
    enter_sendto => op::SENDTO;
    enter_recvmsg => op::RECVMSG;
    enter_sendmsg => op::SENDMSG;
    enter_sendfile64 => op::SENDFILE64;
    enter_splice => op::SPLICE;
    enter_vmsplice => op::VMSPLICE;
    enter_tee => op::TEE;
    enter_copy_file_range => op::COPY_FILE_RANGE;
    enter_mmap => op::MMAP;
}

/// An fd argument of the record (8-byte slot; the low 32 bits hold the `int`).
#[inline(always)]
fn fd_arg(ctx: &TracePointContext, off: u32) -> Result<i32, i32> {
    // SAFETY: the offset comes from this tracepoint's format; read_at checks the access.
    Ok(unsafe { ctx.read_at::<u64>(off as usize)? } as i32)
}

/// Kind of one side of a copy: user memory when the op has no fd there.
#[inline(always)]
fn side(ctx: &TracePointContext, task: u64, off: u32) -> Result<u8, i32> {
    if off == layout::NONE {
        return Ok(fd_kind::USER);
    }
    Ok(fdkind::kind(task, fd_arg(ctx, off)?))
}

#[inline(always)]
fn try_enter(ctx: &TracePointContext, op: u8) -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == config::self_tgid() || !filter::current_in_cgroup() {
        return Ok(());
    }
    let tid = pid_tgid as u32;
    let task = unsafe { bpf_get_current_task() };
    let mut len = 0u64;
    let (src, dst) = if op == op::VMSPLICE {
        // The kernel's own rule (fs/splice.c): a pipe open for writing receives the user
        // pages (vmsplice_to_pipe), otherwise the pipe is copied out to user memory.
        let fd = fd_arg(ctx, layout_of(op, layout::SRC))?;
        match fdkind::file_of(task, fd) {
            Some(file) if fdkind::is_writable(file) => (fd_kind::USER, fdkind::kind_of_file(file)),
            Some(file) => (fdkind::kind_of_file(file), fd_kind::USER),
            None => (fd_kind::UNKNOWN, fd_kind::USER),
        }
    } else if op == op::MMAP {
        // Only file-backed mappings: MAP_ANONYMOUS ignores the fd.
        let flags: u64 = unsafe { ctx.read_at(layout_of(op, layout::FLAGS) as usize)? };
        if flags & config::map_anonymous_flag() != 0 {
            return Ok(());
        }
        let fd = fd_arg(ctx, layout_of(op, layout::SRC))?;
        if fd < 0 {
            return Ok(());
        }
        len = unsafe { ctx.read_at(layout_of(op, layout::LEN) as usize)? };
        (fdkind::kind(task, fd), fd_kind::USER)
    } else {
        (
            side(ctx, task, layout_of(op, layout::SRC))?,
            side(ctx, task, layout_of(op, layout::DST))?,
        )
    };
    let inflight = Inflight {
        key: CopyKey {
            tgid,
            op,
            src,
            dst,
            _pad: 0,
            start_ns: process_start(task),
        },
        len,
    };
    match INFLIGHT.get_ptr_mut(&tid) {
        // SAFETY: only this thread writes its own entry.
        Some(e) => unsafe { *e = inflight },
        None => {
            if INFLIGHT.insert(&tid, &inflight, BPF_ANY).is_err() {
                count(ctx, counters::INFLIGHT_FULL);
            }
        }
    }
    Ok(())
}

#[tracepoint]
pub fn copy_exit(ctx: TracePointContext) -> u32 {
    let _ = try_exit(&ctx);
    0
}

#[inline(always)]
fn try_exit(ctx: &TracePointContext) -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(p) = INFLIGHT.get_ptr_mut(&tid) else {
        // Entered before proclens attached, or not traced (proclens itself).
        return Ok(());
    };
    // SAFETY: only this thread writes its own entry; copied out, then marked consumed.
    let inflight = unsafe { *p };
    if inflight.key.op == OP_NONE {
        return Ok(());
    }
    unsafe { (*p).key.op = OP_NONE };
    if inflight.key.tgid != (pid_tgid >> 32) as u32 {
        // A stale entry of a thread killed inside a call whose id was reused.
        return Ok(());
    }
    let ret: i64 = unsafe { ctx.read_at(config::copy_exit_ret_off() as usize)? };
    // Failures are -errno (-4095..-1); an mmap address is never in that range.
    let failed = (-4095..0).contains(&ret);
    let bytes = if failed {
        0
    } else if inflight.key.op == op::MMAP {
        inflight.len
    } else {
        ret as u64
    };
    let key = inflight.key;
    match COPIES.get_ptr_mut(&key) {
        Some(s) => {
            // SAFETY: this CPU's slot; the program runs with preemption disabled.
            let s = unsafe { &mut *s };
            if failed {
                s.errors += 1;
            } else {
                s.calls += 1;
                s.bytes += bytes;
            }
        }
        None => {
            let s = if failed {
                CopyStats {
                    bytes: 0,
                    calls: 0,
                    errors: 1,
                }
            } else {
                CopyStats {
                    bytes,
                    calls: 1,
                    errors: 0,
                }
            };
            // As for SYSCALLS: BPF_ANY sets only this CPU's slot.
            if COPIES.insert(&key, &s, BPF_ANY).is_err() {
                count(ctx, counters::COPY_MAP_FULL);
            }
        }
    }
    Ok(())
}
