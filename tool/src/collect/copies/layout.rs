//! What the syscall programs need from the running kernel, resolved before loading, all
//! from BTF (no tracefs):
//!
//! - the saved user registers that hold syscall arguments 0..5 in each ABI (`struct
//!   pt_regs` members), and the one that still holds the syscall number at `sys_exit`;
//! - whether the kernel runs 32-bit syscalls (`struct compat_mmsghdr` exists only with
//!   `CONFIG_COMPAT`) and where a task says it is in one (x86: `thread_info.status`);
//! - `struct mmsghdr` (and the compat one): where recvmmsg/sendmmsg write `msg_len`;
//! - the fd → inode chain (`task_struct.files` → `files_struct.fdt` →
//!   `fdtable.{max_fds,fd}` → `file.{f_inode,f_mode}` → `inode.i_mode`).
//!
//! The syscall numbers of the copy family are the ABIs' (stable by definition), from the
//! `syscalls` crate's tables; `MAP_ANONYMOUS` is the build target's (libc crate).

use crate::collect::btf::Btf;
use anyhow::{Context as _, Result};
use proclens_common::{
    config::{self, NR_TABLE},
    copies::op,
};

use crate::collect::btf::{enum_value, member_offset, nested_offset, struct_size};

/// `$o`'s syscalls in the ABI of `$S` (a `syscalls` crate table): the exceptions given
/// first, then every op whose syscall has the op's own name in both ABIs.
macro_rules! numbers {
    ($S:ty, $o:expr, { $($op:path => [$($n:ident),*],)* }) => {{
        type S = $S;
        match $o {
            $($op => &[$(S::$n),*],)*
            op::READ => &[S::read],
            op::WRITE => &[S::write],
            op::PREAD64 => &[S::pread64],
            op::PWRITE64 => &[S::pwrite64],
            op::READV => &[S::readv],
            op::WRITEV => &[S::writev],
            op::PREADV => &[S::preadv],
            op::PWRITEV => &[S::pwritev],
            op::PREADV2 => &[S::preadv2],
            op::PWRITEV2 => &[S::pwritev2],
            op::RECVFROM => &[S::recvfrom],
            op::SENDTO => &[S::sendto],
            op::RECVMSG => &[S::recvmsg],
            op::SENDMSG => &[S::sendmsg],
            op::SPLICE => &[S::splice],
            op::VMSPLICE => &[S::vmsplice],
            op::TEE => &[S::tee],
            op::COPY_FILE_RANGE => &[S::copy_file_range],
            op::SENDMMSG => &[S::sendmmsg],
            op::PROCESS_VM_READV => &[S::process_vm_readv],
            op::PROCESS_VM_WRITEV => &[S::process_vm_writev],
            _ => &[],
        }
    }};
}

/// A call's number in the 64-bit ABI and in the 32-bit (i386) one (ABI numbers, stable
/// by definition).
macro_rules! abi_numbers {
    ($n:ident) => {
        [
            syscalls::Sysno::$n.id() as u32,
            syscalls::x86::Sysno::$n.id() as u32,
        ]
    };
}

/// The syscalls of each copy op in the 64-bit ABI.
fn native_numbers(o: u8) -> &'static [syscalls::Sysno] {
    numbers!(syscalls::Sysno, o, {
        op::SENDFILE64 => [sendfile],
        op::MMAP => [mmap],
        op::RECVMMSG => [recvmmsg],
    })
}

/// The syscalls of each copy op in the 32-bit (i386) ABI: both sendfiles, mmap2 (its
/// offset in pages; the length and flags are where mmap has them), both recvmmsgs (the
/// time64 one for 2038). Not here: `socketcall`, which multiplexes every socket call
/// through one number with its arguments in user memory (glibc uses the direct socket
/// syscalls on kernels since 4.3), and the old `mmap`, whose arguments are in user memory
/// too: they are counted as syscalls, not as copy paths.
fn compat_numbers(o: u8) -> &'static [syscalls::x86::Sysno] {
    numbers!(syscalls::x86::Sysno, o, {
        op::SENDFILE64 => [sendfile, sendfile64],
        op::MMAP => [mmap2],
        op::RECVMMSG => [recvmmsg, recvmmsg_time64],
    })
}

