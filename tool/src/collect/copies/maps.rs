//! The syscall and copy programs' maps: sized for the machine, read, and pruned.

use std::{collections::HashMap as StdHashMap, path::Path};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{HashMap, MapData},
};
use proclens_common::copies::{CopyKey, CopyStats, Pairing, ProcKey, SysKey};

use super::batch;

use crate::{
    collect::{gone, setup::take_map},
    model::proctable::Key,
};

/// How many entries a map may hold: as many as fit a share of this machine's memory
/// (1/512 of it, `entry_bytes` each plus the hash table's own header), between a floor
/// and a cap. The syscall and copy maps key each count by the CPU that made it (see
/// `SysKey::cpu`), so an entry exists only for the CPUs a process ran on: unlike a per-CPU
/// map, a machine with more CPUs does not hold fewer processes, nor preallocate a value
/// per possible CPU for each of them. The maps are preallocated (one allocation at start,
/// and deleting an entry is then cheap); the views free the entries of processes that
/// have gone every interval, `run` every 250 ms, so the entries in use are the live
/// processes' and those that finished since. Entries that do not fit are counted
/// (`syscall_map_full`, `copy_map_full`), never silently dropped.
fn entries_for(entry_bytes: usize, mem_bytes: u64) -> u32 {
    const FLOOR: u64 = 16_384;
    const CAP: u64 = 1 << 17;
    let each = (entry_bytes + 64) as u64;
    (mem_bytes / 512 / each).clamp(FLOOR, CAP) as u32
}

/// [`entries_for`] this machine.
pub(crate) fn entries_for_machine(entry_bytes: usize) -> u32 {
    entries_for(entry_bytes, machine_memory())
}

/// Total memory (`/proc/meminfo` `MemTotal`), 1 GiB when unknown.
fn machine_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(1 << 30, |kb| kb * 1024)
}

/// Sizes the syscall programs' maps for this machine (before loading); `COMMS` like
/// `SYSCALLS`: every process with a syscall entry should have room for its name.
pub(super) fn size_maps(loader: &mut EbpfLoader<'_>) {
    let mem = machine_memory();
    let syscalls = entries_for(size_of::<SysKey>() + 8, mem);
    loader
        .map_max_entries("SYSCALLS", syscalls)
        .map_max_entries("COMMS", syscalls)
        .map_max_entries(
            "COPIES",
            entries_for(size_of::<CopyKey>() + size_of::<CopyStats>(), mem),
        )
        .map_max_entries(
            "PAIRING",
            entries_for(4 + size_of::<Pairing>(), mem).min(1 << 16),
        );
}

/// The maps of syscall counts and path totals, the per-thread calls in flight, and the
/// kernel-recorded names.
pub struct CopyMaps {
    syscalls: HashMap<MapData, SysKey, u64>,
    copies: HashMap<MapData, CopyKey, CopyStats>,
    pairing: HashMap<MapData, u32, Pairing>,
    comms: HashMap<MapData, ProcKey, [u8; 16]>,
}

/// One reading of the syscall and copy-path maps.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub copies: StdHashMap<CopyKey, CopyStats>,
    pub syscalls: StdHashMap<SysKey, u64>,
}

