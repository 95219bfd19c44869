//! `proclens forks` output, plain and JSON.
//!
//! The JSON schema (NDJSON, one interval after another) is documented in one place:
//! docs/guide.md's forks section (change it with the code).

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    model::{
        fdtables::ProcFds,
        forks::{Cost, CostRow, ExecEntry, Figures, ForksSection},
    },
    render::copies::human_bytes,
};

/// In-kernel counts of what could not be recorded, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Dropped {
    pub lost_events: u64,
    pub fault_map_full: u64,
    pub fork_map_full: u64,
}

/// One process as the view shows it.
#[derive(Debug, Clone)]
pub struct ViewRow {
    pub row: CostRow,
    pub comm: String,
    pub alive: bool,
    pub fds: Option<ProcFds>,
}

/// Everything one interval shows.
#[derive(Debug, Clone)]
pub struct Frame {
    pub unix_time: f64,
    pub clock: String,
    pub elapsed_s: f64,
    pub page_size: u64,
    pub fds_source: Option<&'static str>,
    pub cow_faults_counted: bool,
    pub timed_calls: Vec<&'static str>,
    pub dropped: Dropped,
    pub rows: Vec<ViewRow>,
    pub execs: Vec<ExecEntry>,
}

super::report_with!(Frame);

impl Frame {
    /// The interval's figures summed over the rows.
    fn sum(&self) -> Cost {
        let mut s = Cost::default();
        for r in &self.rows {
            let d = &r.row.delta;
            s.forks += d.forks + d.vforks + d.shared_vm;
            s.fork_ns += d.process_ns();
            s.cow_faults += d.cow_faults;
            s.cow_bytes += d.cow_bytes;
        }
        s
    }
}

#[derive(Serialize)]
struct JsonSystem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: f64,
    interval_s: f64,
    page_size: u64,
    fds_source: Option<&'static str>,
    cow_faults_counted: bool,
    timed_calls: &'a [&'static str],
    processes: usize,
    forks: u64,
    fork_ms: f64,
    cow_faults: u64,
    cow_bytes: u64,
    #[serde(flatten)]
    dropped: Dropped,
}

#[derive(Serialize)]
struct JsonRow<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: f64,
    interval_s: f64,
    pid: u32,
    start_ns: u64,
    ppid: Option<u32>,
    comm: &'a str,
    alive: bool,
    #[serde(flatten)]
    interval: Figures,
    total: Figures,
    #[serde(skip_serializing_if = "Option::is_none")]
    fds: Option<&'a ProcFds>,
}

#[derive(Serialize)]
struct JsonExec<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: f64,
    #[serde(flatten)]
    exec: &'a ExecEntry,
}

pub fn json_lines(f: &Frame) -> Vec<String> {
    let sum = f.sum();
    let mut out = vec![
        serde_json::to_string(&JsonSystem {
            kind: "forks_system",
            time: f.unix_time,
            interval_s: f.elapsed_s,
            page_size: f.page_size,
            fds_source: f.fds_source,
            cow_faults_counted: f.cow_faults_counted,
            timed_calls: &f.timed_calls,
            processes: f.rows.len(),
            forks: sum.forks,
            fork_ms: sum.fork_ns as f64 / 1e6,
            cow_faults: sum.cow_faults,
            cow_bytes: sum.cow_bytes,
            dropped: f.dropped,
        })
        .expect("plain struct serialises"),
    ];
    for v in &f.rows {
        let r = &v.row;
        out.push(
            serde_json::to_string(&JsonRow {
                kind: "forks",
                time: f.unix_time,
                interval_s: f.elapsed_s,
                pid: r.key.tgid,
                start_ns: r.key.start_ns,
                ppid: r.creator,
                comm: &v.comm,
                alive: v.alive,
                interval: Figures::of(&r.delta),
                total: Figures::of(&r.total),
                fds: v.fds.as_ref(),
            })
            .expect("plain struct serialises"),
        );
    }
    for e in &f.execs {
        out.push(
            serde_json::to_string(&JsonExec {
                kind: "exec",
                time: f.unix_time,
                exec: e,
            })
            .expect("plain struct serialises"),
        );
    }
    out
}

/// One exec, as a text line.
pub fn exec_line(e: &ExecEntry) -> String {
    let fds: Vec<String> = e
        .fds
        .iter()
        .map(|f| format!("{} ({})", f.fd, f.kind))
        .collect();
    let more = if (e.fds.len() as u32) < e.inherited {
        ", ..."
    } else {
        ""
    };
    format!(
        "exec {} {} ({}): {} fds inherited without close-on-exec{}{}{}{}",
        e.pid,
        e.comm,
        e.filename,
        e.inherited,
        if fds.is_empty() { "" } else { ": " },
        fds.join(", "),
        more,
        if e.incomplete {
            " (table not fully read)"
        } else {
            ""
        }
    )
}