/// The dispatch tables: the op of every syscall number of each ABI, and with `time_forks`
/// the fork-family calls of the 64-bit one (`op::FORK_CALLS`, those this architecture
/// has).
pub fn op_tables(compat: bool, copies: bool, time_forks: bool) -> [u8; 2 * NR_TABLE] {
    let mut t = [op::NONE; 2 * NR_TABLE];
    if time_forks {
        for (i, name) in (0u8..).zip(op::FORK_CALL_NAMES) {
            if let Ok(s) = name.parse::<syscalls::Sysno>() {
                t[s.id() as usize] = op::FORK_CALLS + i;
            }
        }
    }
    let copy_ops = if copies { op::COUNT as u8 } else { 0 };
    for o in 0..copy_ops {
        for s in native_numbers(o) {
            t[s.id() as usize] = o;
        }
        if compat {
            for s in compat_numbers(o) {
                t[NR_TABLE + s.id() as usize] = o;
            }
        }
    }
    t
}

/// Where x86 says a task is in a 32-bit syscall: `TS_COMPAT` in `thread_info.status`
/// (`arch/x86/include/asm/thread_info.h`; a bit the kernel has used since 2.6.x, not in
/// BTF because it is a macro).
const TS_COMPAT: u32 = 0x0002;

/// The syscall ABIs' registers and where a task says which one it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbiOffsets {
    pub args_native: [u32; 6],
    pub args_compat: [u32; 6],
    pub regs_nr: u32,
    /// `task_struct.flags` and `signal_struct.flags`: how a thread's exit came (the
    /// `exit` and `exit_group` calls are counted there, see `count_exit_call`).
    pub task_flags: u32,
    pub signal_flags: u32,
    /// `task_struct.self_exec_id` and `parent_exec_id` (see `skip_spawning`).
    pub self_exec_id: u32,
    pub parent_exec_id: u32,
    /// Whether the kernel has `bpf_task_pt_regs` (its id in `enum bpf_func_id`, 5.15+).
    pub task_regs_helper: bool,
    /// `(task_struct offset, bit)` of the compat flag; `None` without a 32-bit ABI.
    pub compat: Option<(u32, u32)>,
    /// `(size, offset of msg_len)` of `struct mmsghdr` and `struct compat_mmsghdr`.
    pub mmsg: (u32, u32),
    pub compat_mmsg: (u32, u32),
}

impl AbiOffsets {
    pub fn from_btf(btf: &Btf) -> Result<Self> {
        let reg = |r: &str| member_offset(btf, "pt_regs", r);
        let regs = |names: [&str; 6]| -> Result<[u32; 6]> {
            let mut out = [0; 6];
            for (o, n) in out.iter_mut().zip(names) {
                *o = reg(n)?;
            }
            Ok(out)
        };
        let mmsg = (
            struct_size(btf, "mmsghdr")?,
            member_offset(btf, "mmsghdr", "msg_len")?,
        );
        // Only a kernel with CONFIG_COMPAT has the compat structs and runs 32-bit code.
        let compat_mmsg = struct_size(btf, "compat_mmsghdr")
            .and_then(|s| Ok((s, member_offset(btf, "compat_mmsghdr", "msg_len")?)))
            .ok();
        let compat = match compat_mmsg {
            Some(_) => Some((
                nested_offset(btf, "task_struct", "thread_info", "thread_info", "status")
                    .context("a kernel with 32-bit syscalls but no thread_info.status")?,
                TS_COMPAT,
            )),
            None => None,
        };
        Ok(Self {
            // x86-64: rdi, rsi, rdx, r10, r8, r9; i386: ebx, ecx, edx, esi, edi, ebp.
            args_native: regs(["di", "si", "dx", "r10", "r8", "r9"])?,
            args_compat: regs(["bx", "cx", "dx", "si", "di", "bp"])?,
            regs_nr: reg("orig_ax")?,
            task_flags: member_offset(btf, "task_struct", "flags")?,
            signal_flags: member_offset(btf, "signal_struct", "flags")?,
            self_exec_id: member_offset(btf, "task_struct", "self_exec_id")?,
            parent_exec_id: member_offset(btf, "task_struct", "parent_exec_id")?,
            task_regs_helper: enum_value(btf, "bpf_func_id", "BPF_FUNC_task_pt_regs").is_ok(),
            compat,
            mmsg,
            compat_mmsg: compat_mmsg.unwrap_or_default(),
        })
    }
}