impl Snapshot {
    /// The processes it holds, once each.
    pub fn processes(&self) -> Vec<Key> {
        let mut v: Vec<Key> = self
            .syscalls
            .keys()
            .map(|k| Key {
                tgid: k.tgid,
                start_ns: k.start_ns,
            })
            .chain(self.copies.keys().map(|k| Key {
                tgid: k.tgid,
                start_ns: k.start_ns,
            }))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Replaces entries with later readings of them (`take_gone`'s final figures).
    pub fn update(&mut self, later: Snapshot) {
        self.syscalls.extend(later.syscalls);
        self.copies.extend(later.copies);
    }
}

impl CopyMaps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Self {
            syscalls: HashMap::try_from(take_map(ebpf, "SYSCALLS")?)?,
            copies: HashMap::try_from(take_map(ebpf, "COPIES")?)?,
            pairing: HashMap::try_from(take_map(ebpf, "PAIRING")?)?,
            comms: HashMap::try_from(take_map(ebpf, "COMMS")?)?,
        })
    }

    /// Both maps, read once.
    pub fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            copies: self.copies()?,
            syscalls: self.syscalls()?,
        })
    }

    /// Syscall counts per (process, number), summed over CPUs.
    pub fn syscalls(&self) -> Result<StdHashMap<SysKey, u64>> {
        Ok(summed(
            read(&self.syscalls, "SYSCALLS")?,
            SysKey::any_cpu,
            |a, b| *a += b,
        ))
    }

    /// Path totals per (process, op, kinds), summed over CPUs.
    pub fn copies(&self) -> Result<StdHashMap<CopyKey, CopyStats>> {
        Ok(summed(
            read(&self.copies, "COPIES")?,
            CopyKey::any_cpu,
            add_stats,
        ))
    }

    /// The command name the kernel saw for process `key` (see the `COMMS` map), if any.
    pub fn comm(&self, key: Key) -> Option<String> {
        let pk = ProcKey {
            tgid: key.tgid,
            _pad: 0,
            start_ns: key.start_ns,
        };
        let raw = self.comms.get(&pk, 0).ok()?;
        Some(crate::model::switches::comm_str(&raw))
    }

    /// Reads the final figures of processes that have gone and deletes their entries, so
    /// the maps hold only live processes (however many come and go) and no count is lost:
    /// a process's last syscalls (`exit_group` among them) may have come after the
    /// interval's snapshot, and a dead process adds nothing between this read and the
    /// delete. A process is (tgid, start): a new process that got a gone one's pid keeps
    /// its entries. The per-thread pairing entries of threads that no longer exist go too
    /// (the kernel keeps a thread's entry between calls). Names (`COMMS`) stay until
    /// [`CopyMaps::forget_names`].
    pub fn take_gone(&mut self, gone: &gone::Gone) -> Result<Snapshot> {
        self.prune_pairing()?;
        let mut out = Snapshot::default();
        if gone.is_empty() {
            return Ok(out);
        }
        let is_gone = |tgid: u32, start_ns: u64| gone.contains(&Key { tgid, start_ns });
        let syscalls = take_where(&self.syscalls, "SYSCALLS", |k| is_gone(k.tgid, k.start_ns))?;
        out.syscalls = summed(syscalls, SysKey::any_cpu, |a, b| *a += b);
        let copies = take_where(&self.copies, "COPIES", |k| is_gone(k.tgid, k.start_ns))?;
        out.copies = summed(copies, CopyKey::any_cpu, add_stats);
        Ok(out)
    }

    /// Deletes the kernel-recorded names of `gone` processes (after they were named).
    pub fn forget_names(&mut self, gone: &gone::Gone) -> Result<()> {
        let keys: Vec<ProcKey> = gone
            .iter()
            .map(|k| ProcKey {
                tgid: k.tgid,
                _pad: 0,
                start_ns: k.start_ns,
            })
            .collect();
        batch::delete(&self.comms, &keys).context("pruning COMMS")
    }

    fn prune_pairing(&mut self) -> Result<()> {
        prune_threads(&self.pairing, "PAIRING", |p| p.tgid)
    }
}

/// Deletes the entries of a per-thread map (keyed by thread id) whose thread no longer
/// exists (`tgid` of a value names its process).
pub(crate) fn prune_threads<V: Pod>(
    map: &HashMap<MapData, u32, V>,
    name: &str,
    tgid: impl Fn(&V) -> u32,
) -> Result<()> {
    let stale: Vec<u32> = read(map, name)?
        .into_iter()
        .filter(|(tid, v)| !Path::new(&format!("/proc/{}/task/{tid}", tgid(v))).exists())
        .map(|(tid, _)| tid)
        .collect();
    batch::delete(map, &stale).with_context(|| format!("pruning {name}"))
}

fn add_stats(s: &mut CopyStats, c: CopyStats) {
    s.bytes += c.bytes;
    s.calls += c.calls;
    s.errors += c.errors;
    s.would_block += c.would_block;
    s.interrupted += c.interrupted;
}

/// Every entry of a map, read in batches.
pub(crate) fn read<K: Pod, V: Pod>(
    map: &HashMap<MapData, K, V>,
    name: &str,
) -> Result<Vec<(K, V)>> {
    let entries =
        batch::lookup_all(map, size_of::<V>()).with_context(|| format!("reading {name}"))?;
    Ok(entries
        .into_iter()
        // SAFETY: the kernel wrote a whole `V`; Pod, any bytes are valid.
        .map(|(k, v)| (k, unsafe { std::ptr::read_unaligned(v.as_ptr().cast()) }))
        .collect())
}

/// Entries of every CPU summed into one per key (`any_cpu` drops a key's CPU).
pub(crate) fn summed<K: Eq + std::hash::Hash, V: Default>(
    entries: Vec<(K, V)>,
    any_cpu: impl Fn(&K) -> K,
    add: impl Fn(&mut V, V),
) -> StdHashMap<K, V> {
    let mut out: StdHashMap<K, V> = StdHashMap::with_capacity(entries.len());
    for (k, v) in entries {
        add(out.entry(any_cpu(&k)).or_default(), v);
    }
    out
}

/// Reads and deletes the entries of a map whose key `gone` selects.
pub(crate) fn take_where<K: Pod, V: Pod>(
    map: &HashMap<MapData, K, V>,
    name: &str,
    gone: impl Fn(&K) -> bool,
) -> Result<Vec<(K, V)>> {
    let taken: Vec<(K, V)> = read(map, name)?
        .into_iter()
        .filter(|(k, _)| gone(k))
        .collect();
    let keys: Vec<K> = taken.iter().map(|(k, _)| *k).collect();
    batch::delete(map, &keys).with_context(|| format!("pruning {name}"))?;
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_sizes_follow_the_machine() {
        const GIB: u64 = 1 << 30;
        // This machine's kind (24 GiB), and any larger one: the cap.
        assert_eq!(entries_for(32, 24 * GIB), 1 << 17);
        // 4 GiB: 8 MiB of 96-byte entries.
        assert_eq!(entries_for(32, 4 * GIB), (8 << 20) / 96);
        assert_eq!(entries_for(32, GIB / 4), 16_384, "floor");
    }
}