/// What a process's fd table shares, as text lines (none when nothing is shared).
fn fd_lines(pid: u32, fds: &ProcFds) -> Vec<String> {
    let mut out = Vec::new();
    if !fds.table_shared_with.is_empty() {
        let with: Vec<String> = fds.table_shared_with.iter().map(u32::to_string).collect();
        out.push(format!("  {pid}: fd table shared with {}", with.join(", ")));
    }
    for s in &fds.shared {
        let with: Vec<String> = s
            .with
            .iter()
            .map(|h| format!("{}:{}", h.pid, h.fd))
            .collect();
        out.push(format!(
            "  {pid}: fd {} ({}) is also open in {}",
            s.fd,
            s.kind,
            with.join(", ")
        ));
    }
    out
}

pub fn plain_lines(f: &Frame) -> Vec<String> {
    let sum = f.sum();
    let mut head = format!(
        "{}  forks {} ({:.2} ms), copy-on-write faults {} ({})",
        f.clock,
        sum.forks,
        sum.fork_ns as f64 / 1e6,
        sum.cow_faults,
        human_bytes(sum.cow_bytes as f64),
    );
    if !f.cow_faults_counted {
        head.push_str(" [faults not counted on this kernel]");
    }
    if let Some(src) = f.fds_source {
        let _ = write!(head, "; fd tables from {src}");
    }
    if f.dropped != Dropped::default() {
        let _ = write!(
            head,
            "; not recorded: {} events, {} faults, {} forks",
            f.dropped.lost_events, f.dropped.fault_map_full, f.dropped.fork_map_full
        );
    }
    let mut out = vec![
        head,
        format!(
            "{:>8} {:>8} {:>6} {:>8} {:>6} {:>10} {:>9} {:>10} {:>10} {:>9} {:>5} {:>6} {:>9}  COMMAND",
            "PID",
            "PPID",
            "FORKS",
            "FORK-ms",
            "VFORKS",
            "COW-FAULTS",
            "COW-MiB",
            "AFTER-FORK",
            "INHERITED",
            "CHILD-COW",
            "FDS",
            "SHARED",
            "NOCLOEXEC"
        ),
    ];
    let mut details = Vec::new();
    for v in &f.rows {
        let (r, d) = (&v.row, &v.row.delta);
        let fd = |g: fn(&ProcFds) -> usize| v.fds.as_ref().map_or("-".into(), |x| g(x).to_string());
        out.push(format!(
            "{:>8} {:>8} {:>6} {:>8.2} {:>6} {:>10} {:>9.1} {:>10} {:>10} {:>9} {:>5} {:>6} {:>9}  {}{}",
            r.key.tgid,
            r.creator.map_or("-".into(), |p| p.to_string()),
            d.forks + d.shared_vm,
            (d.fork_ns + d.shared_vm_ns) as f64 / 1e6,
            d.vforks,
            d.cow_faults,
            d.cow_bytes as f64 / (1024.0 * 1024.0),
            d.cow_after_fork,
            d.cow_inherited,
            d.children_cow,
            fd(|x| x.open as usize),
            fd(|x| x.shared.len()),
            fd(|x| x.no_cloexec as usize),
            v.comm,
            if v.alive { "" } else { " (gone)" },
        ));
        if let Some(x) = &v.fds {
            details.extend(fd_lines(r.key.tgid, x));
        }
    }
    out.extend(details);
    out.extend(f.execs.iter().map(|e| format!("  {}", exec_line(e))));
    out
}

/// The forks section of `run`'s text report (its lines, without newlines).
pub fn run_lines(s: &ForksSection) -> Vec<String> {
    let t = &s.total;
    let mut out = vec![format!(
        "{:>14}  {} processes in {:.2} ms, {} vforks in {:.2} ms, {} CLONE_VM, {} threads{}",
        "forks",
        t.forks,
        t.fork_ms,
        t.vforks,
        t.vfork_ms,
        t.shared_vm,
        t.threads,
        if t.failed > 0 {
            format!(", {} failed", t.failed)
        } else {
            String::new()
        }
    )];
    out.push(if s.cow_faults_counted {
        format!(
            "{:>14}  {} faults ({}): {} in children before exec, {} in parents after forking",
            "copy-on-write",
            t.cow_faults,
            human_bytes(t.cow_bytes as f64),
            t.cow_inherited,
            t.cow_after_fork
        )
    } else {
        format!("{:>14}  not counted on this kernel", "copy-on-write")
    });
    for p in s
        .per_process
        .iter()
        .filter(|p| p.figures.faults_caused > 0 || p.figures.forks > 0)
    {
        let f = &p.figures;
        out.push(format!(
            "{:>14}  pid {} {}: {} forks in {:.2} ms; faults after forking {}, in its children {}",
            "", p.pid, p.comm, f.forks, f.fork_ms, f.cow_after_fork, f.children_cow_faults
        ));
    }
    for e in &s.execs {
        out.push(format!("{:>14}  {}", "", exec_line(e)));
    }
    out
}

#[cfg(test)]
mod tests;