/// The fd → inode chain offsets from BTF.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FdOffsets {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_inode: u32,
    pub file_mode: u32,
    pub inode_mode: u32,
}

impl FdOffsets {
    pub fn from_btf(btf: &Btf) -> Result<Self> {
        Ok(Self {
            task_files: member_offset(btf, "task_struct", "files")?,
            files_fdt: member_offset(btf, "files_struct", "fdt")?,
            fdt_max_fds: member_offset(btf, "fdtable", "max_fds")?,
            fdt_fd: member_offset(btf, "fdtable", "fd")?,
            file_inode: member_offset(btf, "file", "f_inode")?,
            file_mode: member_offset(btf, "file", "f_mode")?,
            inode_mode: member_offset(btf, "inode", "i_mode")?,
        })
    }
}

/// Everything resolved before loading.
#[derive(Debug, Clone)]
pub struct CopyConfig {
    pub abi: AbiOffsets,
    pub fd: FdOffsets,
    pub map_anonymous: u64,
}

impl CopyConfig {
    pub fn resolve(btf: &Btf) -> Result<Self> {
        Ok(Self {
            abi: AbiOffsets::from_btf(btf)?,
            fd: FdOffsets::from_btf(btf)?,
            map_anonymous: libc::MAP_ANONYMOUS as u64,
        })
    }

    /// What counting syscalls alone needs (copies off): the registers, without the fd
    /// chain.
    pub fn counting(btf: &Btf) -> Result<Self> {
        Ok(Self {
            abi: AbiOffsets::from_btf(btf)?,
            fd: FdOffsets::default(),
            map_anonymous: libc::MAP_ANONYMOUS as u64,
        })
    }

