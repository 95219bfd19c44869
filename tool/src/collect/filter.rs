//! Which tasks the programs trace (tool-ebpf/src/filter.rs): everything but proclens
//! itself, optionally only one cgroup v2 subtree, compared in the kernel.

use anyhow::Result;
use aya::EbpfLoader;
use btf_rs::Btf;
use proclens_common::config;

use super::{
    btf::CgroupWalkOffsets, cgroup::CgroupFilter, globals::Globals, object::Object, setup::Setup,
};
use crate::error::Fatal;

/// The probe program that calls `bpf_get_current_ancestor_cgroup_id`: loaded (never
/// attached) to learn whether this kernel's tracing programs may call it.
pub const ANCESTOR_PROBE: &str = "probe_ancestor_cgroup";

#[derive(Debug, Clone)]
pub struct FilterSetup {
    cfg: config::Filter,
}

impl FilterSetup {
    /// The filter, with the offsets to find any task's cgroup (the thread iterators visit
    /// every task, not only the current one): without them a cgroup filter is an error.
    pub fn resolve(
        include_self: bool,
        cgroup: Option<&CgroupFilter>,
        vmlinux: &Btf,
    ) -> Result<Self> {
        let walk = CgroupWalkOffsets::from_btf(vmlinux);
        if cgroup.is_some()
            && let Err(e) = &walk
        {
            return Err(Fatal::KernelUnsupported(format!(
                "the cgroup filter is unavailable on this kernel: its BTF does not show how to find a task's cgroup ({e:#})"
            ))
            .into());
        }
        let w = walk.unwrap_or_default();
        let (kn, kn_id) = w.ancestor_ptrs.unwrap_or_default();
        Ok(Self {
            cfg: config::Filter {
                self_tgid: if include_self { 0 } else { std::process::id() },
                cgroup_level: cgroup.map_or(0, |c| c.level),
                cgroup_id: cgroup.map_or(0, |c| c.id),
                cgroup_walk: 0,
                task_cgroups: w.task_cgroups,
                css_set_dfl_cgrp: w.css_set_dfl_cgrp,
                cgroup_level_off: w.cgroup_level,
                cgroup_ancestor_ids: w.cgroup_ancestor_ids,
                cgroup_ancestor_ptrs: u32::from(w.ancestor_ptrs.is_some()),
                cgroup_kn: kn,
                kernfs_node_id: kn_id,
            },
        })
    }

    /// Whether the programs compare cgroups (only then does the helper matter: without a
    /// filter the verifier sees the id as a constant 0 and prunes the call).
    pub fn filters_cgroup(&self) -> bool {
        self.cfg.cgroup_id != 0
    }

    /// Switches to reading the current task's cgroup through BTF offsets (resolved with
    /// the filter), for a kernel whose tracing programs may not call the helper (5.10).
    pub fn walk_instead(&mut self) {
        self.cfg.cgroup_walk = 1;
    }
}

impl Setup for FilterSetup {
    fn configure<'a>(&'a self, globals: &mut Globals, _loader: &mut EbpfLoader<'a>) {
        globals.filter = self.cfg;
    }

    fn attach(&self, _obj: &mut Object, _kernel: &aya::Btf) -> Result<()> {
        // The filter is part of every program; it attaches nothing of its own.
        Ok(())
    }
}
