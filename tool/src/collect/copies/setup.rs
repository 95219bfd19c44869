//! The syscall programs' set-up: which of their parts run (the per-process syscall count,
//! the copy-path accounting), what they need from BTF, their globals and map sizes,
//! attaching them, and their maps.

use anyhow::Result;
use aya::EbpfLoader;
use btf_rs::Btf;
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
    /// What BTF says (`None` when it could not say, and copies are off).
    cfg: Option<CopyConfig>,
}

impl CopySetup {
    pub fn resolve(syscalls: bool, want: Want, vmlinux: &Btf) -> Result<Self> {
        if !syscalls && want == Want::Off {
            return Ok(Self {
                syscalls,
                copies: false,
                cfg: None,
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
        })
    }

    /// Whether copy paths are accounted.
    pub fn copies_on(&self) -> bool {
        self.copies
    }

    fn any(&self) -> bool {
        self.syscalls || self.copies
    }

    /// The syscall and copy maps, when the programs run.
    pub fn take(&self, obj: &mut Object) -> Result<Option<CopyMaps>> {
        self.any().then(|| CopyMaps::take(obj)).transpose()
    }
}

impl Setup for CopySetup {
    fn configure<'a>(&'a self, globals: &mut Globals, loader: &mut EbpfLoader<'a>) {
        if !self.any() {
            return;
        }
        size_maps(loader);
        globals.copies = match &self.cfg {
            Some(c) => c.config(self.syscalls, self.copies),
            None => config::Copies {
                count_syscalls: u32::from(self.syscalls),
                ..config::Copies::default()
            },
        };
    }

    fn attach(&self, obj: &mut Object, kernel: &aya::Btf) -> Result<()> {
        if self.any() {
            setup::attach_btf_tracepoint(obj, "sys_enter", kernel)?;
        }
        if self.copies {
            setup::attach_btf_tracepoint(obj, "sys_exit", kernel)?;
        }
        Ok(())
    }
}
