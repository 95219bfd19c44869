//! What the after-fork programs need from the running kernel, resolved before loading.
//! Each part may be missing on its own (one warning line each; the rest goes on):
//!
//! - copy-on-write faults: x86's `page_fault_user` and `page_fault_kernel` tracepoints
//!   (their argument order checked against the BTF prototype) and the error-code bits `X86_PF_PROT`/`X86_PF_WRITE`
//!   from BTF's `enum x86_pf_error_code` (the architecture's bits where BTF lacks it);
//! - fork timing: in the syscall programs when they run for copy accounting (their
//!   dispatch tables); otherwise `syscalls/sys_{enter,exit}_{fork,vfork,clone,clone3}`,
//!   record offsets from their tracefs format files;
//! - the fd tables (exec, iterator): the task → files → fdtable → file → inode chain
//!   from BTF; the iterator also needs its context laid out as the program reads it.

use std::path::Path;

use crate::collect::btf::Btf;
use anyhow::{Context as _, Result, bail};
use proclens_common::{config, copies::op};

use crate::collect::{
    btf::{LifecycleOffsets, enum_value, member_offset, raw_tp_args},
    tracefs,
};

/// The fork-family syscalls timed, by their tracepoints' suffix, with the program that
/// enters each.
pub const CALLS: [(&str, &str); 4] = [
    (op::FORK_CALL_NAMES[0], "fork_enter_fork"),
    (op::FORK_CALL_NAMES[1], "fork_enter_vfork"),
    (op::FORK_CALL_NAMES[2], "fork_enter_clone"),
    (op::FORK_CALL_NAMES[3], "fork_enter_clone3"),
];

/// How fork-family calls are timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// By the syscall programs (attached for copy accounting, or for this alone where
    /// tracefs is not mounted).
    Syscalls,
    /// By classic tracepoints of their own.
    Tracepoints,
}

/// Everything resolved before loading, with what is missing and why.
#[derive(Debug, Clone)]
pub struct ForksConfig {
    pub cfg: config::Forks,
    /// Why copy-on-write faults cannot be counted here; `None`: they can.
    pub faults_missing: Option<String>,
    /// The calls timed (indices of [`CALLS`]): those this architecture has, or whose
    /// tracepoints exist.
    pub timed: Vec<usize>,
    pub timing: Timing,
    /// Why some or all fork-family calls cannot be timed.
    pub timing_missing: Vec<String>,
    /// Why the fd tables cannot be read in the kernel (exec and iterator); `None`: they can.
    pub fds_missing: Option<String>,
    /// Why the task-file iterator's context is not what the program reads.
    pub iter_missing: Option<String>,
}

