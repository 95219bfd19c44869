//! Reading (and pruning) the after-fork programs' maps: copy-on-write faults and
//! fork-family times per process, and the processes that have forked.

use std::collections::HashMap as StdHashMap;

use anyhow::{Context as _, Result};
use aya::{
    Pod,
    maps::{HashMap, MapData, MapError, PerCpuHashMap, PerCpuValues},
};
use proclens_common::{
    copies::ProcKey,
    forks::{FaultKey, ForkTimes},
};

use crate::{collect::setup::take_map, model::proctable::Key};

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
    pub fn prune(&mut self, gone: &[Key]) -> Result<()> {
        if gone.is_empty() {
            return Ok(());
        }
        let gone: std::collections::HashSet<Key> = gone.iter().copied().collect();
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

/// A delete that found no entry is not an error: the kernel (or an earlier prune) may
/// have deleted it, or never made it (a full map, counted in the kernel). aya reports it
/// as the syscall's ENOENT, not as `KeyNotFound`.
fn removed(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// Upper bound on entries read per walk (the maps' sizes times a margin for restarts).
const WALK_BOUND: usize = 4 * 65536;

/// Every entry of a per-CPU map (at most [`WALK_BOUND`]: a walk restarts when entries
/// are deleted under it), each value folded over the CPUs by `sum`. An entry deleted
/// while the walk reaches it is skipped.
fn summed<K: Pod + Eq + std::hash::Hash, V: Pod, T>(
    map: &PerCpuHashMap<MapData, K, V>,
    name: &str,
    sum: impl Fn(&PerCpuValues<V>) -> T,
) -> Result<StdHashMap<K, T>> {
    let mut out = StdHashMap::new();
    for item in map.iter().take(WALK_BOUND) {
        match item {
            Ok((k, per_cpu)) => {
                out.insert(k, sum(&per_cpu));
            }
            Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(e).with_context(|| format!("reading {name}")),
        }
    }
    Ok(out)
}

/// Deletes the entries of a per-CPU map whose key `gone` selects (keys collected first:
/// deleting during the walk would restart it).
fn remove_where<K: Pod, V: Pod>(
    map: &mut PerCpuHashMap<MapData, K, V>,
    name: &str,
    gone: impl Fn(&K) -> bool,
) -> Result<()> {
    let keys: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| gone(k))
        .collect();
    for k in keys {
        removed(map.remove(&k)).with_context(|| format!("pruning {name}"))?;
    }
    Ok(())
}
