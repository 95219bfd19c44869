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
    /// `flags` (`PF_KTHREAD`).
    pub flags: u32,
    /// The address space a task runs on (borrowed by one without its own `mm`).
    pub active_mm: u32,
    /// The kernel's voluntary and involuntary switch counters.
    pub nvcsw: u32,
    pub nivcsw: u32,
    /// Whether the task is on a CPU now, and on a run queue (`CONFIG_SMP`'s `on_cpu`).
    pub on_cpu: u32,
    pub on_rq: u32,
}

/// Where the scheduler keeps the time of the switch or wakeup it is tracing: the task's
/// run queue's `rq->clock` (`sched_clock`, ns), which `__schedule` and every wakeup update
/// under the run-queue lock just before the tracepoint fires. Reached from the task as
/// `task_struct.se.cfs_rq` → `cfs_rq.rq` → `rq.clock`; `cfs_rq.rq` exists only with
/// `CONFIG_FAIR_GROUP_SCHED` (every distribution kernel), so a kernel without it has no
/// such offsets and the switch programs read `bpf_ktime_get_ns` instead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RqClockOffsets {
    /// `task_struct.se` + `sched_entity.cfs_rq`.
    pub task_cfs_rq: u32,
    pub cfs_rq_rq: u32,
    pub rq_clock: u32,
}

impl RqClockOffsets {
    pub fn from_btf(btf: &Btf) -> Result<Self> {
        Ok(Self {
            task_cfs_rq: nested_offset(btf, "task_struct", "se", "sched_entity", "cfs_rq")?,
            cfs_rq_rq: member_offset(btf, "cfs_rq", "rq")?,
            rq_clock: member_offset(btf, "rq", "clock")?,
        })
    }
}

/// `task_struct.sched_info`'s run-queue time, last arrival on a CPU and last queueing
/// (`CONFIG_SCHED_INFO`; /proc/PID/schedstat's second field is `run_delay`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedInfoOffsets {
    pub run_delay: u32,
    pub last_arrival: u32,
    pub last_queued: u32,
}

impl SchedInfoOffsets {
    pub fn from_btf(btf: &Btf) -> Result<Self> {
        let f = |m| nested_offset(btf, "task_struct", "sched_info", "sched_info", m);
        Ok(Self {
            run_delay: f("run_delay")?,
            last_arrival: f("last_arrival")?,
            last_queued: f("last_queued")?,
        })
    }
}

/// Offsets to find any task's cgroup v2 ancestors without
/// `bpf_get_current_ancestor_cgroup_id` (which knows only the current task's):
/// `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.level`, and the ancestors' ids:
/// `cgroup.ancestor_ids` on older kernels (e.g. 5.10), `cgroup.ancestors` → `cgroup.kn`
/// → `kernfs_node.id` on later ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupWalkOffsets {
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_level: u32,
    pub cgroup_ancestor_ids: u32,
    /// Set when `cgroup_ancestor_ids` is `ancestors[]` (pointers): then `cgroup.kn` and
    /// `kernfs_node.id`.
    pub ancestor_ptrs: Option<(u32, u32)>,
}

