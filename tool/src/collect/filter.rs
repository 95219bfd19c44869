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
    /// The offsets to walk `task->cgroups` instead of calling the helper, if BTF has them.
    walk: Option<CgroupWalkOffsets>,
}

impl FilterSetup {
    pub fn resolve(include_self: bool, cgroup: Option<&CgroupFilter>, vmlinux: &Btf) -> Self {
        let walk = CgroupWalkOffsets::from_btf(vmlinux).ok();
        let w = walk.unwrap_or_default();
        Self {
            cfg: config::Filter {
                self_tgid: if include_self { 0 } else { std::process::id() },
                cgroup_level: cgroup.map_or(0, |c| c.level),
                cgroup_id: cgroup.map_or(0, |c| c.id),
                cgroup_walk: 0,
                task_cgroups: w.task_cgroups,
                css_set_dfl_cgrp: w.css_set_dfl_cgrp,
                cgroup_level_off: w.cgroup_level,
                cgroup_ancestor_ids: w.cgroup_ancestor_ids,
                _pad: 0,
            },
            walk,
        }
    }

    /// Whether the programs compare cgroups (only then does the helper matter: without a
    /// filter the verifier sees the id as a constant 0 and prunes the call).
    pub fn filters_cgroup(&self) -> bool {
        self.cfg.cgroup_id != 0
    }

    /// Switches to reading the task's cgroup through BTF offsets, for a kernel whose
    /// tracing programs may not call the helper (5.10); an error when its BTF lacks them.
    pub fn walk_instead(&mut self) -> Result<()> {
        if self.walk.is_none() {
            return Err(Fatal::KernelUnsupported(
                "the cgroup filter is unavailable on this kernel: its tracing programs may not call bpf_get_current_ancestor_cgroup_id and its BTF has no struct cgroup.ancestor_ids to read instead".into(),
            )
            .into());
        }
        self.cfg.cgroup_walk = 1;
        Ok(())
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
