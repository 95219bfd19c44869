//! The lifecycle programs (tool-ebpf/src/lifecycle.rs): fork, exec, exit, wait and free as
//! BTF tracepoints, which hand the programs `task_struct` pointers and need no tracefs.

use anyhow::Result;
use aya::EbpfLoader;
use proclens_common::config;

use crate::collect::{
    btf::LifecycleOffsets,
    globals::Globals,
    object::Object,
    setup::{self, Setup},
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
    pub fn resolve(life: &LifecycleOffsets) -> Self {
        Self {
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
                _pad: 0,
            },
        }
    }
}

impl Setup for LifecycleSetup {
    fn configure<'a>(&'a self, globals: &mut Globals, _loader: &mut EbpfLoader<'a>) {
        globals.lifecycle = self.cfg;
    }

    fn attach(&self, obj: &mut Object, kernel: &aya::Btf) -> Result<()> {
        for name in PROGRAMS {
            setup::attach_btf_tracepoint(obj, name, kernel)?;
        }
        Ok(())
    }
}
