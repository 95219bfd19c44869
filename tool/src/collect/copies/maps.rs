//! The syscall and copy programs' maps: sized for the machine, read, and pruned.

use std::{collections::HashMap as StdHashMap, path::Path};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{HashMap, MapData, MapError, PerCpuHashMap, PerCpuValues},
};
use proclens_common::copies::{CopyKey, CopyStats, Inflight, ProcKey, SysKey};

use crate::{
    collect::{procfs, setup::take_map},
    model::proctable::Key,
};

/// How many entries a map may hold: as many as fit a share of this machine's memory
/// (1/256 of it), each entry's per-CPU values counted once per possible CPU, between a
/// floor and a cap (262,144: ~1,000 processes' worth per CPU on a 2-CPU machine... and
/// 4 MiB of hash buckets, the one part allocated up front). The maps allocate entries as
/// they come (`BPF_F_NO_PREALLOC`): a machine with more CPUs holds as many entries as its
/// memory allows, not fewer because it has more CPUs. Entries that do not fit are
/// counted (`syscall_map_full`, `copy_map_full`), never silently dropped.
fn entries_for(entry_bytes: usize, per_cpu_bytes: usize, cpus: usize, mem_bytes: u64) -> u32 {
    const FLOOR: u64 = 16_384;
    const CAP: u64 = 1 << 18;
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

/// Upper bound on entries read per walk (the maps' sizes times a margin for restarts).
const WALK_BOUND: usize = 4 * 65536;

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
        summed(&self.syscalls, "SYSCALLS", |per_cpu| per_cpu.iter().sum())
    }

    /// Path totals per (process, op, kinds), summed over CPUs.
    pub fn copies(&self) -> Result<StdHashMap<CopyKey, CopyStats>> {
        summed(&self.copies, "COPIES", sum_stats)
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
        out.syscalls = take_where(&mut self.syscalls, "SYSCALLS", |k| is_gone(k.tgid, k.start_ns), |v| v.iter().sum())?;
        out.copies = take_where(&mut self.copies, "COPIES", |k| is_gone(k.tgid, k.start_ns), sum_stats)?;
        Ok(out)
    }

    /// Deletes the kernel-recorded names of `gone` processes (after they were named).
    pub fn forget_names(&mut self, gone: &[Key]) -> Result<()> {
        for k in gone {
            let pk = ProcKey {
                tgid: k.tgid,
                _pad: 0,
                start_ns: k.start_ns,
            };
            removed(self.comms.remove(&pk)).context("pruning COMMS")?;
        }
        Ok(())
    }

    fn prune_inflight(&mut self) -> Result<()> {
        let stale: Vec<u32> = self
            .inflight
            .iter()
            .take(WALK_BOUND)
            .filter_map(Result::ok)
            .filter(|(tid, v)| !Path::new(&format!("/proc/{}/task/{tid}", v.key.tgid)).exists())
            .map(|(tid, _)| tid)
            .collect();
        for tid in stale {
            removed(self.inflight.remove(&tid)).context("pruning INFLIGHT")?;
        }
        Ok(())
    }
}

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

fn sum_stats(per_cpu: &PerCpuValues<CopyStats>) -> CopyStats {
    let mut s = CopyStats::default();
    for c in per_cpu.iter() {
        s.bytes += c.bytes;
        s.calls += c.calls;
        s.errors += c.errors;
        s.would_block += c.would_block;
        s.interrupted += c.interrupted;
    }
    s
}

/// Reads and deletes the entries of a per-CPU map whose key `gone` selects (keys
/// collected first: deleting during the walk would restart it); returns their values,
/// folded over the CPUs by `sum`.
fn take_where<K: Pod + Eq + std::hash::Hash, V: Pod, T>(
    map: &mut PerCpuHashMap<MapData, K, V>,
    name: &str,
    gone: impl Fn(&K) -> bool,
    sum: impl Fn(&PerCpuValues<V>) -> T,
) -> Result<StdHashMap<K, T>> {
    let keys: Vec<K> = map
        .keys()
        .take(WALK_BOUND)
        .filter_map(Result::ok)
        .filter(|k| gone(k))
        .collect();
    let mut out = StdHashMap::with_capacity(keys.len());
    for k in keys {
        match map.get(&k, 0) {
            Ok(v) => {
                out.insert(k, sum(&v));
            }
            Err(MapError::KeyNotFound) => continue,
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {name}")),
        }
        removed(map.remove(&k)).with_context(|| format!("pruning {name}"))?;
    }
    Ok(out)
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
    fn deleting_a_missing_entry_is_not_an_error() {
        let enoent = || {
            Err(MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_delete_elem",
                io_error: std::io::Error::from_raw_os_error(libc::ENOENT),
            }))
        };
        assert!(removed(enoent()).is_ok());
        assert!(removed(Ok(())).is_ok());
        assert!(removed(Err(MapError::KeyNotFound)).is_ok());
        let eperm = Err(MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_delete_elem",
            io_error: std::io::Error::from_raw_os_error(libc::EPERM),
        }));
        assert!(removed(eperm).is_err());
    }

    #[test]
    fn map_sizes_follow_the_machine() {
        const GIB: u64 = 1 << 30;
        // This machine's kind: 2 CPUs, 24 GiB: the cap.
        assert_eq!(entries_for(16, 8, 2, 24 * GIB), 1 << 18);
        // 256 CPUs but 16 GiB: memory decides, not the CPU count alone.
        assert_eq!(entries_for(16, 8, 256, 16 * GIB), (GIB / 16 / 2128) as u32);
        assert_eq!(entries_for(16, 8, 4096, GIB), 16_384, "floor");
    }
}
