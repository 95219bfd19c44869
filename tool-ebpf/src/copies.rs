//! Copy paths: the copy-family syscalls, handed over by `syscalls` (the dispatch on the
//! syscall number) when they return. [`exit`] resolves the kind of each side (an fd's
//! inode, user memory, another process's memory) from the call's arguments, which the
//! task's saved registers still hold, and adds the call's outcome to its path's per-CPU
//! totals: the bytes it moved (its return value; the messages' `msg_len` for
//! recvmmsg/sendmmsg; the length for a mapping), or a failure split into would-block,
//! interrupted and other errors; and it follows the thread's file reads into the socket
//! writes that send them on (the flows sendfile could carry, see [`pair`]).
//!
//! Nothing goes to userspace per call, and nothing is parked between a call's entry and
//! its return: one program per syscall (`sys_exit`). Argument registers and struct
//! offsets come from the running kernel's BTF at load time.
//!
//! Every key names a process by (tgid, leader's `start_boottime`), never by pid alone: a
//! pid freed by one process may go to the next fork within one reporting interval, and
//! the two must stay two rows.

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_probe_read_user},
    macros::map,
    maps::{HashMap, PerCpuArray},
    programs::BtfTracePointContext,
};
use proclens_common::{
    copies::{CopyKey, CopyStats, Outcome, Pairing, args, fd_kind, flags, op},
    counters,
};

use crate::{config, fdkind, maps::count, task::field};

const BPF_ANY: u64 = 0;

/// Path totals per (process, op, source kind, destination kind, flags, CPU), summed over
/// CPUs by userspace (see `SysKey::cpu`).
#[map]
static COPIES: HashMap<CopyKey, CopyStats> = HashMap::with_max_entries(8192, 0);

/// Each thread's file→socket pairing state (see `Pairing`), by thread id, kept between
/// its calls; made at its first file read into user memory. A thread's calls may return
/// on different CPUs, so this one is shared. Userspace deletes the entries of threads
/// that have gone.
#[map]
static PAIRING: HashMap<u32, Pairing> = HashMap::with_max_entries(65536, 0);

/// A call's path as [`exit`] resolved it, handed to [`account`] through memory.
#[repr(C)]
#[derive(Clone, Copy)]
struct Resolved {
    key: CopyKey,
    /// mmap: the requested length; recvmmsg/sendmmsg: the user address of `msgvec`.
    arg: u64,
}

/// This CPU's [`Resolved`] call (a program does not nest on a CPU). Through memory, the
/// kinds [`exit`] resolved reach [`account`] as values the verifier does not track: it
/// then walks the accounting once, not once per path of the resolution (older
/// verifiers, 5.10, took minutes over their product).
#[map]
static RESOLVED: PerCpuArray<Resolved> = PerCpuArray::with_max_entries(1, 0);

/// A copy-family syscall as it returns.
pub(crate) struct Call {
    pub pid_tgid: u64,
    /// The current task (untyped: `bpf_get_current_task`).
    pub task: u64,
    /// The task's saved user registers (BTF-typed `struct pt_regs *`).
    pub regs: u64,
    pub op: u8,
    pub compat: bool,
    pub start_ns: u64,
}

impl Call {
    /// Syscall argument `i` (a constant below 6). Each ABI's branch is a load at a
    /// constant offset, which the verifier checks against `struct pt_regs`. The kernel
    /// leaves the argument registers as the call found them (only the return value's
    /// register changes), so they hold the arguments at `sys_exit` too.
    #[inline(always)]
    fn arg(&self, i: usize) -> u64 {
        if self.compat {
            field(self.regs, config::arg_off(true, i))
        } else {
            field(self.regs, config::arg_off(false, i))
        }
    }

    /// The fd in argument `i` (the low 32 bits: an `int`).
    #[inline(always)]
    fn fd(&self, i: u8) -> i32 {
        self.arg(i as usize) as i32
    }

    /// Kind of one side: user memory when the op has no fd there.
    #[inline(always)]
    fn side(&self, i: u8) -> u8 {
        if i == args::NONE {
            return fd_kind::USER;
        }
        fdkind::kind(self.task, self.fd(i))
    }

