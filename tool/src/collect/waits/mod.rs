//! Where blocked time goes: the set-up of the waits programs ([`setup`]), their maps read
//! and pruned ([`WaitMaps`]), and the collector that turns readings into per-process rows
//! ([`WaitsCollector`]).

mod setup;

use std::collections::HashMap as StdHashMap;

use anyhow::Result;
use aya::maps::{HashMap, MapData};
use proclens_common::{
    copies::SysKey,
    waits::{BlockStats, EpollKey, ReadyEntry, ReadyStats},
};

pub use setup::WaitsSetup;

use super::{
    copies::maps::{prune_threads, read, summed, take_where},
    gone::{self, Exited},
    object::Object,
    procfs,
    setup::take_map,
};
use crate::model::{
    proctable::Key,
    waits::{OpenBlock, ProcWaits, WaitsModel},
};

/// The waits maps: blocked time and readiness counts per (process, syscall, CPU), the
/// readiness calls in progress per thread, the epoll interest sets.
pub struct WaitMaps {
    waits: HashMap<MapData, SysKey, BlockStats>,
    ready: HashMap<MapData, SysKey, ReadyStats>,
    entries: HashMap<MapData, u32, ReadyEntry>,
    epoll: HashMap<MapData, EpollKey, u64>,
    /// Whether blocks are told apart by syscall (else all are `UNKNOWN_SYSCALL`'s).
    pub by_syscall: bool,
    /// The readiness calls counted here (ids of `waits::call`).
    pub calls: Vec<usize>,
}

/// One reading of the blocked time and readiness maps, summed over CPUs.
#[derive(Debug, Default)]
pub struct WaitReading {
    pub blocks: StdHashMap<SysKey, BlockStats>,
    pub ready: StdHashMap<SysKey, ReadyStats>,
}

impl WaitReading {
    fn processes(&self) -> Vec<Key> {
        let mut v: Vec<Key> = self
            .blocks
            .keys()
            .chain(self.ready.keys())
            .map(|k| Key {
                tgid: k.tgid,
                start_ns: k.start_ns,
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

fn add_blocks(a: &mut BlockStats, b: BlockStats) {
    a.blocked_ns += b.blocked_ns;
    a.switches += b.switches;
}

fn add_ready(a: &mut ReadyStats, b: ReadyStats) {
    a.add(&b);
}

impl WaitMaps {
    fn take(obj: &mut Object, by_syscall: bool, calls: Vec<usize>) -> Result<Self> {
        Ok(Self {
            waits: HashMap::try_from(take_map(obj, "WAITS")?)?,
            ready: HashMap::try_from(take_map(obj, "READY")?)?,
            entries: HashMap::try_from(take_map(obj, "READY_ENTRY")?)?,
            epoll: HashMap::try_from(take_map(obj, "EPOLL_SETS")?)?,
            by_syscall,
            calls,
        })
    }

    /// Both maps, read once.
    pub fn reading(&self) -> Result<WaitReading> {
        Ok(WaitReading {
            blocks: summed(read(&self.waits, "WAITS")?, SysKey::any_cpu, add_blocks),
            ready: summed(read(&self.ready, "READY")?, SysKey::any_cpu, add_ready),
        })
    }

    /// Reads the final figures of `gone` processes and deletes their entries (as
    /// `CopyMaps::take_gone`), their epoll sets, and the calls in progress of threads
    /// that no longer exist.
    fn take_gone(&mut self, gone: &gone::Gone) -> Result<WaitReading> {
        self.prune_entries()?;
        let mut out = WaitReading::default();
        if gone.is_empty() {
            return Ok(out);
        }
        let is_gone = |k: &SysKey| {
            gone.contains(&Key {
                tgid: k.tgid,
                start_ns: k.start_ns,
            })
        };
        out.blocks = summed(
            take_where(&self.waits, "WAITS", is_gone)?,
            SysKey::any_cpu,
            add_blocks,
        );
        out.ready = summed(
            take_where(&self.ready, "READY", is_gone)?,
            SysKey::any_cpu,
            add_ready,
        );
        // An epoll fd is its process's while the pid lives.
        take_where(&self.epoll, "EPOLL_SETS", |k| {
            gone.iter().any(|g| g.tgid == k.tgid) && !procfs::exists(k.tgid)
        })?;
        Ok(out)
    }

    fn prune_entries(&mut self) -> Result<()> {
        prune_threads(&self.entries, "READY_ENTRY", |e| e.tgid)
    }
}

/// The waits rows of one interval.
#[derive(Debug, Clone, Default)]
pub struct WaitsSnapshot {
    pub procs: Vec<ProcWaits>,
    /// Processes whose last interval this is.
    pub gone: gone::Gone,
    /// Whether blocks are told apart by syscall on this kernel.
    pub by_syscall: bool,
    /// Whether select, poll and epoll are counted.
    pub readiness: bool,
}

/// Keeps the waits model between intervals.
///
/// The closed blocks (the maps) are read before the blocks in progress (the live
/// threads), never after: a block that ends between the two readings is then in neither
/// (it comes in with the next), where the other order had it in both, open in one and
/// charged in the other, and the model, which holds each figure at its highest, kept the
/// extra switch and time for good.
#[derive(Debug)]
pub struct WaitsCollector {
    model: WaitsModel,
    /// The maps as read just before the live threads ([`WaitsCollector::before_threads`]).
    closed: Option<WaitReading>,
}

impl WaitsCollector {
    /// Starts the model from the figures so far (they belong to no report): `closed`, the
    /// maps read before the live threads whose blocks in progress are `open`.
    pub fn start(closed: &WaitReading, open: &[OpenBlock]) -> Self {
        let mut model = WaitsModel::new();
        model.update(&closed.blocks, &closed.ready, open);
        Self {
            model,
            closed: None,
        }
    }

    /// Reads the maps; call it just before the live threads are read, whose blocks in
    /// progress the next [`WaitsCollector::tick`] gets.
    pub fn before_threads(&mut self, maps: &WaitMaps) -> Result<()> {
        self.closed = Some(maps.reading()?);
        Ok(())
    }

    /// One interval's rows; `open`: the blocks in progress at the live threads' reading
    /// (the maps read before it, see the type's doc; now if they were not).
    pub fn tick(
        &mut self,
        maps: &mut WaitMaps,
        open: &[OpenBlock],
        exited: &Exited,
    ) -> Result<WaitsSnapshot> {
        let mut r = match self.closed.take() {
            Some(r) => r,
            None => maps.reading()?,
        };
        let gone = gone::gone(&r.processes(), procfs::tick_ns(), exited);
        let last = maps.take_gone(&gone)?;
        r.blocks.extend(last.blocks);
        r.ready.extend(last.ready);
        Ok(WaitsSnapshot {
            procs: self.model.update(&r.blocks, &r.ready, open),
            gone,
            by_syscall: maps.by_syscall,
            readiness: !maps.calls.is_empty(),
        })
    }
}