impl CgroupWalkOffsets {
    pub fn from_btf(btf: &Btf) -> Result<Self> {
        let ids = member_offset(btf, "cgroup", "ancestor_ids");
        let (cgroup_ancestor_ids, ancestor_ptrs) = match ids {
            Ok(off) => (off, None),
            Err(_) => (
                member_offset(btf, "cgroup", "ancestors")?,
                Some((
                    member_offset(btf, "cgroup", "kn")?,
                    member_offset(btf, "kernfs_node", "id")?,
                )),
            ),
        };
        Ok(Self {
            task_cgroups: member_offset(btf, "task_struct", "cgroups")?,
            css_set_dfl_cgrp: member_offset(btf, "css_set", "dfl_cgrp")?,
            cgroup_level: member_offset(btf, "cgroup", "level")?,
            cgroup_ancestor_ids,
            ancestor_ptrs,
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
    // Mapped, not parsed whole: proclens looks up a few dozen types, and parsing all of
    // the kernel's (and freeing them) cost ~100 ms of CPU at every start. sysfs offers
    // mmap of this file only since Linux 6.16 (ENODEV before): there it is read whole.
    guarded(|| Btf::from_file_with_backend(VMLINUX, btf_rs::Backend::Mmap))
        .or_else(|_| guarded(|| Btf::from_file_with_backend(VMLINUX, btf_rs::Backend::Cache)))
        .with_context(|| format!("reading {VMLINUX}"))
}

/// Parses BTF bytes. Malformed input is an error: a panic inside `btf_rs` (a bug there, or
/// input it does not expect) is caught and reported as one too.
#[cfg(test)]
pub fn parse(bytes: &[u8]) -> Result<Btf> {
    guarded(|| Btf::from_bytes(bytes))
}

/// Runs a btf-rs parse, a panic on malformed input turned into an error.
fn guarded(parse: impl FnOnce() -> btf_rs::Result<Btf> + std::panic::UnwindSafe) -> Result<Btf> {
    match std::panic::catch_unwind(parse) {
        Ok(btf) => Ok(btf?),
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            bail!("malformed BTF (the parser panicked: {why})")
        }
    }
}

/// How deep lookups follow type references (anonymous members, pointers, qualifiers):
/// far more than any kernel nests, and a bound on malformed BTF whose references loop.
const MAX_DEPTH: u32 = 32;

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
            flags: member_offset(btf, "task_struct", "flags")?,
            active_mm: member_offset(btf, "task_struct", "active_mm")?,
            nvcsw: member_offset(btf, "task_struct", "nvcsw")?,
            nivcsw: member_offset(btf, "task_struct", "nivcsw")?,
            on_cpu: member_offset(btf, "task_struct", "on_cpu")?,
            on_rq: member_offset(btf, "task_struct", "on_rq")?,
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
        args.push(type_name(btf, btf.resolve_chained_type(p)?, 0)?);
    }
    Ok(args)
}

/// A readable C name for a type: `struct task_struct *`, `bool`, `unsigned int`.
fn type_name(btf: &Btf, ty: Type, depth: u32) -> Result<String> {
    if depth > MAX_DEPTH {
        bail!("BTF type references nest deeper than {MAX_DEPTH} (a loop?)");
    }
    let inner = |t: &dyn btf_rs::BtfType| type_name(btf, btf.resolve_chained_type(t)?, depth + 1);
    Ok(match ty {
        Type::Ptr(p) => format!("{} *", inner(&p)?),
        Type::Struct(s) => format!("struct {}", btf.resolve_name(&s).unwrap_or_default()),
        Type::Union(u) => format!("union {}", btf.resolve_name(&u).unwrap_or_default()),
        Type::Const(c) => inner(&c)?,
        Type::Volatile(v) => inner(&v)?,
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
        let sa = member_offset(btf, "k_sigaction", "sa")?;
        let add = |a: u32, b: u32| {
            a.checked_add(b)
                .context("BTF offsets of the SIGCHLD handler overflow")
        };
        let slot = add(
            add(
                action,
                (SIGCHLD - 1)
                    .checked_mul(k_sigaction)
                    .context("BTF k_sigaction is too large")?,
            )?,
            sa,
        )?;
        Ok(Self {
            pid: t("pid")?,
            tgid: t("tgid")?,
            real_parent: t("real_parent")?,
            start_boottime,
            exit_code: t("exit_code")?,
            exit_signal: t("exit_signal")?,
            sighand: t("sighand")?,
            comm: t("comm")?,
            sigchld_handler: add(slot, member_offset(btf, "sigaction", "sa_handler")?)?,
            sigchld_flags: add(slot, member_offset(btf, "sigaction", "sa_flags")?)?,
            binprm_filename: member_offset(btf, "linux_binprm", "filename")?,
            pid_nr: nested_offset(btf, "pid", "numbers", "upid", "nr")?,
            exit_group_dead_arg: u32::from(tracepoint_args(btf, "sched_process_exit")? >= 2),
            signal: t("signal")?,
            // atomic_t is `typedef struct { int counter; }`: the counter is at its start.
            signal_live: member_offset(btf, "signal_struct", "live")?,
        })
    }
}

/// Offsets the lifecycle programs need to follow a process's family as the kernel does:
/// who inherits a dying process's children (`find_new_reaper`), which zombie a wait
/// reaps, whether a parent is blocked in wait*(), and (for the start-up task iterator)
/// when a zombie last ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FamilyOffsets {
    pub children: u32,
    pub sibling: u32,
    pub exit_state: u32,
    pub thread_pid: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_size: u32,
    pub upid_ns: u32,
    pub child_reaper: u32,
    /// Bit offsets in `signal_struct`.
    pub is_subreaper_bit: u32,
    pub has_subreaper_bit: u32,
    /// `signal_struct.wait_chldexit.head`.
    pub wait_chldexit: u32,
    /// `task_struct.sched_info.last_arrival`, when the kernel keeps it
    /// (`CONFIG_SCHED_INFO`).
    pub last_arrival: Option<u32>,
}

