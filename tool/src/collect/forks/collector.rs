//! The after-fork figures between reports: who created whom (from the lifecycle's fork
//! events), the execs with the fds they inherited (as their events come), and at each
//! report the maps turned into cost rows, the fd tables read when asked.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use proclens_common::lifecycle::fork_flags;

use super::{Available, FdSource, FdTables, fdtables};
use crate::{
    collect::{gone, procfs, procfs::CommCache, tracer::Tracer},
    model::{
        event::Event,
        fdtables::{ProcFds, analyse},
        forks::{CostModel, CostRow, ExecEntry, totals},
        proctable::Key,
        switches::comm_str,
    },
};

/// One report's after-fork figures.
#[derive(Debug, Clone)]
pub struct AfterFork {
    /// Processes with fork calls or copy-on-write faults (or whose children faulted),
    /// busiest first.
    pub rows: Vec<CostRow>,
    pub comms: HashMap<Key, String>,
    /// Rows whose processes have gone: this is their last report.
    pub gone: gone::Gone,
    /// Execs since the last report, in order.
    pub execs: Vec<ExecEntry>,
    /// Every process's fd table now, by pid, and where it was read from (when asked for).
    pub fds: Option<std::collections::BTreeMap<u32, ProcFds>>,
    pub fds_source: Option<FdSource>,
    pub available: Available,
    /// Bytes a copy-on-write fault copies (the base page size).
    pub page_size: u64,
}

/// The parent of a process older than the trace, from /proc (its start known to the
/// clock tick).
fn parent_in_proc(k: Key, tick_ns: u64) -> Option<Key> {
    let s = procfs::stat_of(k.tgid, k.start_ns, tick_ns)?;
    let p = procfs::stat(s.ppid)?;
    Some(Key {
        tgid: s.ppid,
        start_ns: p.start_ticks * tick_ns,
    })
}

/// Keeps the after-fork models between reports.
#[derive(Debug)]
pub struct ForksCollector {
    model: CostModel,
    /// Process → the process that created it, from fork events (a child that exits
    /// within an interval is gone from /proc by the report), with the report it came in.
    creators: HashMap<Key, (Key, u64)>,
    /// Names from events, for processes gone before /proc could be read.
    names: HashMap<Key, (String, u64)>,
    /// Reports made: event-learnt entries of processes that are in no row are kept one
    /// report (a fork storm's vfork children fault nothing and would pile up).
    reports: u64,
    comms: CommCache<Key>,
    execs: Vec<ExecEntry>,
    fd_tables: FdTables,
    page_size: u64,
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

impl ForksCollector {
    /// Starts the model from the maps as they are (what came before belongs to no report);
    /// `fd_tables`: which fd tables to read at each report.
    pub fn start(tracer: &mut Tracer, fd_tables: FdTables) -> Result<Self> {
        let mut model = CostModel::new();
        let maps = tracer.forks_maps().context("after-fork maps not loaded")?;
        let snap = maps.snapshot()?;
        model.update(&totals(&snap.faults, &snap.times, page_size()), |_| None);
        Ok(Self {
            model,
            creators: HashMap::new(),
            names: HashMap::new(),
            reports: 0,
            comms: CommCache::default(),
            execs: Vec::new(),
            fd_tables,
            page_size: page_size(),
        })
    }

    /// Takes what it needs of an event; returns whether the event was its own (an exec's
    /// fds, which no other model reads).
    pub fn absorb(&mut self, ev: &Event) -> bool {
        match ev {
            Event::Fork(f) if f.flags & fork_flags::THREAD == 0 => {
                let child = Key::from(&f.child);
                self.creators
                    .insert(child, (Key::from(&f.creator), self.reports));
                self.names.insert(child, (comm_str(&f.comm), self.reports));
                false
            }
            Event::ExecFds(e) => {
                let x = ExecEntry::from(e.as_ref());
                let key = Key {
                    tgid: x.pid,
                    start_ns: x.start_ns,
                };
                self.names.insert(key, (x.comm.clone(), self.reports));
                let pid = x.pid;
                self.comms.forget(|k| k.tgid == pid);
                self.execs.push(x);
                true
            }
            _ => false,
        }
    }

    /// One report's figures; the entries of processes that have gone are deleted after it.
    /// `exited`: the processes the events saw die lately.
    pub fn tick(&mut self, tracer: &mut Tracer, exited: &gone::Exited) -> Result<AfterFork> {
        let tick_ns = procfs::tick_ns();
        let available = tracer
            .forks_available()
            .context("after-fork maps not loaded")?;
        let maps = tracer.forks_maps().context("after-fork maps not loaded")?;
        let snap = maps.snapshot()?;
        let now = totals(&snap.faults, &snap.times, self.page_size);
        // Creators no fork event named: read once, then kept like the others.
        for k in now.keys() {
            if !self.creators.contains_key(k)
                && let Some(p) = parent_in_proc(*k, tick_ns)
            {
                self.creators.insert(*k, (p, self.reports));
            }
        }
        let creators = &self.creators;
        let rows = self
            .model
            .update(&now, |k| creators.get(&k).map(|(c, _)| *c));
        let keys: Vec<Key> = rows.iter().map(|r| r.key).collect();
        let gone = gone::gone(&keys, tick_ns, exited);
        let mut comms = HashMap::new();
        for r in &rows {
            let alive = !gone.contains(&r.key);
            let hint = self.names.get(&r.key).map(|(n, _)| n.as_str());
            comms.insert(r.key, self.comms.get(r.key, r.key.tgid, alive, hint));
        }
        maps.prune(&gone)?;
        self.model.forget(&gone);
        let listed: std::collections::HashSet<Key> =
            keys.iter().filter(|k| !gone.contains(k)).copied().collect();
        let now = self.reports;
        self.creators
            .retain(|k, (_, at)| listed.contains(k) || *at == now);
        self.names
            .retain(|k, (_, at)| listed.contains(k) || *at == now);
        self.reports += 1;
        self.comms.retain(|k| !gone.contains(k));
        crate::model::spare::map(&mut self.creators);
        crate::model::spare::map(&mut self.names);
        let fds_source = match self.fd_tables {
            FdTables::Off => None,
            FdTables::Best => Some(available.fds),
            FdTables::Proc => Some(FdSource::Proc),
        };
        let fds = match fds_source {
            None => None,
            Some(FdSource::Iterator) => Some(analyse(&tracer.fd_table_records()?)),
            Some(FdSource::Proc) => {
                let pids: Vec<u32> = procfs::processes().iter().map(|s| s.pid).collect();
                Some(analyse(&fdtables::read_proc(&pids)))
            }
        };
        Ok(AfterFork {
            rows,
            comms,
            gone,
            execs: std::mem::take(&mut self.execs),
            fds,
            fds_source,
            available,
            page_size: self.page_size,
        })
    }
}
