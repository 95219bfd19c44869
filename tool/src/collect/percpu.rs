//! Reading and pruning per-CPU hash maps (the after-fork and interrupt programs' maps):
//! a walk bounded against restarts, each value folded over the CPUs, and deletes that
//! tolerate an entry already gone.

use std::collections::HashMap as StdHashMap;

use anyhow::{Context as _, Result};
use aya::{
    Pod,
    maps::{MapData, MapError, PerCpuHashMap, PerCpuValues},
};

/// A delete that found no entry is not an error: the kernel (or an earlier prune) may
/// have deleted it, or never made it (a full map, counted in the kernel). aya reports it
/// as the syscall's ENOENT, not as `KeyNotFound`.
pub(crate) fn removed(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// Upper bound on entries read per walk (the maps' sizes times a margin for restarts).
pub(crate) const WALK_BOUND: usize = 4 * 65536;

/// Every entry of a per-CPU map (at most [`WALK_BOUND`]: a walk restarts when entries
/// are deleted under it), each value folded over the CPUs by `sum`. An entry deleted
/// while the walk reaches it is skipped.
pub(crate) fn summed<K: Pod + Eq + std::hash::Hash, V: Pod, T>(
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
pub(crate) fn remove_where<K: Pod, V: Pod>(
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
