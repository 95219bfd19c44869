//! The forks section of `proclens run`'s report: fork-family calls with their time,
//! copy-on-write faults and what caused them, and the fds each exec inherited.

use std::collections::HashMap;

use serde::Serialize;

use super::{Cost, CostRow, ExecEntry, Figures};
use crate::model::proctable::Key;

/// One process of the command that forked or took copy-on-write faults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForkProcess {
    pub pid: u32,
    /// The process that created it (null: the command itself, or unknown).
    pub ppid: Option<u32>,
    pub comm: String,
    #[serde(flatten)]
    pub figures: Figures,
}

/// Forks, copy-on-write faults and execs of the command and its descendants.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForksSection {
    /// Bytes per copy-on-write fault (the base page size).
    pub page_size: u64,
    /// false when this kernel has no copy-on-write fault source (not x86).
    pub cow_faults_counted: bool,
    /// The fork-family calls whose time is measured on this kernel.
    pub timed_calls: Vec<&'static str>,
    /// Summed over the command's processes (`children_cow_faults` and `faults_caused`
    /// count each fault once, where it was caused).
    #[serde(flatten)]
    pub total: Figures,
    /// Processes with any figure, by pid.
    pub per_process: Vec<ForkProcess>,
    /// Every exec, in order, with the fds above 2 it inherited.
    pub execs: Vec<ExecEntry>,
}

/// The section from the run's rows (totals since the command started).
pub fn section(
    rows: &[CostRow],
    comms: &HashMap<Key, String>,
    execs: Vec<ExecEntry>,
    page_size: u64,
    cow_faults_counted: bool,
    timed_calls: Vec<&'static str>,
) -> ForksSection {
    let mut sum = Cost::default();
    let mut per_process: Vec<ForkProcess> = rows
        .iter()
        .filter(|r| !r.total.is_zero())
        .map(|r| {
            let t = &r.total;
            sum = sum.plus(t);
            ForkProcess {
                pid: r.key.tgid,
                ppid: r.creator,
                comm: comms.get(&r.key).cloned().unwrap_or_else(|| "?".into()),
                figures: Figures::of(t),
            }
        })
        .collect();
    per_process.sort_by_key(|p| p.pid);
    ForksSection {
        page_size,
        cow_faults_counted,
        timed_calls,
        total: Figures::of(&sum),
        per_process,
        execs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_processes_and_keeps_every_exec() {
        let key = |tgid| Key { tgid, start_ns: 1 };
        let parent = Cost {
            forks: 2,
            fork_ns: 3_000_000,
            cow_faults: 5,
            cow_bytes: 5 * 4096,
            cow_after_fork: 5,
            after_fork_bytes: 5 * 4096,
            children_cow: 100,
            children_bytes: 100 * 4096,
            ..Cost::default()
        };
        let child = Cost {
            cow_faults: 100,
            cow_bytes: 100 * 4096,
            cow_inherited: 100,
            inherited_bytes: 100 * 4096,
            ..Cost::default()
        };
        let row = |tgid, creator, total| CostRow {
            key: key(tgid),
            creator,
            delta: total,
            total,
        };
        let rows = [
            row(11, Some(10), child),
            row(10, None, parent),
            row(12, Some(10), Cost::default()),
        ];
        let comms = HashMap::from([(key(10), "sh".to_string())]);
        let exec = ExecEntry {
            at_ns: 1,
            pid: 12,
            start_ns: 1,
            comm: "true".into(),
            filename: "/bin/true".into(),
            open: 3,
            inherited: 0,
            fds: vec![],
            incomplete: false,
        };
        let s = section(&rows, &comms, vec![exec], 4096, true, vec!["clone"]);
        assert_eq!(
            s.per_process.len(),
            2,
            "a process with no figure is left out"
        );
        assert_eq!(s.per_process[0].pid, 10);
        assert_eq!(s.per_process[0].comm, "sh");
        assert_eq!(s.per_process[1].comm, "?");
        assert_eq!(s.total.forks, 2);
        assert_eq!(s.total.fork_ms, 3.0);
        assert_eq!(s.total.cow_faults, 105);
        assert_eq!(s.total.faults_caused, 105);
        assert_eq!(s.total.cow_bytes, 105 * 4096);
        assert_eq!(s.execs.len(), 1);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["per_process"][1]["cow_inherited"], 100);
        assert_eq!(v["execs"][0]["filename"], "/bin/true");
    }
}
