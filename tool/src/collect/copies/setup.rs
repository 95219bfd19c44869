//! The syscall programs' set-up: which of their parts run (the per-process syscall count,
//! the copy-path accounting), what they need from BTF, their globals and map sizes,
//! attaching them, and their maps.

use crate::collect::btf::Btf;
use anyhow::Result;
use aya::EbpfLoader;
use proclens_common::config;

use super::{CopyMaps, layout::CopyConfig, maps::size_maps};
use crate::collect::{
    globals::Globals,
    object::Object,
    setup::{self, Setup},
};

/// Whether a view wants copy-path accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Want {
    #[default]
    Off,
    /// When this kernel's BTF describes what it needs (the syscall registers, the fd
    /// table); otherwise one warning and the view goes on without it.
    IfAvailable,
    /// Or fail.
    Required,
}

#[derive(Debug)]
pub struct CopySetup {
    /// Count every syscall per process.
    syscalls: bool,
    /// Account the copy-family calls.
    copies: bool,
    /// What BTF says (`None` when it could not say, or nothing needed it: then copies
    /// are off and fork calls are not timed here).
    cfg: Option<CopyConfig>,
    /// Fork-family calls timed here (see [`Self::time_forks`]).
    time_forks: bool,
}

impl CopySetup {
    pub fn resolve(syscalls: bool, want: Want, vmlinux: &Btf) -> Result<Self> {
        if !syscalls && want == Want::Off {
            return Ok(Self {
                syscalls,
                copies: false,
                cfg: None,
                time_forks: false,
            });
        }
        let (cfg, copies) = match (CopyConfig::resolve(vmlinux), want) {
            (Ok(c), w) => (Some(c), w != Want::Off),
            (Err(e), Want::Required) => return Err(e),
            (Err(e), Want::IfAvailable) => {
                eprintln!("proclens: warning: {e:#}; copy paths are not accounted");
                (None, false)
            }
            // Counting alone needs none of it: syscalls are then not told apart by ABI.
            (Err(_), Want::Off) => (None, false),
        };
        Ok(Self {
            syscalls,
            copies,
            cfg,
            time_forks: false,
        })
    }

    /// Times the fork-family calls in the syscall programs, which copy accounting attaches
    /// at entry and exit anyway, instead of in classic tracepoints of their own (whose
    /// detach costs ~30 ms each at exit). Returns whether it does: with copies on; and
    /// where tracefs is not mounted (`tracefs` false), which the classic tracepoints
    /// need, also without copies, at the cost of the syscall programs on every syscall.
    pub fn time_forks(&mut self, wanted: bool, tracefs: bool, vmlinux: &Btf) -> bool {
        if wanted && !tracefs && self.cfg.is_none() {
            self.cfg = CopyConfig::resolve(vmlinux).ok();
        }
        self.time_forks = wanted && self.cfg.is_some() && (self.copies || !tracefs);
        self.time_forks
    }

    /// Whether copy paths are accounted.
    pub fn copies_on(&self) -> bool {
        self.copies
    }

    /// Whether the syscall programs run.
    fn any(&self) -> bool {
        self.maps_used() || self.time_forks
    }

    /// Whether the syscall and copy maps are used: syscalls counted or copies accounted
    /// (fork timing alone uses neither).
    fn maps_used(&self) -> bool {
        self.syscalls || self.copies
    }

    /// The syscall and copy maps, when they are used.
    pub fn take(&self, obj: &mut Object) -> Result<Option<CopyMaps>> {
        self.maps_used().then(|| CopyMaps::take(obj)).transpose()
    }
}

impl Setup for CopySetup {
    fn configure<'a>(&'a self, globals: &mut Globals, loader: &mut EbpfLoader<'a>) {
        if !self.any() {
            return;
        }
        // Unused maps keep their declared (small) sizes.
        if self.maps_used() {
            size_maps(loader);
        }
        globals.copies = match &self.cfg {
            Some(c) => c.config(self.syscalls, self.copies, self.time_forks),
            None => config::Copies {
                count_syscalls: u32::from(self.syscalls),
                ..config::Copies::default()
            },
        };
    }

    fn btf_tracepoints(&self) -> Vec<(String, String)> {
        [
            ("sys_enter", self.any()),
            ("sys_exit", self.copies || self.time_forks),
        ]
        .into_iter()
        .filter(|&(_, on)| on)
        .map(|(p, _)| (p.into(), p.into()))
        .collect()
    }

    fn attach(&self, obj: &mut Object, kernel: &aya::Btf) -> Result<()> {
        setup::attach_btf_tracepoints(obj, &self.btf_tracepoints(), kernel)
    }
}