/// The page-fault tracepoints' error-code mask of a write to a present page.
fn fault_mask(btf: &Btf) -> Result<u64> {
    for tp in ["page_fault_user", "page_fault_kernel"] {
        let args = raw_tp_args(btf, tp)
            .with_context(|| format!("the kernel has no {tp} tracepoint (x86 only)"))?;
        if args.len() != 3 || !args[2].contains("long") || !args[1].contains("pt_regs") {
            bail!("{tp} passes {args:?}, not (address, regs, error_code)");
        }
    }
    let e = "x86_pf_error_code";
    match (
        enum_value(btf, e, "X86_PF_PROT"),
        enum_value(btf, e, "X86_PF_WRITE"),
    ) {
        (Ok(prot), Ok(write)) => Ok(u64::from(prot | write)),
        // Older kernels' BTF may leave the enum out (no function's type names it). The
        // bits are the CPU's, not the kernel's: the page-fault error code's P (0) and
        // W/R (1) bits, fixed by the x86 architecture.
        _ if cfg!(target_arch = "x86_64") => Ok(0b11),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// Offset of an integer field of 8 bytes (syscall records give every argument a slot).
fn slot(f: &tracefs::Format, name: &str) -> Result<u32> {
    Ok(f.int_field(name, &[8])?.offset)
}

/// Record offsets of the fork-family tracepoints: (timed calls, what is missing).
fn tracepoint_timing(root: Option<&Path>, cfg: &mut config::Forks) -> (Vec<usize>, Vec<String>) {
    let Some(root) = root else {
        return (
            Vec::new(),
            vec!["tracefs is not available, so fork-family calls are not timed".into()],
        );
    };
    let mut timed = Vec::new();
    let mut missing = Vec::new();
    let mut exit_ret: Option<u32> = None;
    for (i, (call, _)) in CALLS.iter().enumerate() {
        let read = || -> Result<(u32, u32)> {
            let enter = tracefs::format(root, "syscalls", &format!("sys_enter_{call}"))?;
            let exit = tracefs::format(root, "syscalls", &format!("sys_exit_{call}"))?;
            let arg = match *call {
                "clone" => slot(&enter, "clone_flags")?,
                "clone3" => slot(&enter, "uargs")?,
                _ => 0,
            };
            Ok((arg, slot(&exit, "ret")?))
        };
        match read() {
            Ok((_, ret)) if exit_ret.is_some_and(|r| r != ret) => {
                missing.push(format!(
                    "sys_exit_{call} places `ret` at {ret}, unlike the others"
                ));
            }
            Ok((arg, ret)) => {
                exit_ret = Some(ret);
                match *call {
                    "clone" => cfg.clone_flags = arg,
                    "clone3" => cfg.clone3_uargs = arg,
                    _ => {}
                }
                timed.push(i);
            }
            Err(e) => missing.push(format!("{call} is not timed: {e:#}")),
        }
    }
    cfg.exit_ret = exit_ret.unwrap_or(0);
    (timed, missing)
}

/// The iterator's context must be `{ meta, task, fd, file }` in 8-byte slots, with the
/// `seq_file` first in `bpf_iter_meta`: the program reads them at those fixed slots (the
/// verifier accepts only constant context offsets).
fn iter_layout(btf: &Btf) -> Result<()> {
    let ctx = "bpf_iter__task_file";
    for (i, m) in ["meta", "task", "fd", "file"].iter().enumerate() {
        let off = member_offset(btf, ctx, m)?;
        if off != 8 * i as u32 {
            bail!("{ctx}.{m} is at {off}, not {}", 8 * i);
        }
    }
    if member_offset(btf, "bpf_iter_meta", "seq")? != 0 {
        bail!("bpf_iter_meta.seq is not its first member");
    }
    Ok(())
}

impl ForksConfig {
    /// Resolves every part from BTF and, for fork timing by tracepoints, tracefs (`root`,
    /// if mounted).
    pub fn resolve(
        root: Option<&Path>,
        btf: &Btf,
        life: &LifecycleOffsets,
        timing: Timing,
    ) -> Self {
        let mut cfg = config::Forks {
            binprm_filename: life.binprm_filename,
            ..config::Forks::default()
        };
        let t = |m: &str| member_offset(btf, "task_struct", m);
        let faults_missing = match (fault_mask(btf), t("self_exec_id"), t("parent_exec_id")) {
            (Ok(mask), Ok(own), Ok(parents)) => {
                cfg.fault_cow_mask = mask;
                cfg.task_self_exec_id = own;
                cfg.task_parent_exec_id = parents;
                None
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Some(format!("{e:#}")),
        };
        cfg.clone_args_flags = member_offset(btf, "clone_args", "flags").unwrap_or(0);
        if faults_missing.is_none() {
            hugetlb(btf, &mut cfg);
        }
        let (timed, timing_missing) = match timing {
            Timing::Tracepoints => tracepoint_timing(root, &mut cfg),
            Timing::Syscalls => (
                (0..CALLS.len())
                    .filter(|&i| CALLS[i].0.parse::<syscalls::Sysno>().is_ok())
                    .collect(),
                Vec::new(),
            ),
        };
        let mut fds = || -> Result<()> {
            cfg.task_files = t("files")?;
            cfg.files_fdt = member_offset(btf, "files_struct", "fdt")?;
            cfg.fdt_max_fds = member_offset(btf, "fdtable", "max_fds")?;
            cfg.fdt_fd = member_offset(btf, "fdtable", "fd")?;
            cfg.fdt_open_fds = member_offset(btf, "fdtable", "open_fds")?;
            cfg.fdt_close_on_exec = member_offset(btf, "fdtable", "close_on_exec")?;
            cfg.file_inode = member_offset(btf, "file", "f_inode")?;
            cfg.inode_mode = member_offset(btf, "inode", "i_mode")?;
            Ok(())
        };
        let fds_missing = fds().err().map(|e| format!("{e:#}"));
        Self {
            cfg,
            faults_missing,
            timed,
            timing,
            timing_missing,
            fds_missing,
            iter_missing: iter_layout(btf).err().map(|e| format!("{e:#}")),
        }
    }
}

/// Sets what telling hugetlb faults apart needs, where the kernel has it all:
/// `bpf_find_vma` (5.17+) and `mm_struct.hugetlb_usage`; otherwise hugetlb
/// faults count as base pages (said in `--help`).
fn hugetlb(btf: &Btf, cfg: &mut config::Forks) {
    let found = (|| -> Result<[u32; 7]> {
        // The helper's id in the kernel's own list of helpers.
        enum_value(btf, "bpf_func_id", "BPF_FUNC_find_vma")?;
        Ok([
            member_offset(btf, "task_struct", "mm")?,
            member_offset(btf, "mm_struct", "hugetlb_usage")?,
            member_offset(btf, "vm_area_struct", "vm_flags")?,
            member_offset(btf, "vm_area_struct", "vm_file")?,
            member_offset(btf, "file", "f_inode")?,
            member_offset(btf, "inode", "i_sb")?,
            member_offset(btf, "super_block", "s_blocksize_bits")?,
        ])
    })();
    if let Ok([mm, usage, flags, file, inode, sb, bits]) = found {
        cfg.hugetlb_probe = 1;
        cfg.task_mm = mm;
        cfg.mm_hugetlb_usage = usage;
        cfg.vma_flags = flags;
        cfg.vma_file = file;
        cfg.file_inode = inode;
        cfg.inode_sb = sb;
        cfg.sb_blocksize_bits = bits;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::btf::{VMLINUX, load_vmlinux};

    /// Resolves every part from this host's kernel; skipped with a reason where the host
    /// has no BTF.
    #[test]
    fn resolves_from_the_running_kernel() {
        if !Path::new(VMLINUX).exists() {
            eprintln!("skipped: no BTF on this host");
            return;
        }
        let btf = load_vmlinux().unwrap();
        let life = LifecycleOffsets::from_btf(&btf).unwrap();
        let root = Path::new("/sys/kernel/tracing");
        let root = root.join("events/syscalls").is_dir().then_some(root);
        let c = ForksConfig::resolve(root, &btf, &life, Timing::Tracepoints);
        assert_eq!(c.fds_missing, None);
        assert_eq!(c.iter_missing, None);
        assert!(c.cfg.task_files > 0 && c.cfg.fdt_open_fds > 0, "{c:?}");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(c.faults_missing, None);
            // X86_PF_PROT | X86_PF_WRITE: bits 0 and 1 since the first x86 kernels.
            assert_eq!(c.cfg.fault_cow_mask, 0b11);
        }
        if root.is_some() {
            assert_eq!(c.timed.len(), CALLS.len(), "{:?}", c.timing_missing);
            assert!(c.cfg.clone_flags >= 8 && c.cfg.exit_ret >= 8, "{c:?}");
        }
        // Timed by the syscall programs: every call this architecture has, no tracefs.
        let s = ForksConfig::resolve(None, &btf, &life, Timing::Syscalls);
        assert!(s.timing_missing.is_empty(), "{:?}", s.timing_missing);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(s.timed, [0, 1, 2, 3]);
        }
    }

    #[test]
    fn without_tracefs_nothing_is_timed_and_says_why() {
        let mut cfg = config::Forks::default();
        let (timed, missing) = tracepoint_timing(None, &mut cfg);
        assert!(timed.is_empty());
        assert!(missing[0].contains("tracefs"), "{missing:?}");
    }
}
