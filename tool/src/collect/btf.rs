//! Kernel struct layouts from the running kernel's BTF (/sys/kernel/btf/vmlinux), so no
//! offset is compiled in for one kernel.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use btf_rs::{Btf, Type};

use crate::error::Fatal;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// `struct task_struct` offsets the eBPF programs need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskOffsets {
    pub pid: u32,
    pub mm: u32,
    pub group_leader: u32,
    pub start_time: u32,
    /// `__state` (5.14+) or `state` (older kernels).
    pub state: u32,
    pub exit_state: u32,
}

/// Offsets to find a task's cgroup v2 ancestors without bpf_get_current_ancestor_cgroup_id:
/// `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.level` and `cgroup.ancestor_ids`
/// (older kernels' layout, e.g. 5.10; later ones have `ancestors[]`, and the helper).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupWalkOffsets {
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_level: u32,
    pub cgroup_ancestor_ids: u32,
}

impl CgroupWalkOffsets {
    pub fn from_btf(btf: &Btf) -> Result<Self> {
        Ok(Self {
            task_cgroups: member_offset(btf, "task_struct", "cgroups")?,
            css_set_dfl_cgrp: member_offset(btf, "css_set", "dfl_cgrp")?,
            cgroup_level: member_offset(btf, "cgroup", "level")?,
            cgroup_ancestor_ids: member_offset(btf, "cgroup", "ancestor_ids")?,
        })
    }
}

pub fn load_vmlinux() -> Result<Btf> {
    if !Path::new(VMLINUX).exists() {
        return Err(Fatal::KernelUnsupported(format!(
            "the kernel has no BTF ({VMLINUX} is missing; it needs CONFIG_DEBUG_INFO_BTF=y)"
        ))
        .into());
    }
    Btf::from_file(VMLINUX).with_context(|| format!("parsing {VMLINUX}"))
}

impl TaskOffsets {
    pub fn from_btf(btf: &Btf) -> Result<Self> {
        Ok(Self {
            pid: member_offset(btf, "task_struct", "pid")?,
            mm: member_offset(btf, "task_struct", "mm")?,
            group_leader: member_offset(btf, "task_struct", "group_leader")?,
            start_time: member_offset(btf, "task_struct", "start_time")?,
            state: member_offset(btf, "task_struct", "__state")
                .or_else(|_| member_offset(btf, "task_struct", "state"))?,
            exit_state: member_offset(btf, "task_struct", "exit_state")?,
        })
    }
}

/// The arguments a raw tracepoint passes (its `TP_PROTO`), as C type names, from the
/// `btf_trace_<name>` typedef the kernel defines for every tracepoint (the leading
/// `void *__data` is left out). Raw tracepoint programs read them by index.
pub fn raw_tp_args(btf: &Btf, tracepoint: &str) -> Result<Vec<String>> {
    let typedef = format!("btf_trace_{tracepoint}");
    let ty = btf
        .resolve_types_by_name(&typedef)
        .map_err(|_| {
            Fatal::KernelUnsupported(format!(
                "the kernel has no tracepoint {tracepoint} (no BTF type {typedef})"
            ))
        })?
        .into_iter()
        .next()
        .with_context(|| format!("BTF has no {typedef}"))?;
    let Type::Typedef(td) = ty else {
        bail!("BTF {typedef} is not a typedef")
    };
    let Type::Ptr(ptr) = btf.resolve_chained_type(&td)? else {
        bail!("BTF {typedef} is not a function pointer")
    };
    let Type::FuncProto(proto) = btf.resolve_chained_type(&ptr)? else {
        bail!("BTF {typedef} is not a function pointer")
    };
    let mut args = Vec::new();
    for p in proto.parameters.iter().skip(1) {
        args.push(type_name(btf, btf.resolve_chained_type(p)?)?);
    }
    Ok(args)
}

/// A readable C name for a type: `struct task_struct *`, `bool`, `unsigned int`.
fn type_name(btf: &Btf, ty: Type) -> Result<String> {
    Ok(match ty {
        Type::Ptr(p) => format!("{} *", type_name(btf, btf.resolve_chained_type(&p)?)?),
        Type::Struct(s) => format!("struct {}", btf.resolve_name(&s).unwrap_or_default()),
        Type::Union(u) => format!("union {}", btf.resolve_name(&u).unwrap_or_default()),
        Type::Const(c) => type_name(btf, btf.resolve_chained_type(&c)?)?,
        Type::Volatile(v) => type_name(btf, btf.resolve_chained_type(&v)?)?,
        Type::Int(i) => btf.resolve_name(&i).unwrap_or_default(),
        Type::Typedef(t) => btf.resolve_name(&t).unwrap_or_default(),
        Type::Void => "void".into(),
        other => format!("{other:?}")
            .split('(')
            .next()
            .unwrap_or("?")
            .to_lowercase(),
    })
}

