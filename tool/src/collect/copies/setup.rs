//! The syscall programs' set-up: which of their parts run (the per-process syscall count,
//! the copy-path accounting), what they need from BTF, their globals and map sizes,
//! attaching them, and their maps.

use crate::collect::btf::Btf;
use anyhow::{Context as _, Result};
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

impl Want {
    /// `resolve`'s set-up as wanted: none when off; its error when required; when only
    /// wanted if available, none after one warning line that ends with `without` (what
    /// the view then goes without).
    pub fn resolve<T>(
        self,
        resolve: impl FnOnce() -> Result<T>,
        without: &str,
    ) -> Result<Option<T>> {
        match self {
            Want::Off => Ok(None),
            Want::Required => resolve().map(Some),
            Want::IfAvailable => Ok(resolve()
                .inspect_err(|e| eprintln!("proclens: warning: {e:#}; {without}"))
                .ok()),
        }
    }
}

#[derive(Debug)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "four independent parts of the syscall programs, each set by its own view option"
)]
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
    /// Leave out the calls of proclens's children before their exec (see
    /// [`Self::skip_spawning`]).
    skip_spawning: bool,
}

impl CopySetup {
    pub fn resolve(syscalls: bool, want: Want, vmlinux: &Btf) -> Result<Self> {
        if !syscalls && want == Want::Off {
            return Ok(Self {
                syscalls,
                copies: false,
                cfg: None,
                time_forks: false,
                skip_spawning: false,
            });
        }
        let (cfg, copies) = match (CopyConfig::resolve(vmlinux), want) {
            (Ok(c), w) => (Some(c), w != Want::Off),
            (Err(e), Want::Required) => return Err(e),
            (Err(e), w) => {
                if w == Want::IfAvailable {
                    eprintln!("proclens: warning: {e:#}; copy paths are not accounted");
                }
                // Counting needs only the registers: the number at `sys_exit`, the ABI.
                let counting = syscalls
                    .then(|| CopyConfig::counting(vmlinux).context("counting syscalls"))
                    .transpose()?;
                (counting, false)
            }
        };
        Ok(Self {
            syscalls,
            copies,
            cfg,
            time_forks: false,
            skip_spawning: false,
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

    /// Leaves out the calls proclens's own children make before their exec: `run`'s
    /// set-up between fork and exec (joining the command's cgroup, whose write returns
    /// inside it, dropping privileges) is not the command's.
    pub fn skip_spawning(&mut self) {
        self.skip_spawning = true;
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
            Some(c) => config::Copies {
                skip_spawning: u32::from(self.skip_spawning),
                ..c.config(self.syscalls, self.copies, self.time_forks)
            },
            None => config::Copies {
                count_syscalls: u32::from(self.syscalls),
                ..config::Copies::default()
            },
        };
    }

    fn btf_tracepoints(&self) -> Vec<(String, String)> {
        // One program per syscall, at its return; the entry only to time fork calls.
        [("sys_enter", self.time_forks), ("sys_exit", self.any())]
            .into_iter()
            .filter(|&(_, on)| on)
            .map(|(p, _)| (p.into(), p.into()))
            .collect()
    }

    fn attach(&self, obj: &mut Object, kernel: &aya::Btf) -> Result<()> {
        setup::attach_btf_tracepoints(obj, &self.btf_tracepoints(), kernel)
    }
}
