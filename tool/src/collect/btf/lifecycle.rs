//! Layouts the lifecycle programs read: a task's identity, exit and SIGCHLD disposition,
//! and its family (children, reapers, pid namespaces).

use crate::collect::btf::Btf;
use anyhow::{Context as _, Result};

use super::{member_bit_offset, member_offset, nested_offset, struct_size, tracepoint_args};

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
