//! Attaching the syscall and copy programs, and reading (and pruning) their per-CPU
//! maps.

use std::{collections::HashMap as StdHashMap, path::Path};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{HashMap, MapData, MapError, PerCpuHashMap, PerCpuValues},
    programs::TracePoint,
};
use proclens_common::copies::{CopyKey, CopyStats, Inflight, ProcKey, SysKey, op};

use super::layout::CopyConfig;
use crate::{
    collect::{object::Object, procfs, setup::take_map},
    model::{copy_report::ProcRow, proctable::Key},
};

/// Per-CPU map sizes: as many entries as fit a memory budget for the per-CPU values on
/// this machine's possible CPUs, between a floor and a cap. Entries that do not fit are
/// counted (`syscall_map_full`, `copy_map_full`), never silently dropped.
fn per_cpu_entries(value_size: usize, cpus: usize, cap: u32) -> u32 {
    const BUDGET: usize = 32 << 20;
    let fit = BUDGET / (value_size.max(8) * cpus.max(1));
    (fit.min(cap as usize) as u32).max(4096)
}

/// Sizes `SYSCALLS` and `COPIES` for this machine (before loading), and `COMMS` like
/// `SYSCALLS`: every process with a syscall entry should have room for its name.
pub(super) fn size_maps(loader: &mut EbpfLoader<'_>) {
    let cpus = aya::util::nr_cpus().unwrap_or(1);
    let syscalls = per_cpu_entries(8, cpus, 65536);
    loader
        .map_max_entries("SYSCALLS", syscalls)
        .map_max_entries("COMMS", syscalls)
        .map_max_entries(
            "COPIES",
            per_cpu_entries(size_of::<CopyStats>(), cpus, 32768),
        );
}

/// Attaches the copy-family enter programs and the shared exit program.
pub(super) fn attach_copies(ebpf: &mut Object, cfg: &CopyConfig) -> Result<()> {
    for (opid, why) in &cfg.layout.missing {
        eprintln!(
            "proclens: warning: {} is not traced: {why}",
            op::NAMES[*opid as usize]
        );
    }
    for &opid in &cfg.layout.available {
        let name = op::NAMES[opid as usize];
        let prog_name = format!("enter_{name}");
        let prog: &mut TracePoint = ebpf
            .program_mut(&prog_name)
            .with_context(|| format!("program {prog_name} missing from the BPF object"))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("loading {prog_name}"))?;
        prog.attach("syscalls", &format!("sys_enter_{name}"))
            .with_context(|| format!("attaching to syscalls/sys_enter_{name}"))?;
    }
    let exit: &mut TracePoint = ebpf
        .program_mut("copy_exit")
        .context("program copy_exit missing from the BPF object")?
        .try_into()?;
    exit.load().context("loading copy_exit")?;
    // One program on every exit tracepoint: its links are taken, so that they are
    // detached in parallel (see `Object`).
    let mut links = Vec::new();
    for &opid in &cfg.layout.available {
        let name = op::NAMES[opid as usize];
        let id = exit
            .attach("syscalls", &format!("sys_exit_{name}"))
            .with_context(|| format!("attaching to syscalls/sys_exit_{name}"))?;
        links.push(exit.take_link(id)?);
    }
    for link in links {
        ebpf.keep(link);
    }
    Ok(())
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
        summed(&self.copies, "COPIES", |per_cpu| {
            let mut s = CopyStats::default();
            for c in per_cpu.iter() {
                s.bytes += c.bytes;
                s.calls += c.calls;
                s.errors += c.errors;
            }
            s
        })
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

    /// Deletes the entries of processes that have gone (after their last report), so the
    /// maps hold only live processes. A process is (tgid, start): a new process that got a
    /// gone one's pid keeps its entries. The per-thread in-flight slots of threads that no
    /// longer exist are deleted too (the kernel keeps a thread's slot between calls).
    pub fn prune(&mut self, gone: &[Key]) -> Result<()> {
        self.prune_inflight()?;
        if gone.is_empty() {
            return Ok(());
        }
        let gone: std::collections::HashSet<Key> = gone.iter().copied().collect();
        let is_gone = |tgid: u32, start_ns: u64| gone.contains(&Key { tgid, start_ns });
        // The maps are walked again, not the interval's snapshot: a process can exit
        // between the snapshot and the /proc check, and its last syscall (exit_group) makes
        // an entry the snapshot does not have.
        remove_where(&mut self.syscalls, "SYSCALLS", |k| {
            is_gone(k.tgid, k.start_ns)
        })?;
        remove_where(&mut self.copies, "COPIES", |k| is_gone(k.tgid, k.start_ns))?;
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

/// The processes among `rows` that have gone: a pid belongs to one live process at a
/// time, so of several rows with one pid all but the latest started have gone; the latest
/// (or only) one lives while /proc/PID/stat shows its start time (to the clock tick). A
/// row whose start the kernel could not read (0) lives while its pid exists.
pub fn gone_processes(rows: &[ProcRow], tick_ns: u64) -> Vec<Key> {
    gone_keys(rows.iter().map(ProcRow::key), tick_ns)
}

/// [`gone_processes`] of any per-process keys.
pub(crate) fn gone_keys(keys: impl Iterator<Item = Key> + Clone, tick_ns: u64) -> Vec<Key> {
    let mut latest: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
    for k in keys.clone() {
        let e = latest.entry(k.tgid).or_insert(k.start_ns);
        *e = (*e).max(k.start_ns);
    }
    keys.filter(|k| {
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
    fn map_sizes_follow_the_cpu_count() {
        assert_eq!(
            per_cpu_entries(8, 2, 65536),
            65536,
            "capped on small machines"
        );
        assert_eq!(
            per_cpu_entries(8, 256, 65536),
            16384,
            "32 MiB / (8 B x 256 CPUs)"
        );
        assert_eq!(per_cpu_entries(24, 4096, 32768), 4096, "floor");
    }
}
