//! Reading (and pruning) the after-fork programs' maps: copy-on-write faults and
//! fork-family times per process, and the processes that have forked.

use std::collections::HashMap as StdHashMap;

use anyhow::{Context as _, Result};
use aya::maps::{HashMap, MapData, PerCpuHashMap};
use proclens_common::{
    copies::ProcKey,
    forks::{FaultKey, ForkTimes},
};

use crate::{
    collect::{
        percpu::{WALK_BOUND, remove_where, removed, summed},
        setup::take_map,
    },
    model::proctable::Key,
};

/// One reading of the per-process maps.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub faults: StdHashMap<FaultKey, u64>,
    pub times: StdHashMap<ProcKey, ForkTimes>,
}

pub struct ForksMaps {
    faults: PerCpuHashMap<MapData, FaultKey, u64>,
    times: PerCpuHashMap<MapData, ProcKey, ForkTimes>,
    forkers: HashMap<MapData, ProcKey, u64>,
}

impl ForksMaps {
    pub(super) fn take(obj: &mut aya::Ebpf) -> Result<Self> {
        Ok(Self {
            faults: PerCpuHashMap::try_from(take_map(obj, "COW_FAULTS")?)?,
            times: PerCpuHashMap::try_from(take_map(obj, "FORK_TIMES")?)?,
            forkers: HashMap::try_from(take_map(obj, "FORKERS")?)?,
        })
    }

    /// Both per-process maps, summed over CPUs.
    pub fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            faults: summed(&self.faults, "COW_FAULTS", |c| c.iter().sum())?,
            times: summed(&self.times, "FORK_TIMES", |per_cpu| {
                let mut t = ForkTimes::default();
                for c in per_cpu.iter() {
                    for k in 0..t.calls.len() {
                        t.calls[k] += c.calls[k];
                        t.ns[k] += c.ns[k];
                    }
                    t.failed += c.failed;
                }
                t
            })?,
        })
    }

    /// Deletes the entries of processes that have gone (after their last report).
    pub fn prune(&mut self, gone: &crate::collect::gone::Gone) -> Result<()> {
        if gone.is_empty() {
            return Ok(());
        }
        let is_gone = |tgid: u32, start_ns: u64| gone.contains(&Key { tgid, start_ns });
        remove_where(&mut self.faults, "COW_FAULTS", |k| {
            is_gone(k.tgid, k.start_ns)
        })?;
        remove_where(&mut self.times, "FORK_TIMES", |k| {
            is_gone(k.tgid, k.start_ns)
        })?;
        let forkers: Vec<ProcKey> = self
            .forkers
            .keys()
            .take(WALK_BOUND)
            .filter_map(Result::ok)
            .filter(|k| is_gone(k.tgid, k.start_ns))
            .collect();
        for k in forkers {
            removed(self.forkers.remove(&k)).context("pruning FORKERS")?;
        }
        Ok(())
    }
}