impl FamilyOffsets {
    pub fn from_btf(btf: &Btf) -> Result<Self> {
        let t = |m: &str| member_offset(btf, "task_struct", m);
        let wait = member_offset(btf, "signal_struct", "wait_chldexit")?
            .checked_add(member_offset(btf, "wait_queue_head", "head")?)
            .context("BTF offset of signal_struct.wait_chldexit.head overflows")?;
        Ok(Self {
            children: t("children")?,
            sibling: t("sibling")?,
            exit_state: t("exit_state")?,
            thread_pid: t("thread_pid")?,
            pid_level: member_offset(btf, "pid", "level")?,
            pid_numbers: member_offset(btf, "pid", "numbers")?,
            upid_size: struct_size(btf, "upid")?,
            upid_ns: member_offset(btf, "upid", "ns")?,
            child_reaper: member_offset(btf, "pid_namespace", "child_reaper")?,
            is_subreaper_bit: member_bit_offset(btf, "signal_struct", "is_child_subreaper")?,
            has_subreaper_bit: member_bit_offset(btf, "signal_struct", "has_child_subreaper")?,
            wait_chldexit: wait,
            last_arrival: nested_offset(
                btf,
                "task_struct",
                "sched_info",
                "sched_info",
                "last_arrival",
            )
            .ok(),
        })
    }
}

/// The value of `member` of `enum name` (a C enum of 32-bit values).
pub fn enum_value(btf: &Btf, name: &str, member: &str) -> Result<u32> {
    btf.resolve_types_by_name(name)
        .with_context(|| format!("BTF has no type `{name}`"))?
        .into_iter()
        .find_map(|t| match t {
            Type::Enum(e) => e
                .members
                .iter()
                .find(|m| btf.resolve_name(*m).is_ok_and(|n| n == member))
                .map(btf_rs::EnumMember::val),
            _ => None,
        })
        .with_context(|| format!("BTF enum {name} has no member `{member}`"))
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
/// The offset of `outer.member.inner_member`, where `member` is an embedded (or the first
/// element of an array of) `struct inner`.
pub(crate) fn nested_offset(
    btf: &Btf,
    outer: &str,
    member: &str,
    inner: &str,
    inner_member: &str,
) -> Result<u32> {
    member_offset(btf, outer, member)?
        .checked_add(member_offset(btf, inner, inner_member)?)
        .with_context(|| format!("BTF offset of {outer}.{member}.{inner_member} overflows"))
}

pub fn member_offset(btf: &Btf, name: &str, member: &str) -> Result<u32> {
    let bits = member_bit_offset(btf, name, member)?;
    if bits % 8 != 0 {
        bail!("BTF member {name}.{member} is a bitfield");
    }
    Ok(bits / 8)
}

/// Bit offset of `member` in `struct name` (a bitfield's own bit; other members' first).
pub fn member_bit_offset(btf: &Btf, name: &str, member: &str) -> Result<u32> {
    let s = named_struct(btf, name)?;
    find_member(btf, &s, member, 0, 0)?
        .with_context(|| format!("BTF struct {name} has no member `{member}`"))
}

fn find_member(
    btf: &Btf,
    s: &btf_rs::Struct,
    member: &str,
    base_bits: u32,
    depth: u32,
) -> Result<Option<u32>> {
    if depth > MAX_DEPTH {
        bail!("BTF anonymous members nest deeper than {MAX_DEPTH} (a loop?)");
    }
    for m in &s.members {
        let mname = btf.resolve_name(m).unwrap_or_default();
        let bits = base_bits
            .checked_add(m.bit_offset())
            .with_context(|| format!("BTF offset of `{member}` overflows"))?;
        if mname == member {
            return Ok(Some(bits));
        }
        if mname.is_empty() {
            let ty = btf.resolve_chained_type(m)?;
            if let Type::Struct(inner) | Type::Union(inner) = &ty
                && let Some(off) = find_member(btf, inner, member, bits, depth + 1)?
            {
                return Ok(Some(off));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
