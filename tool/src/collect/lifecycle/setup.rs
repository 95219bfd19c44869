//! The lifecycle programs (tool-ebpf/src/lifecycle.rs): fork, exec, exit, wait and free as
//! BTF tracepoints, which hand the programs `task_struct` pointers and need no tracefs.

use anyhow::Result;
use aya::EbpfLoader;
use proclens_common::config;

use crate::{
    collect::{
        btf::{FamilyOffsets, LifecycleOffsets, RqClockOffsets},
        globals::Globals,
        object::Object,
        setup::{self, Setup},
    },
    error::Fatal,
};

/// The lifecycle programs, each attached to the `sched` BTF tracepoint of its name.
pub const PROGRAMS: [&str; 5] = [
    "sched_process_fork",
    "sched_process_exec",
    "sched_process_exit",
    "sched_process_wait",
    "sched_process_free",
];

#[derive(Debug)]
pub struct LifecycleSetup {
    cfg: config::Lifecycle,
}

impl LifecycleSetup {
    pub fn resolve(life: &LifecycleOffsets, vmlinux: &crate::collect::btf::Btf) -> Result<Self> {
        let fam = FamilyOffsets::from_btf(vmlinux).map_err(|e| {
            Fatal::KernelUnsupported(format!(
                "the kernel's BTF lacks what the lifecycle programs read: {e:#}"
            ))
        })?;
        // The start-up iterator dates zombies with the run-queue clock, when it can.
        let rq = RqClockOffsets::from_btf(vmlinux).ok();
        let clock = rq.zip(fam.last_arrival);
        let (rq, last_arrival) = clock.unwrap_or_default();
        Ok(Self {
            cfg: config::Lifecycle {
                task_real_parent: life.real_parent,
                task_exit_code: life.exit_code,
                task_exit_signal: life.exit_signal,
                task_sighand: life.sighand,
                sigchld_handler: life.sigchld_handler,
                sigchld_flags: life.sigchld_flags,
                binprm_filename: life.binprm_filename,
                pid_nr: life.pid_nr,
                exit_group_dead_arg: life.exit_group_dead_arg,
                task_signal: life.signal,
                signal_live: life.signal_live,
                task_children: fam.children,
                task_sibling: fam.sibling,
                task_exit_state: fam.exit_state,
                task_thread_pid: fam.thread_pid,
                pid_level: fam.pid_level,
                pid_numbers: fam.pid_numbers,
                upid_size: fam.upid_size,
                upid_ns: fam.upid_ns,
                pidns_child_reaper: fam.child_reaper,
                signal_is_subreaper_bit: fam.is_subreaper_bit,
                signal_has_subreaper_bit: fam.has_subreaper_bit,
                signal_wait_chldexit: fam.wait_chldexit,
                clocked: u32::from(clock.is_some()),
                task_last_arrival: last_arrival,
                task_cfs_rq: rq.task_cfs_rq,
                cfs_rq_rq: rq.cfs_rq_rq,
                rq_clock: rq.rq_clock,
            },
        })
    }
}

impl Setup for LifecycleSetup {
    fn configure<'a>(&'a self, globals: &mut Globals, _loader: &mut EbpfLoader<'a>) {
        globals.lifecycle = self.cfg;
    }

    fn btf_tracepoints(&self) -> Vec<(String, String)> {
        PROGRAMS.map(|p| (p.into(), p.into())).to_vec()
    }

    fn iterators(&self) -> Vec<(&'static str, &'static str)> {
        vec![(super::iter::PROGRAM, "task")]
    }

    fn attach(&self, obj: &mut Object, kernel: &aya::Btf) -> Result<()> {
        setup::attach_btf_tracepoints(obj, &self.btf_tracepoints(), kernel)
    }
}