    /// The call's path (source and destination kinds) and what its bytes need (the mmap
    /// length, the mmsghdr vector); `None` for a call that is no copy path (an anonymous
    /// mapping).
    #[inline(always)]
    fn path(&self) -> Option<(u8, u8, u64)> {
        let mut arg = 0u64;
        let (src, dst) = match self.op {
            op::VMSPLICE => {
                // The kernel's own rule (fs/splice.c): a pipe open for writing receives
                // the user pages (vmsplice_to_pipe), otherwise the pipe is copied out to
                // user memory.
                match fdkind::file_of(self.task, self.fd(0)) {
                    Some(file) if fdkind::is_writable(file) => {
                        (fd_kind::USER, fdkind::kind_of_file(file))
                    }
                    Some(file) => (fdkind::kind_of_file(file), fd_kind::USER),
                    None => (fd_kind::UNKNOWN, fd_kind::USER),
                }
            }
            op::MMAP => {
                // Only file-backed mappings: MAP_ANONYMOUS ignores the fd.
                if self.arg(args::MMAP_FLAGS) & config::map_anonymous_flag() != 0 {
                    return None;
                }
                let fd = self.fd(args::fds(op::MMAP).0);
                if fd < 0 {
                    return None;
                }
                arg = self.arg(args::MMAP_LEN);
                (fdkind::kind(self.task, fd), fd_kind::USER)
            }
            op::PROCESS_VM_READV => (fd_kind::PROCESS, fd_kind::USER),
            op::PROCESS_VM_WRITEV => (fd_kind::USER, fd_kind::PROCESS),
            o => {
                if o == op::RECVMMSG || o == op::SENDMMSG {
                    arg = self.arg(args::MMSG_VEC);
                }
                let (s, d) = args::fds(o);
                (self.side(s), self.side(d))
            }
        };
        Some((src, dst, arg))
    }
}

/// Accounts a copy-family call that returned `ret`: resolves its path, then
/// [`account`]s it.
#[inline(always)]
pub(crate) fn exit(ctx: &BtfTracePointContext, c: &Call, ret: i64) {
    let Some((src, dst, arg)) = c.path() else {
        return;
    };
    let Some(slot) = RESOLVED.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot, while the program runs on it.
    unsafe {
        *slot = Resolved {
            key: CopyKey {
                tgid: (c.pid_tgid >> 32) as u32,
                op: c.op,
                src,
                dst,
                flags: if c.compat { flags::COMPAT } else { 0 },
                start_ns: c.start_ns,
                cpu: 0,
                _pad: 0,
            },
            arg,
        };
    }
    account(ctx, c.pid_tgid, ret);
}

/// Adds this CPU's [`Resolved`] call's outcome to its path's totals and follows its bytes
/// (see [`pair`]).
#[inline(never)]
fn account(ctx: &BtfTracePointContext, pid_tgid: u64, ret: i64) {
    let Some(slot) = RESOLVED.get_ptr(0) else {
        return;
    };
    // SAFETY: this CPU's slot, written by `exit` just before.
    let Resolved { key, arg } = unsafe { *slot };
    let outcome = Outcome::of(ret);
    let bytes = match (outcome, key.op) {
        (Outcome::Done, op::MMAP) => arg,
        (Outcome::Done, op::RECVMMSG | op::SENDMMSG) => {
            mmsg_bytes(arg, ret, key.flags & flags::COMPAT != 0)
        }
        (Outcome::Done, _) => ret as u64,
        _ => 0,
    };
    add(ctx, &key, outcome, bytes, 1);
    if outcome == Outcome::Done && bytes > 0 {
        pair(ctx, pid_tgid, &key, bytes);
    }
}