    /// The syscall programs' load-time globals: `count_syscalls`, `copies` and
    /// `time_forks` say which of their parts run. The programs dispatch on the op tables
    /// (the `copies` global) when either of the last two does; the tables then name only
    /// the calls of the parts that run.
    pub fn config(&self, count_syscalls: bool, copies: bool, time_forks: bool) -> config::Copies {
        let a = &self.abi;
        let (compat_status, compat_flag) = a.compat.unwrap_or((u32::MAX, 0));
        config::Copies {
            map_anonymous: self.map_anonymous,
            count_syscalls: u32::from(count_syscalls),
            copies: u32::from(copies || time_forks),
            args_native: a.args_native,
            args_compat: a.args_compat,
            regs_nr: a.regs_nr,
            compat_status,
            compat_flag,
            sigreturn_nr: abi_numbers!(rt_sigreturn),
            exit_nr: abi_numbers!(exit),
            exit_group_nr: abi_numbers!(exit_group),
            fork_nr: {
                let [f, v, c, c3] = [
                    abi_numbers!(fork),
                    abi_numbers!(vfork),
                    abi_numbers!(clone),
                    abi_numbers!(clone3),
                ];
                [f[0], v[0], c[0], c3[0], f[1], v[1], c[1], c3[1]]
            },
            task_flags: a.task_flags,
            signal_flags: a.signal_flags,
            skip_spawning: 0,
            self_exec_id: a.self_exec_id,
            parent_exec_id: a.parent_exec_id,
            task_regs_helper: u32::from(a.task_regs_helper),
            mmsg_size: a.mmsg.0,
            mmsg_len: a.mmsg.1,
            compat_mmsg_size: a.compat_mmsg.0,
            compat_mmsg_len: a.compat_mmsg.1,
            task_files: self.fd.task_files,
            files_fdt: self.fd.files_fdt,
            fdt_max_fds: self.fd.fdt_max_fds,
            fdt_fd: self.fd.fdt_fd,
            file_inode: self.fd.file_inode,
            file_mode: self.fd.file_mode,
            inode_mode: self.fd.inode_mode,
            ops: op_tables(a.compat.is_some(), copies, time_forks),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::btf::{VMLINUX, load_vmlinux};

    #[test]
    #[allow(
        clippy::naive_bytecount,
        reason = "a 2 KiB table in a test; no crate for that"
    )]
    fn dispatch_tables_name_each_abi_right() {
        let t = op_tables(true, true, false);
        // The classic mix-up: 3 is close in the 64-bit ABI and read in the 32-bit one.
        assert_eq!(t[3], op::NONE, "x86-64 close");
        assert_eq!(t[NR_TABLE + 3], op::READ, "i386 read");
        assert_eq!(t[0], op::READ);
        assert_eq!(t[NR_TABLE + 4], op::WRITE);
        assert_eq!(t[40], op::SENDFILE64, "x86-64 sendfile");
        assert_eq!(t[NR_TABLE + 187], op::SENDFILE64, "i386 sendfile");
        assert_eq!(t[NR_TABLE + 239], op::SENDFILE64, "i386 sendfile64");
        assert_eq!(t[NR_TABLE + 192], op::MMAP, "i386 mmap2");
        assert_eq!(
            t[NR_TABLE + 90],
            op::NONE,
            "i386 old mmap: arguments in memory"
        );
        assert_eq!(t[NR_TABLE + 102], op::NONE, "i386 socketcall");
        assert_eq!(t[NR_TABLE + 417], op::RECVMMSG, "i386 recvmmsg_time64");
        assert_eq!(t[299], op::RECVMMSG);
        assert_eq!(t[307], op::SENDMMSG);
        assert_eq!(t[310], op::PROCESS_VM_READV);
        // Every op has a 64-bit number, each number at most one op.
        for o in 0..op::COUNT as u8 {
            assert_eq!(t[..NR_TABLE].iter().filter(|&&x| x == o).count(), 1, "{o}");
            assert!(t[NR_TABLE..].contains(&o), "{o} in i386");
        }
        assert!(
            op_tables(false, true, false)[NR_TABLE..]
                .iter()
                .all(|&x| x == op::NONE)
        );
        // Fork calls in the 64-bit table only, when timed there.
        let f = op_tables(true, true, true);
        assert_eq!(
            [f[57], f[58], f[56], f[435]],
            [0, 1, 2, 3].map(|i| op::FORK_CALLS + i),
            "x86-64 fork, vfork, clone, clone3"
        );
        assert!(f[NR_TABLE..] == t[NR_TABLE..], "i386 unchanged");
        // The kernel side leaves a fork's number to the fork path alone.
        for n in (0..NR_TABLE).filter(|&n| f[n] != op::NONE && f[n] >= op::FORK_CALLS) {
            assert_eq!(f[NR_TABLE + n], op::NONE, "i386 {n} is no copy");
        }
        assert!(t.iter().all(|&x| x == op::NONE || x < op::FORK_CALLS));
        // Fork calls alone (no copies): nothing else is dispatched.
        let only = op_tables(true, false, true);
        assert!((0..2 * NR_TABLE).all(|n| only[n]
            == if n < NR_TABLE && f[n] >= op::FORK_CALLS && f[n] != op::NONE {
                f[n]
            } else {
                op::NONE
            }));
    }

    /// Resolves the layouts from this host's kernel's BTF; skipped with a reason where
    /// the host has none.
    #[test]
    fn offsets_from_the_running_kernel() {
        if !std::path::Path::new(VMLINUX).exists() {
            eprintln!("skipped: no BTF on this host");
            return;
        }
        let btf = load_vmlinux().unwrap();
        let a = AbiOffsets::from_btf(&btf).unwrap();
        // pt_regs is a run of 8-byte registers; di (arg 0) comes after si (arg 1).
        for o in a.args_native.iter().chain(&a.args_compat) {
            assert!(o % 8 == 0 && *o < 21 * 8, "{a:?}");
        }
        assert_eq!(
            a.args_native[2], a.args_compat[2],
            "dx is argument 2 in both"
        );
        assert_eq!(a.mmsg.0, 64, "struct mmsghdr on x86-64");
        assert_eq!(a.mmsg.1, 56);
        if let Some((status, flag)) = a.compat {
            assert_eq!(flag, TS_COMPAT);
            assert!(
                status > 0 && status < 64,
                "thread_info is at the start of the task"
            );
            assert_eq!(a.compat_mmsg, (32, 28), "struct compat_mmsghdr");
        }
        let fd = FdOffsets::from_btf(&btf).unwrap();
        for o in [fd.task_files, fd.files_fdt, fd.fdt_fd, fd.file_inode] {
            assert!(o > 0 && o % 8 == 0 && o < 16 * 1024, "{fd:?}");
        }
    }
}
