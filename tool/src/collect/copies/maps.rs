//! The syscall and copy programs' maps: sized for the machine, read, and pruned.

use std::{collections::HashMap as StdHashMap, path::Path};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{HashMap, MapData, PerCpuHashMap},
};
use proclens_common::copies::{CopyKey, CopyStats, Inflight, ProcKey, SysKey};

use super::batch;

use crate::{
    collect::{procfs, setup::take_map},
    model::proctable::Key,
};

/// How many entries a map may hold: as many as fit a share of this machine's memory
/// (1/256 of it), each entry's per-CPU values counted once per possible CPU, between a
/// floor and a cap: a machine with more CPUs holds as many entries as its memory allows,
/// not a fixed budget divided by its CPUs. The maps are preallocated (created at start,
/// and deleting an entry is then cheap: allocated as they come, each delete of a
/// fork storm's entries cost ~100 µs in the kernel's allocator); the views free the
/// entries of processes that have gone every interval, `run` every 250 ms, so the
/// entries in use are the live processes' and those that finished since. Entries that
/// do not fit are counted (`syscall_map_full`, `copy_map_full`), never silently dropped.
fn entries_for(entry_bytes: usize, per_cpu_bytes: usize, cpus: usize, mem_bytes: u64) -> u32 {
    const FLOOR: u64 = 16_384;
    const CAP: u64 = 1 << 16;
    // Key, value and the hash table's own element header.
    let each = (entry_bytes + 64 + per_cpu_bytes * cpus.max(1)) as u64;
    (mem_bytes / 256 / each).clamp(FLOOR, CAP) as u32
}

/// Total memory (`/proc/meminfo` MemTotal), 1 GiB when unknown.
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
    let cpus = aya::util::nr_cpus().unwrap_or(1);
    let mem = machine_memory();
    let syscalls = entries_for(size_of::<SysKey>(), 8, cpus, mem);
    loader
        .map_max_entries("SYSCALLS", syscalls)
        .map_max_entries("COMMS", syscalls)
        .map_max_entries(
            "COPIES",
            entries_for(size_of::<CopyKey>(), size_of::<CopyStats>(), cpus, mem),
        )
        .map_max_entries(
            "INFLIGHT",
            entries_for(4 + size_of::<Inflight>(), 0, cpus, mem),
        );
}

/// The per-CPU maps of syscall counts and path totals, and the per-thread calls in flight.
pub struct CopyMaps {
    syscalls: PerCpuHashMap<MapData, SysKey, u64>,
    copies: PerCpuHashMap<MapData, CopyKey, CopyStats>,
    inflight: HashMap<MapData, u32, Inflight>,
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
            syscalls: PerCpuHashMap::try_from(take_map(ebpf, "SYSCALLS")?)?,
            copies: PerCpuHashMap::try_from(take_map(ebpf, "COPIES")?)?,
            inflight: HashMap::try_from(take_map(ebpf, "INFLIGHT")?)?,
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
        Ok(summed(&self.syscalls, "SYSCALLS", |v| v.iter().sum())?.into_iter().collect())
    }

    /// Path totals per (process, op, kinds), summed over CPUs.
    pub fn copies(&self) -> Result<StdHashMap<CopyKey, CopyStats>> {
        Ok(summed(&self.copies, "COPIES", sum_stats)?.into_iter().collect())
    }

    /// The command name the kernel saw for process `key` (see the `COMMS` map), if any.
    pub fn comm(&self, key: Key) -> Option<String> {
        let pk = ProcKey {
            tgid: key.tgid,
            _pad: 0,
            start_ns: key.start_ns,
        };
        let raw = self.comms.get(&pk, 0).ok()?;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        Some(String::from_utf8_lossy(&raw[..end]).into_owned())
    }

    /// Reads the final figures of processes that have gone and deletes their entries, so
    /// the maps hold only live processes (however many come and go) and no count is lost:
    /// a process's last syscalls (exit_group among them) may have come after the
    /// interval's snapshot, and a dead process adds nothing between this read and the
    /// delete. A process is (tgid, start): a new process that got a gone one's pid keeps
    /// its entries. The per-thread in-flight slots of threads that no longer exist go too
    /// (the kernel keeps a thread's slot between calls). Names (`COMMS`) stay until
    /// [`CopyMaps::forget_names`].
    pub fn take_gone(&mut self, gone: &[Key]) -> Result<Snapshot> {
        self.prune_inflight()?;
        let mut out = Snapshot::default();
        if gone.is_empty() {
            return Ok(out);
        }
        let gone: std::collections::HashSet<Key> = gone.iter().copied().collect();
        let is_gone = |tgid: u32, start_ns: u64| gone.contains(&Key { tgid, start_ns });
        out.syscalls = take_where(&self.syscalls, "SYSCALLS", |k| is_gone(k.tgid, k.start_ns), |v| v.iter().sum())?;
        out.copies = take_where(&self.copies, "COPIES", |k| is_gone(k.tgid, k.start_ns), sum_stats)?;
        Ok(out)
    }

    /// Deletes the kernel-recorded names of `gone` processes (after they were named).
    pub fn forget_names(&mut self, gone: &[Key]) -> Result<()> {
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

    fn prune_inflight(&mut self) -> Result<()> {
        let all = batch::lookup_all(&self.inflight, size_of::<Inflight>()).context("reading INFLIGHT")?;
        let stale: Vec<u32> = all
            .into_iter()
            .filter(|(tid, v)| {
                // SAFETY: the kernel wrote a whole `Inflight`; Pod, any bytes are valid.
                let v: Inflight = unsafe { std::ptr::read_unaligned(v.as_ptr().cast()) };
                !Path::new(&format!("/proc/{}/task/{tid}", v.key.tgid)).exists()
            })
            .map(|(tid, _)| tid)
            .collect();
        batch::delete(&self.inflight, &stale).context("pruning INFLIGHT")
    }
}