/// Follows a thread's file data into sockets (see `Pairing::left`): each read whose
/// bytes the thread's socket writes have all carried on is a file→socket flow sendfile
/// could have made, counted under `op::SENDFILE_ELIGIBLE` with one call per read. Inlined
/// into [`account`], which the verifier walks once: a call of its own would add a frame
/// to the stack that a program's calls share (512 bytes, which 5.10 counts in 32-byte
/// steps per frame).
#[inline(always)]
fn pair(ctx: &BtfTracePointContext, pid_tgid: u64, key: &CopyKey, bytes: u64) {
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    if op::reads_into_user(key.op) && key.src == fd_kind::FILE {
        if let Some(p) = PAIRING.get_ptr_mut(&tid) {
            // SAFETY: only this thread writes its own entry.
            let p = unsafe { &mut *p };
            if p.tgid != tgid {
                // A thread id reused by another process: start afresh.
                *p = Pairing {
                    tgid,
                    ..Pairing::default()
                };
            }
            p.file_read(bytes);
            return;
        }
        let mut fresh = Pairing {
            tgid,
            ..Pairing::default()
        };
        fresh.file_read(bytes);
        if PAIRING.insert(&tid, &fresh, BPF_ANY).is_err() {
            count(ctx, counters::INFLIGHT_FULL);
        }
        return;
    }
    if !(op::writes_from_user(key.op) && key.dst == fd_kind::SOCKET) {
        return;
    }
    let Some(p) = PAIRING.get_ptr_mut(&tid) else {
        return;
    };
    // SAFETY: only this thread writes its own entry.
    let p = unsafe { &mut *p };
    if p.tgid != tgid || p.chunks == 0 {
        return;
    }
    let (carried, reads) = p.socket_write(bytes);
    if reads > 0 {
        let flow = CopyKey {
            op: op::SENDFILE_ELIGIBLE,
            src: fd_kind::FILE,
            dst: fd_kind::SOCKET,
            flags: 0,
            ..*key
        };
        add(ctx, &flow, Outcome::Done, carried, reads);
    }
}

/// The bytes of the first `n` messages of a recvmmsg/sendmmsg vector at user address
/// `vec`: their `msg_len`, which the kernel has just written back. A call of its own: its
/// loop, inlined into every path of the exit program, took older verifiers (6.1, 5.10)
/// past their million-instruction budget.
#[inline(never)]
fn mmsg_bytes(vec: u64, n: i64, compat: bool) -> u64 {
    let (size, off) = if compat {
        (config::compat_mmsg_size(), config::compat_mmsg_len_off())
    } else {
        (config::mmsg_size(), config::mmsg_len_off())
    };
    let mut sum = 0u64;
    let mut at = vec + u64::from(off);
    for i in 0..args::MMSG_MAX {
        if i64::from(i) >= n {
            break;
        }
        // SAFETY: bpf_probe_read_user tolerates any address; a fault reads nothing.
        if let Ok(len) = unsafe { bpf_probe_read_user(at as *const u32) } {
            sum += u64::from(len);
        }
        at += u64::from(size);
    }
    sum
}

/// Adds `calls` calls with `outcome` (and `bytes`) to `key`'s totals on this CPU.
#[inline(always)]
fn add(ctx: &BtfTracePointContext, key: &CopyKey, outcome: Outcome, bytes: u64, calls: u64) {
    let key = &CopyKey {
        // SAFETY: a helper without arguments.
        cpu: unsafe { bpf_get_smp_processor_id() },
        ..*key
    };
    let mut one = CopyStats::default();
    match outcome {
        Outcome::Done => {
            one.calls = calls;
            one.bytes = bytes;
        }
        Outcome::WouldBlock => one.would_block = calls,
        Outcome::Interrupted => one.interrupted = calls,
        Outcome::Failed => one.errors = calls,
    }
    match COPIES.get_ptr_mut(key) {
        Some(s) => {
            // SAFETY: this CPU's entry; the program runs with preemption disabled and
            // does not nest on a CPU.
            let s = unsafe { &mut *s };
            s.bytes += one.bytes;
            s.calls += one.calls;
            s.errors += one.errors;
            s.would_block += one.would_block;
            s.interrupted += one.interrupted;
        }
        None => {
            // Only this CPU makes this key: the insert cannot race another.
            if COPIES.insert(key, &one, BPF_ANY).is_err() {
                count(ctx, counters::COPY_MAP_FULL);
            }
        }
    }
}