/// Offsets the lifecycle programs need, all from the running kernel's BTF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleOffsets {
    pub pid: u32,
    pub tgid: u32,
    pub real_parent: u32,
    /// `start_boottime` (`real_start_time` before Linux 5.5): the clock /proc/PID/stat uses.
    pub start_boottime: u32,
    pub exit_code: u32,
    pub exit_signal: u32,
    pub sighand: u32,
    pub comm: u32,
    /// `sighand_struct.action[SIGCHLD - 1].sa.sa_handler` and `.sa_flags`.
    pub sigchld_handler: u32,
    pub sigchld_flags: u32,
    /// `linux_binprm.filename`.
    pub binprm_filename: u32,
    /// `pid.numbers[0].nr`.
    pub pid_nr: u32,
    /// 1 when the `sched_process_exit` tracepoint passes `group_dead` (newer kernels);
    /// otherwise the program reads `task->signal->live` (0 once the group is dead).
    pub exit_group_dead_arg: u32,
    pub signal: u32,
    /// `signal_struct.live` (an `atomic_t`).
    pub signal_live: u32,
}

const SIGCHLD: u32 = 17;

impl LifecycleOffsets {
    pub fn from_btf(btf: &Btf) -> Result<Self> {
        let t = |m: &str| member_offset(btf, "task_struct", m);
        let start_boottime = t("start_boottime").or_else(|_| t("real_start_time"))?;
        let action = member_offset(btf, "sighand_struct", "action")?;
        let k_sigaction = struct_size(btf, "k_sigaction")?;
        let slot = action + (SIGCHLD - 1) * k_sigaction + member_offset(btf, "k_sigaction", "sa")?;
        Ok(Self {
            pid: t("pid")?,
            tgid: t("tgid")?,
            real_parent: t("real_parent")?,
            start_boottime,
            exit_code: t("exit_code")?,
            exit_signal: t("exit_signal")?,
            sighand: t("sighand")?,
            comm: t("comm")?,
            sigchld_handler: slot + member_offset(btf, "sigaction", "sa_handler")?,
            sigchld_flags: slot + member_offset(btf, "sigaction", "sa_flags")?,
            binprm_filename: member_offset(btf, "linux_binprm", "filename")?,
            pid_nr: member_offset(btf, "pid", "numbers")? + member_offset(btf, "upid", "nr")?,
            exit_group_dead_arg: u32::from(tracepoint_args(btf, "sched_process_exit")? >= 2),
            signal: t("signal")?,
            // atomic_t is `typedef struct { int counter; }`: the counter is at its start.
            signal_live: member_offset(btf, "signal_struct", "live")?,
        })
    }
}

fn named_struct(btf: &Btf, name: &str) -> Result<btf_rs::Struct> {
    btf.resolve_types_by_name(name)
        .with_context(|| format!("BTF has no type `{name}`"))?
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .with_context(|| format!("BTF has no struct `{name}` with members"))
}

/// Number of arguments a BTF tracepoint passes (its `btf_trace_NAME` prototype minus the
/// leading context pointer).
pub fn tracepoint_args(btf: &Btf, name: &str) -> Result<usize> {
    let typedef = format!("btf_trace_{name}");
    let types = btf
        .resolve_types_by_name(&typedef)
        .with_context(|| format!("BTF has no `{typedef}`"))?;
    let Some(Type::Typedef(td)) = types.into_iter().find(|t| matches!(t, Type::Typedef(_))) else {
        bail!("BTF `{typedef}` is not a typedef");
    };
    let Type::Ptr(ptr) = btf.resolve_chained_type(&td)? else {
        bail!("BTF `{typedef}` is not a function pointer");
    };
    let Type::FuncProto(proto) = btf.resolve_chained_type(&ptr)? else {
        bail!("BTF `{typedef}` does not point to a function prototype");
    };
    Ok(proto.parameters.len().saturating_sub(1))
}

/// Size in bytes of `struct name`.
pub fn struct_size(btf: &Btf, name: &str) -> Result<u32> {
    Ok(u32::try_from(named_struct(btf, name)?.size())?)
}