fn sum_stats(per_cpu: &[CopyStats]) -> CopyStats {
    let mut s = CopyStats::default();
    for c in per_cpu {
        s.bytes += c.bytes;
        s.calls += c.calls;
        s.errors += c.errors;
        s.would_block += c.would_block;
        s.interrupted += c.interrupted;
    }
    s
}

/// Every entry of a per-CPU map, read in batches, each value folded over the CPUs by
/// `sum`.
fn summed<K: Pod, V: Pod, T>(
    map: &PerCpuHashMap<MapData, K, V>,
    name: &str,
    sum: impl Fn(&[V]) -> T,
) -> Result<Vec<(K, T)>> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e).context("possible CPUs")?;
    // Each CPU's value, rounded up to 8 bytes (the kernel's layout of per-CPU values).
    let stride = size_of::<V>().next_multiple_of(8);
    let entries = batch::lookup_all(map, stride * cpus).with_context(|| format!("reading {name}"))?;
    Ok(entries
        .into_iter()
        .map(|(k, bytes)| {
            let per_cpu: Vec<V> = (0..cpus)
                // SAFETY: `cpus` values of `stride` bytes each; Pod, any bytes are valid.
                .map(|c| unsafe { std::ptr::read_unaligned(bytes.as_ptr().add(c * stride).cast()) })
                .collect();
            (k, sum(&per_cpu))
        })
        .collect())
}

/// Reads and deletes the entries of a per-CPU map whose key `gone` selects; returns
/// their values, folded over the CPUs by `sum`.
fn take_where<K: Pod + Eq + std::hash::Hash, V: Pod, T>(
    map: &PerCpuHashMap<MapData, K, V>,
    name: &str,
    gone: impl Fn(&K) -> bool,
    sum: impl Fn(&[V]) -> T,
) -> Result<StdHashMap<K, T>> {
    let taken: StdHashMap<K, T> = summed(map, name, sum)?
        .into_iter()
        .filter(|(k, _)| gone(k))
        .collect();
    let keys: Vec<K> = taken.keys().copied().collect();
    batch::delete(map, &keys).with_context(|| format!("pruning {name}"))?;
    Ok(taken)
}

/// The processes among `keys` that have gone: a pid belongs to one live process at a
/// time, so of several processes with one pid all but the latest started have gone; the
/// latest (or only) one lives while /proc/PID/stat shows its start time (to the clock
/// tick). A process whose start the kernel could not read (0) lives while its pid exists.
pub fn gone_processes(keys: &[Key], tick_ns: u64) -> Vec<Key> {
    let mut latest: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
    for k in keys {
        let e = latest.entry(k.tgid).or_insert(k.start_ns);
        *e = (*e).max(k.start_ns);
    }
    keys.iter()
        .copied()
        .filter(|k| {
            if latest.get(&k.tgid).is_some_and(|&l| l > k.start_ns) {
                return true;
            }
            if k.start_ns == 0 {
                return !procfs::exists(k.tgid);
            }
            procfs::stat_of(k.tgid, k.start_ns, tick_ns).is_none()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_sizes_follow_the_machine() {
        const GIB: u64 = 1 << 30;
        // This machine's kind: 2 CPUs, 24 GiB: the cap.
        assert_eq!(entries_for(16, 8, 2, 24 * GIB), 1 << 16);
        // 256 CPUs but 16 GiB: memory decides, not the CPU count alone.
        assert_eq!(entries_for(16, 8, 256, 16 * GIB), (GIB / 16 / 2128) as u32);
        assert_eq!(entries_for(16, 8, 4096, GIB), 16_384, "floor");
    }
}
