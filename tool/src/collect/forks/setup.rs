//! The after-fork programs' set-up: what this kernel offers of them (each part on its
//! own), their globals, attaching them, and their maps.

use crate::collect::btf::Btf;
use anyhow::Result;
use aya::EbpfLoader;

use super::{
    ForksMaps,
    fdtables::{self, FdSource},
    layout::{CALLS, ForksConfig, Timing},
};
use crate::collect::{
    btf::LifecycleOffsets,
    globals::Globals,
    object::Object,
    setup::{self, Setup},
    tracefs,
};

/// The exec program's name (a BTF tracepoint on `sched_process_exec`).
const EXEC_PROGRAM: &str = "exec_fds";
/// The fault programs, each on the raw tracepoint of its name.
const FAULT_PROGRAMS: [&str; 2] = ["page_fault_user", "page_fault_kernel"];
/// The same, also telling hugetlb faults apart (where `config::Forks::hugetlb_probe`).
const FAULT_PROGRAMS_HUGE: [(&str, &str); 2] = [
    ("page_fault_user_huge", "page_fault_user"),
    ("page_fault_kernel_huge", "page_fault_kernel"),
];
const EXIT_PROGRAM: &str = "fork_exit";

/// What this kernel offers, once attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Available {
    pub faults: bool,
    /// Fork-family calls timed (`fork`, `vfork`, `clone`, `clone3`).
    pub timed: Vec<&'static str>,
    pub exec_fds: bool,
    /// Where the fd tables are read from, and why not from the iterator.
    pub fds: FdSource,
    pub fds_why_proc: Option<String>,
    /// One line per part that is missing, with the reason (printed at start).
    pub missing: Vec<String>,
}

#[derive(Debug)]
pub struct ForksSetup {
    cfg: ForksConfig,
}

impl ForksSetup {
    pub fn resolve(vmlinux: &Btf, life: &LifecycleOffsets, timing: Timing) -> Self {
        let root = match timing {
            Timing::Tracepoints => tracefs::root().ok(),
            Timing::Syscalls => None,
        };
        Self {
            cfg: ForksConfig::resolve(root.as_deref(), vmlinux, life, timing),
        }
    }

    /// The maps, and what is available (the iterator probed by loading it).
    pub fn take(&self, obj: &mut Object, kernel: &aya::Btf) -> Result<(ForksMaps, Available)> {
        let mut missing: Vec<String> = Vec::new();
        if let Some(why) = &self.cfg.faults_missing {
            missing.push(format!("copy-on-write faults are not counted: {why}"));
        }
        missing.extend(self.cfg.timing_missing.iter().cloned());
        if let Some(why) = &self.cfg.fds_missing {
            missing.push(format!("fds at exec are not read: {why}"));
        }
        for m in &missing {
            eprintln!("proclens: note: {m}");
        }
        let (fds, fds_why_proc) = FdSource::choose(obj, kernel, &self.cfg);
        Ok((
            ForksMaps::take(obj)?,
            Available {
                faults: self.cfg.faults_missing.is_none(),
                timed: self.cfg.timed.iter().map(|&i| CALLS[i].0).collect(),
                exec_fds: self.cfg.fds_missing.is_none(),
                fds,
                fds_why_proc,
                missing,
            },
        ))
    }
}

impl Setup for ForksSetup {
    fn configure<'a>(&'a self, globals: &mut Globals, _loader: &mut EbpfLoader<'a>) {
        globals.forks = self.cfg.cfg;
    }

    fn iterators(&self) -> Vec<(&'static str, &'static str)> {
        if self.cfg.fds_missing.is_some() || self.cfg.iter_missing.is_some() {
            return Vec::new();
        }
        vec![(fdtables::ITER_PROGRAM, fdtables::ITER_TARGET)]
    }

    fn btf_tracepoints(&self) -> Vec<(String, String)> {
        if self.cfg.fds_missing.is_some() {
            return Vec::new();
        }
        vec![(EXEC_PROGRAM.into(), "sched_process_exec".into())]
    }

    fn attach(&self, obj: &mut Object, kernel: &aya::Btf) -> Result<()> {
        if self.cfg.faults_missing.is_none() {
            if self.cfg.cfg.hugetlb_probe != 0 {
                for (p, tp) in FAULT_PROGRAMS_HUGE {
                    setup::attach_raw_tracepoint(obj, p, tp)?;
                }
            } else {
                for p in FAULT_PROGRAMS {
                    setup::attach_raw_tracepoint(obj, p, p)?;
                }
            }
        }
        setup::attach_btf_tracepoints(obj, &self.btf_tracepoints(), kernel)?;
        attach_timing(obj, &self.cfg).map_err(|e| setup::load_error(&e))
    }
}

/// The enter program of each timed call, and the one exit program on all their exits
/// (none when the syscall programs time them).
fn attach_timing(obj: &mut Object, cfg: &ForksConfig) -> Result<()> {
    if cfg.timed.is_empty() || cfg.timing == Timing::Syscalls {
        return Ok(());
    }
    for &i in &cfg.timed {
        let (call, name) = CALLS[i];
        setup::attach_tracepoints(obj, name, "syscalls", &[format!("sys_enter_{call}")])?;
    }
    let exits: Vec<String> = cfg
        .timed
        .iter()
        .map(|&i| format!("sys_exit_{}", CALLS[i].0))
        .collect();
    setup::attach_tracepoints(obj, EXIT_PROGRAM, "syscalls", &exits)
}