/// Byte offset of `member` in `struct name`, looking inside anonymous struct/union members
/// (randomized or grouped layouts put fields there).
pub fn member_offset(btf: &Btf, name: &str, member: &str) -> Result<u32> {
    let s = named_struct(btf, name)?;
    let bits = find_member(btf, &s, member, 0)?
        .with_context(|| format!("BTF struct {name} has no member `{member}`"))?;
    if bits % 8 != 0 {
        bail!("BTF member {name}.{member} is a bitfield");
    }
    Ok(bits / 8)
}

fn find_member(btf: &Btf, s: &btf_rs::Struct, member: &str, base_bits: u32) -> Result<Option<u32>> {
    for m in &s.members {
        let mname = btf.resolve_name(m).unwrap_or_default();
        if mname == member {
            return Ok(Some(base_bits + m.bit_offset()));
        }
        if mname.is_empty() {
            let ty = btf.resolve_chained_type(m)?;
            if let Type::Struct(inner) | Type::Union(inner) = &ty
                && let Some(off) = find_member(btf, inner, member, base_bits + m.bit_offset())?
            {
                return Ok(Some(off));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolves the offsets from this host's kernel; skipped (with a reason) only where the
    /// host has no BTF at all.
    #[test]
    fn task_offsets_from_host_btf() {
        if !Path::new(VMLINUX).exists() {
            eprintln!("skipped: {VMLINUX} missing on this host");
            return;
        }
        let btf = load_vmlinux().unwrap();
        let off = TaskOffsets::from_btf(&btf).unwrap();
        // Plausibility, not a hard-coded layout: distinct, 8-byte aligned pointers/u64s
        // well inside a task_struct (a few KiB).
        for o in [off.mm, off.group_leader, off.start_time] {
            assert!(o > 0 && o < 16 * 1024 && o % 8 == 0, "{off:?}");
        }
        assert!(
            off.pid % 4 == 0 && off.exit_state % 4 == 0 && off.pid < 16 * 1024,
            "{off:?}"
        );
        assert_ne!(off.mm, off.group_leader);
        assert!(member_offset(&btf, "task_struct", "no_such_member_xyz").is_err());
        assert!(member_offset(&btf, "no_such_struct_xyz", "mm").is_err());
    }

    #[test]
    fn raw_tracepoint_arguments_from_host_btf() {
        if !Path::new(VMLINUX).exists() {
            eprintln!("skipped: {VMLINUX} missing on this host");
            return;
        }
        let btf = load_vmlinux().unwrap();
        let switch = raw_tp_args(&btf, "sched_switch").unwrap();
        // 5.18+ appends `unsigned int prev_state`; older kernels stop after `next`.
        assert_eq!(
            &switch[..3],
            ["bool", "struct task_struct *", "struct task_struct *"]
        );
        assert!(
            switch.len() == 3 || switch[3] == "unsigned int",
            "{switch:?}"
        );
        assert_eq!(
            raw_tp_args(&btf, "sched_wakeup").unwrap(),
            ["struct task_struct *"]
        );
        assert!(raw_tp_args(&btf, "no_such_tracepoint_xyz").is_err());
    }

    #[test]
    fn lifecycle_offsets_from_host_btf() {
        if !Path::new(VMLINUX).exists() {
            eprintln!("skipped: {VMLINUX} missing on this host");
            return;
        }
        let btf = load_vmlinux().unwrap();
        let off = LifecycleOffsets::from_btf(&btf).unwrap();
        // pid and tgid are adjacent pid_t fields; comm is 16 bytes inside the task.
        assert_eq!(off.tgid, off.pid + 4, "{off:?}");
        assert!(off.comm > 0 && off.comm < 16 * 1024);
        // The SIGCHLD slot is the 17th k_sigaction, handler first and flags after it.
        let k = struct_size(&btf, "k_sigaction").unwrap();
        assert!(k >= 16, "k_sigaction of {k} bytes");
        assert_eq!(
            off.sigchld_handler,
            member_offset(&btf, "sighand_struct", "action").unwrap() + 16 * k
        );
        assert!(off.sigchld_flags > off.sigchld_handler);
        assert!(struct_size(&btf, "no_such_struct_xyz").is_err());
        // fork passes (parent, child); exec (task, old_pid, bprm); free (task).
        assert_eq!(tracepoint_args(&btf, "sched_process_fork").unwrap(), 2);
        assert_eq!(tracepoint_args(&btf, "sched_process_exec").unwrap(), 3);
        assert_eq!(tracepoint_args(&btf, "sched_process_free").unwrap(), 1);
        assert!(tracepoint_args(&btf, "no_such_tracepoint_xyz").is_err());
    }
}
