//! The copy and syscall programs' set-up: whether they run, what they need from tracefs
//! and BTF, their globals and map sizes, attaching them, and their maps.

use anyhow::Result;
use aya::EbpfLoader;
use btf_rs::Btf;

use super::{
    CopyMaps,
    layout::CopyConfig,
    maps::{attach_copies, size_maps},
};
use crate::collect::{
    globals::Globals,
    object::Object,
    setup::{self, Setup},
    tracefs,
};

/// Whether a view wants copy-path accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Want {
    #[default]
    Off,
    /// When this kernel offers what it needs (tracefs and the syscall tracepoints'
    /// formats, the fd-table offsets in BTF); otherwise one warning and the view goes on
    /// without it.
    IfAvailable,
    /// Or fail.
    Required,
}

#[derive(Debug)]
pub struct CopySetup {
    /// Count every syscall per process (raw tracepoint `sys_enter`, no tracefs needed).
    syscalls: bool,
    copies: Option<CopyConfig>,
}

impl CopySetup {
    pub fn resolve(syscalls: bool, want: Want, vmlinux: &Btf) -> Result<Self> {
        let resolved = || CopyConfig::resolve(&tracefs::root()?, vmlinux);
        let copies = match want {
            Want::Off => None,
            Want::Required => Some(resolved()?),
            Want::IfAvailable => match resolved() {
                Ok(c) => Some(c),
                Err(e) => {
                    eprintln!("proclens: warning: {e:#}; copy paths are not accounted");
                    None
                }
            },
        };
        Ok(Self {
            syscalls: syscalls || copies.is_some(),
            copies,
        })
    }

    /// Whether copy paths are accounted.
    pub fn copies_on(&self) -> bool {
        self.copies.is_some()
    }

    /// The syscall and copy maps, when the programs run.
    pub fn take(&self, obj: &mut Object) -> Result<Option<CopyMaps>> {
        self.syscalls.then(|| CopyMaps::take(obj)).transpose()
    }
}

impl Setup for CopySetup {
    fn configure<'a>(&'a self, globals: &mut Globals, loader: &mut EbpfLoader<'a>) {
        if self.syscalls {
            size_maps(loader);
        }
        if let Some(cfg) = &self.copies {
            globals.copies = cfg.config();
        }
    }

    fn attach(&self, obj: &mut Object, _kernel: &aya::Btf) -> Result<()> {
        if self.syscalls {
            setup::attach_raw_tracepoint(obj, "sys_enter_all", "sys_enter")?;
        }
        if let Some(cfg) = &self.copies {
            attach_copies(obj, cfg).map_err(setup::load_error)?;
        }
        Ok(())
    }
}
