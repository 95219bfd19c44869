//! Which tasks the programs trace (tool-ebpf/src/filter.rs): everything but proclens
//! itself, optionally only the processes of `-p`, those whose name contains `--comm`,
//! and one cgroup v2 subtree, compared in the kernel before anything else.

use crate::collect::btf::Btf;
use anyhow::{Context as _, Result};
use aya::{EbpfLoader, maps::HashMap};
use proclens_common::config::{self, MAX_PIDS, PIDS_IN_MAP};

use super::{
    btf::CgroupWalkOffsets,
    cgroup::CgroupFilter,
    globals::Globals,
    object::Object,
    setup::{self, Setup},
};
use crate::error::Fatal;

/// The probe program that calls `bpf_get_current_ancestor_cgroup_id`: loaded (never
/// attached) to learn whether this kernel's tracing programs may call it.
const ANCESTOR_PROBE: &str = "probe_ancestor_cgroup";

/// The programs that forget a thread's `--comm` decision when its process execs or it is
/// renamed (a new name) and when it exits (its id may go to a new thread).
const COMM_PROGRAMS: [(&str, &str); 3] = [
    ("filter_exec", "sched_process_exec"),
    ("filter_rename", "task_rename"),
    ("filter_exit", "sched_process_exit"),
];

/// What the programs select, besides proclens's own threads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selected {
    /// Only these processes (`-p`); all when empty.
    pub pids: Vec<u32>,
    /// Only tasks whose name, or whose process's name, contains this (`--comm`).
    pub comm: Option<String>,
    /// Only tasks in this cgroup v2 subtree.
    pub cgroup: Option<CgroupFilter>,
}

#[derive(Debug, Clone)]
pub struct FilterSetup {
    cfg: config::Filter,
    /// `-p` beyond what the config holds, for the `SELECTED_PIDS` map.
    pids_in_map: Vec<u32>,
}

impl FilterSetup {
    /// The filter, with the offsets to find any task's cgroup (the thread iterators visit
    /// every task, not only the current one): without them a cgroup filter is an error.
    pub fn resolve(include_self: bool, sel: &Selected, vmlinux: &Btf) -> Result<Self> {
        let cgroup = sel.cgroup.as_ref();
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
        let mut pids = [0u32; MAX_PIDS];
        let (npids, pids_in_map) = if sel.pids.len() > MAX_PIDS {
            (PIDS_IN_MAP, sel.pids.clone())
        } else {
            pids[..sel.pids.len()].copy_from_slice(&sel.pids);
            (sel.pids.len() as u32, Vec::new())
        };
        let mut comm = [0u8; 16];
        let text = sel.comm.as_deref().unwrap_or("").as_bytes();
        // The command line refuses longer ones (see `cli::Filter`).
        anyhow::ensure!(text.len() < comm.len(), "--comm longer than a command name");
        comm[..text.len()].copy_from_slice(text);
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
                npids,
                pids,
                comm_len: text.len() as u32,
                comm,
            },
            pids_in_map,
        })
    }

    /// A cgroup filter calls `bpf_get_current_ancestor_cgroup_id`, which older kernels
    /// (5.10) do not offer tracing programs: asks `obj`'s verifier (the probe program),
    /// and where it refuses, switches to walking the current task's cgroup through BTF
    /// offsets (resolved with the filter; same subtree semantics). Returns whether it
    /// switched: the object must then be loaded again. Without a filter the verifier sees
    /// the id as a constant 0 and prunes the call: nothing to ask.
    pub fn walk_if_refused(&mut self, obj: &mut Object) -> Result<bool> {
        if self.cfg.cgroup_id == 0 || setup::verifier_accepts(obj, ANCESTOR_PROBE)? {
            return Ok(false);
        }
        self.cfg.cgroup_walk = 1;
        Ok(true)
    }
}

impl Setup for FilterSetup {
    fn configure<'a>(&'a self, globals: &mut Globals, loader: &mut EbpfLoader<'a>) {
        globals.filter = self.cfg;
        if !self.pids_in_map.is_empty() {
            loader.map_max_entries("SELECTED_PIDS", self.pids_in_map.len() as u32);
        }
    }

    fn attach(&self, obj: &mut Object, kernel: &aya::Btf) -> Result<()> {
        // Filled before any program that reads it is attached (the filter comes first).
        if !self.pids_in_map.is_empty() {
            let mut map: HashMap<_, u32, u8> =
                HashMap::try_from(obj.map_mut("SELECTED_PIDS").context("map SELECTED_PIDS")?)?;
            for pid in &self.pids_in_map {
                map.insert(pid, 1, 0).context("filling SELECTED_PIDS")?;
            }
        }
        setup::attach_btf_tracepoints(obj, &self.btf_tracepoints(), kernel)
    }

    fn btf_tracepoints(&self) -> Vec<(String, String)> {
        if self.cfg.comm_len == 0 {
            return Vec::new();
        }
        COMM_PROGRAMS.map(|(p, tp)| (p.into(), tp.into())).to_vec()
    }
}
