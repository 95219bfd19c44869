//! The live TUI of `proclens top`: an [`App`] state fed by snapshots and key presses, and
//! a pure [`draw`] of that state, so rendering is testable from recorded data.

mod draw;
mod lines;

use std::collections::VecDeque;

pub use draw::draw;
pub use lines::{CopyLine, ZombieLine};
use lines::{copy_lines, zombie_lines};

use crate::{
    collect::{extras::Extras, session::Snapshot},
    model::{
        histogram::percentile_us,
        rates::{per_second, percent},
        switches::Row,
    },
};

/// The views of the TUI (`1`/`2`/`3` or Tab).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Switches,
    Zombies,
    Copies,
}

impl Tab {
    pub const ALL: [Tab; 3] = [Tab::Switches, Tab::Zombies, Tab::Copies];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Switches => "1 Switches",
            Tab::Zombies => "2 Zombies",
            Tab::Copies => "3 Copies",
        }
    }

    fn next(self) -> Self {
        let i = Self::ALL.iter().position(|t| *t == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }
}

/// How many intervals the sparklines remember.
pub const HISTORY: usize = 120;

/// Column the table is sorted by (`s` cycles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Switches,
    Voluntary,
    Involuntary,
    CrossShare,
    RunqP99,
    Cpu,
    Syscalls,
    Bytes,
    Zombies,
    Pid,
}

impl SortKey {
    const ALL: [SortKey; 10] = [
        SortKey::Switches,
        SortKey::Voluntary,
        SortKey::Involuntary,
        SortKey::CrossShare,
        SortKey::RunqP99,
        SortKey::Cpu,
        SortKey::Syscalls,
        SortKey::Bytes,
        SortKey::Zombies,
        SortKey::Pid,
    ];

    pub fn label(self) -> &'static str {
        match self {
            SortKey::Switches => "switches/s",
            SortKey::Voluntary => "cswch/s",
            SortKey::Involuntary => "nvcswch/s",
            SortKey::CrossShare => "cross%",
            SortKey::RunqP99 => "runq-p99",
            SortKey::Cpu => "%cpu",
            SortKey::Syscalls => "sysc/s",
            SortKey::Bytes => "bytes/s",
            SortKey::Zombies => "zombies",
            SortKey::Pid => "pid",
        }
    }

    fn next(self) -> Self {
        let i = Self::ALL.iter().position(|k| *k == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }
}

/// What a line of the table shows, computed once per snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub pid: u32,
    pub tid: Option<u32>,
    pub comm: String,
    pub voluntary_s: f64,
    pub involuntary_s: f64,
    pub same_pct: f64,
    pub cross_pct: f64,
    pub cpu_pct: f64,
    pub runq_p99_us: Option<u64>,
    /// Per-process figures (`None` on thread lines and when not counted): syscalls/s,
    /// bytes/s moved by the copy family (through user buffers and zero-copy), zombies held.
    pub syscalls_s: Option<f64>,
    pub bytes_s: Option<f64>,
    pub zombies: Option<usize>,
}

impl Line {
    fn of(row: &Row, comm: &str, elapsed_s: f64, extras: Option<&Extras>) -> Self {
        let d = &row.delta;
        let ins = d.same_in + d.cross_in + d.idle_kernel_in;
        let threads = extras.is_none();
        let pid = row.key.tgid;
        let proc_row = extras.and_then(|e| e.procs.as_ref().map(|_| e.proc_row(pid)));
        let copied = |r: &crate::model::copy_report::ProcRow| {
            let i = r.copies.interval();
            per_second(i.user_copy_bytes + i.zero_copy_bytes, elapsed_s)
        };
        Self {
            pid: row.key.tgid,
            tid: threads.then_some(row.key.id),
            comm: comm.to_string(),
            voluntary_s: per_second(d.voluntary, elapsed_s),
            involuntary_s: per_second(d.involuntary, elapsed_s),
            same_pct: percent(d.same_in, ins),
            cross_pct: percent(d.cross_in, ins),
            cpu_pct: if elapsed_s > 0.0 {
                d.oncpu_ns as f64 / 1e7 / elapsed_s
            } else {
                0.0
            },
            runq_p99_us: percentile_us(&d.runq_hist, 99.0),
            syscalls_s: proc_row
                .map(|r| r.map_or(0.0, |r| per_second(r.syscalls.delta, elapsed_s))),
            bytes_s: proc_row.map(|r| r.map_or(0.0, copied)),
            zombies: extras.and_then(|e| e.zombies_of(pid)),
        }
    }
}

/// A line being typed at the bottom (`p` pid filter, `/` command filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    Pid(String),
    Comm(String),
}

/// What the event loop should do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Quit,
}

/// Keys the TUI understands, independent of the terminal library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Up,
    Down,
    Enter,
    Esc,
    Backspace,
    Tab,
    CtrlC,
}

#[derive(Debug, Clone)]
pub struct App {
    pub tab: Tab,
    pub threads: bool,
    pub sort: SortKey,
    pub selected: usize,
    pub pid_filter: Option<u32>,
    pub comm_filter: Option<String>,
    pub prompt: Option<Prompt>,
    /// Lines of the last snapshot (process and thread views).
    pub processes: Vec<Line>,
    pub thread_lines: Vec<Line>,
    pub copy_lines: Vec<CopyLine>,
    pub zombie_lines: Vec<ZombieLine>,
    /// Whether the tracer counts syscalls / copy paths (set by the caller) / keeps the
    /// process table.
    pub has_syscalls: bool,
    pub has_copies: bool,
    pub has_zombies: bool,
    pub clock: String,
    pub switches_per_s: f64,
    pub cross_pct: f64,
    pub lost_events: u64,
    /// Threads, syscalls and copy-family calls the kernel could not count (maps full).
    pub uncounted: u64,
    /// System switches/s and address-space-switch share, oldest first.
    pub rate_history: VecDeque<u64>,
    pub cross_history: VecDeque<u64>,
}

impl App {
    pub fn new(threads: bool) -> Self {
        Self {
            tab: Tab::Switches,
            threads,
            sort: SortKey::Switches,
            selected: 0,
            pid_filter: None,
            comm_filter: None,
            prompt: None,
            processes: Vec::new(),
            thread_lines: Vec::new(),
            copy_lines: Vec::new(),
            zombie_lines: Vec::new(),
            has_syscalls: false,
            has_copies: false,
            has_zombies: false,
            clock: String::new(),
            switches_per_s: 0.0,
            cross_pct: 0.0,
            lost_events: 0,
            uncounted: 0,
            rate_history: VecDeque::with_capacity(HISTORY),
            cross_history: VecDeque::with_capacity(HISTORY),
        }
    }

    pub fn on_snapshot(&mut self, snap: &Snapshot) {
        let s = &snap.system;
        let classified = s.same_process + s.cross_process + s.idle_or_kernel;
        self.clock.clone_from(&snap.clock);
        self.switches_per_s = per_second(s.switches, snap.elapsed_s);
        self.cross_pct = percent(s.cross_process, classified);
        self.lost_events = snap.health.ringbuf_drops;
        let h = &snap.health;
        self.uncounted = h.thread_map_full + h.syscall_map_full + h.inflight_full + h.copy_map_full;
        push_bounded(&mut self.rate_history, self.switches_per_s.round() as u64);
        push_bounded(
            &mut self.cross_history,
            (self.cross_pct * 10.0).round() as u64,
        );
        let e = &snap.extras;
        self.processes = snap
            .rows
            .iter()
            .map(|(r, c)| Line::of(r, c, snap.elapsed_s, Some(e)))
            .collect();
        for (ppid, comm) in e.zombie_parents() {
            if !self.processes.iter().any(|l| l.pid == ppid) {
                self.processes.push(Line {
                    pid: ppid,
                    tid: None,
                    comm: comm.to_string(),
                    voluntary_s: 0.0,
                    involuntary_s: 0.0,
                    same_pct: 0.0,
                    cross_pct: 0.0,
                    cpu_pct: 0.0,
                    runq_p99_us: None,
                    syscalls_s: e.procs.as_ref().map(|_| 0.0),
                    bytes_s: e.procs.as_ref().map(|_| 0.0),
                    zombies: e.zombies_of(ppid),
                });
            }
        }
        self.thread_lines = snap
            .thread_rows
            .iter()
            .map(|(r, c)| Line::of(r, c, snap.elapsed_s, None))
            .collect();
        self.has_syscalls = e.procs.is_some();
        self.has_zombies = e.zombies.is_some();
        self.copy_lines = copy_lines(e, snap.elapsed_s);
        self.zombie_lines = zombie_lines(e);
    }

    fn passes(&self, pid: u32, comm: &str) -> bool {
        self.pid_filter.is_none_or(|p| pid == p)
            && self
                .comm_filter
                .as_ref()
                .is_none_or(|c| comm.contains(c.as_str()))
    }

    /// The Copies tab's lines: filtered, most bytes first.
    pub fn visible_copies(&self) -> Vec<&CopyLine> {
        let mut v: Vec<&CopyLine> = self
            .copy_lines
            .iter()
            .filter(|l| self.passes(l.pid, &l.comm))
            .collect();
        let moved = |l: &CopyLine| l.user_copy_s + l.zero_copy_s;
        v.sort_by(|a, b| {
            moved(b)
                .total_cmp(&moved(a))
                .then(b.syscalls_s.total_cmp(&a.syscalls_s))
                .then(a.pid.cmp(&b.pid))
        });
        v
    }

    /// The Zombies tab's lines: filtered by the zombie's or its parent's pid and command,
    /// oldest first.
    pub fn visible_zombies(&self) -> Vec<&ZombieLine> {
        self.zombie_lines
            .iter()
            .filter(|z| self.passes(z.pid, &z.comm) || self.passes(z.ppid, &z.parent_comm))
            .collect()
    }

    /// How many lines the current tab shows.
    fn visible_len(&self) -> usize {
        match self.tab {
            Tab::Switches => self.visible().len(),
            Tab::Zombies => self.visible_zombies().len(),
            Tab::Copies => self.visible_copies().len(),
        }
    }

    /// The lines on screen: filtered, sorted, busiest first.
    pub fn visible(&self) -> Vec<&Line> {
        let source = if self.threads {
            &self.thread_lines
        } else {
            &self.processes
        };
        let mut v: Vec<&Line> = source
            .iter()
            .filter(|l| self.passes(l.pid, &l.comm))
            .filter(|l| {
                l.voluntary_s + l.involuntary_s > 0.0
                    || l.zombies.unwrap_or(0) > 0
                    || self.pid_filter.is_some()
            })
            .collect();
        let key = |l: &Line| -> f64 {
            match self.sort {
                SortKey::Switches => l.voluntary_s + l.involuntary_s,
                SortKey::Voluntary => l.voluntary_s,
                SortKey::Involuntary => l.involuntary_s,
                SortKey::CrossShare => l.cross_pct,
                SortKey::RunqP99 => l.runq_p99_us.unwrap_or(0) as f64,
                SortKey::Cpu => l.cpu_pct,
                SortKey::Syscalls => l.syscalls_s.unwrap_or(0.0),
                SortKey::Bytes => l.bytes_s.unwrap_or(0.0),
                SortKey::Zombies => l.zombies.unwrap_or(0) as f64,
                SortKey::Pid => -f64::from(l.tid.unwrap_or(l.pid)),
            }
        };
        v.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.pid.cmp(&b.pid)));
        v
    }

    pub fn on_key(&mut self, key: Key) -> Action {
        if let Some(prompt) = &mut self.prompt {
            let buf = match prompt {
                Prompt::Pid(b) | Prompt::Comm(b) => b,
            };
            match key {
                Key::Esc => self.prompt = None,
                Key::CtrlC => return Action::Quit,
                Key::Backspace => {
                    buf.pop();
                }
                Key::Char(c) => buf.push(c),
                Key::Enter => {
                    match self.prompt.take() {
                        Some(Prompt::Pid(b)) => self.pid_filter = b.trim().parse().ok(),
                        Some(Prompt::Comm(b)) => {
                            self.comm_filter = Some(b).filter(|b| !b.is_empty())
                        }
                        None => {}
                    }
                    self.selected = 0;
                }
                Key::Up | Key::Down | Key::Tab => {}
            }
            return Action::Continue;
        }
        match key {
            Key::Char('q') | Key::CtrlC => return Action::Quit,
            Key::Up | Key::Char('k') => self.selected = self.selected.saturating_sub(1),
            Key::Down | Key::Char('j') => {
                self.selected = (self.selected + 1).min(self.visible_len().saturating_sub(1))
            }
            Key::Tab => {
                self.tab = self.tab.next();
                self.selected = 0;
            }
            Key::Char(c @ '1'..='3') => {
                self.tab = Tab::ALL[(c as u8 - b'1') as usize];
                self.selected = 0;
            }
            Key::Char('s') => self.sort = self.sort.next(),
            Key::Char('t') => {
                self.threads = !self.threads;
                self.selected = 0;
            }
            Key::Char('p') => self.prompt = Some(Prompt::Pid(String::new())),
            Key::Char('/') => self.prompt = Some(Prompt::Comm(String::new())),
            Key::Esc => {
                self.pid_filter = None;
                self.comm_filter = None;
            }
            _ => {}
        }
        Action::Continue
    }
}

fn push_bounded(q: &mut VecDeque<u64>, v: u64) {
    if q.len() == HISTORY {
        q.pop_front();
    }
    q.push_back(v);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        collect::{session::SystemSplit, tracer::Health},
        model::switches::{Counts, Key as RowKey},
    };

    /// A recorded snapshot: two processes, one busy and cross-process, one quiet.
    pub(crate) fn snapshot() -> Snapshot {
        let row = |pid: u32, vol: u64, invol: u64, same: u64, cross: u64| {
            let d = Counts {
                voluntary: vol,
                involuntary: invol,
                same_in: same,
                cross_in: cross,
                oncpu_ns: 250_000_000,
                ..Counts::default()
            };
            (
                Row {
                    key: RowKey {
                        id: pid,
                        tgid: pid,
                        start_ns: 1,
                    },
                    total: d,
                    delta: d,
                    alive: true,
                    exit_comm: None,
                },
                format!("proc{pid}"),
            )
        };
        Snapshot {
            unix_time: 0.0,
            clock: "12:00:00".into(),
            elapsed_s: 1.0,
            system: SystemSplit {
                switches: 2000,
                same_process: 500,
                cross_process: 500,
                idle_or_kernel: 1000,
            },
            health: Health::default(),
            rows: vec![
                row(10, 900, 100, 100, 800),
                row(20, 50, 300, 300, 0),
                row(30, 0, 0, 0, 0),
            ],
            thread_rows: vec![row(11, 1, 0, 0, 0)],
            programs: Vec::new(),
            extras: extras(),
        }
    }

    /// Syscalls and a sendfile path for proc10, two zombies held by proc20.
    fn extras() -> Extras {
        use proclens_common::{
            copies::{fd_kind, op},
            lifecycle::ExitStatus,
        };

        use crate::model::{
            copies::{Counts as CopyCounts, PathRow, ProcCopies},
            copy_report::ProcRow,
            proctable::{Key as ProcKey, Zombie},
            syscalls::ProcSyscalls,
        };
        let c = CopyCounts {
            bytes: 4 << 20,
            calls: 4,
            errors: 0,
        };
        let zombie = |pid: u32, age_s: u64| Zombie {
            key: ProcKey {
                tgid: pid,
                start_ns: 1,
            },
            comm: format!("kid{pid}"),
            ppid: 20,
            parent_comm: "proc20".into(),
            status: ExitStatus::Code(3),
            age_ns: age_s * 1_000_000_000,
            age_exact: true,
            exe: None,
        };
        Extras {
            procs: Some(vec![ProcRow {
                tgid: 10,
                start_ns: 0,
                syscalls: ProcSyscalls {
                    delta: 500,
                    total: 900,
                    ..ProcSyscalls::default()
                },
                copies: ProcCopies {
                    paths: vec![PathRow {
                        op: op::SENDFILE64,
                        src: fd_kind::FILE,
                        dst: fd_kind::SOCKET,
                        delta: c,
                        total: c,
                    }],
                },
            }]),
            proc_comms: [(
                ProcKey {
                    tgid: 10,
                    start_ns: 0,
                },
                "proc10".to_string(),
            )]
            .into(),
            zombies: Some(vec![
                zombie(41, 5),
                zombie(42, 9),
                Zombie {
                    ppid: 77,
                    parent_comm: "sleeper".into(),
                    ..zombie(43, 2)
                },
            ]),
            ..Extras::default()
        }
    }

    #[test]
    fn sorting_filtering_and_selection() {
        let mut app = App::new(false);
        app.on_snapshot(&snapshot());
        assert_eq!(
            app.visible().iter().map(|l| l.pid).collect::<Vec<_>>(),
            [10, 20, 77],
            "idle rows hidden (but a parent holding zombies), busiest first"
        );
        app.on_key(Key::Char('s')); // cswch/s
        app.on_key(Key::Char('s')); // nvcswch/s
        assert_eq!(app.sort, SortKey::Involuntary);
        assert_eq!(app.visible()[0].pid, 20);
        // A parent that never switched is listed for its zombie, with its name.
        let idle = app.visible().into_iter().find(|l| l.pid == 77).unwrap();
        assert_eq!((idle.comm.as_str(), idle.zombies), ("sleeper", Some(1)));
        app.on_key(Key::Down);
        app.on_key(Key::Down);
        app.on_key(Key::Down);
        assert_eq!(app.selected, 2, "selection stays on the table");
        app.on_key(Key::Char('/'));
        for c in "proc1".chars() {
            app.on_key(Key::Char(c));
        }
        assert_eq!(
            app.on_key(Key::Char('q')),
            Action::Continue,
            "q is typed into the prompt"
        );
        app.on_key(Key::Backspace);
        app.on_key(Key::Enter);
        assert_eq!(app.comm_filter.as_deref(), Some("proc1"));
        assert_eq!(app.visible().len(), 1);
        app.on_key(Key::Esc);
        app.on_key(Key::Char('p'));
        for c in "20".chars() {
            app.on_key(Key::Char(c));
        }
        app.on_key(Key::Enter);
        assert_eq!(
            app.visible().iter().map(|l| l.pid).collect::<Vec<_>>(),
            [20]
        );
        app.on_key(Key::Char('t'));
        assert!(app.threads);
        assert_eq!(app.on_key(Key::Char('q')), Action::Quit);
    }

    #[test]
    fn tabs_show_zombies_and_copies() {
        let mut app = App::new(false);
        app.has_copies = true;
        app.on_snapshot(&snapshot());
        let p10 = app.processes.iter().find(|l| l.pid == 10).unwrap();
        assert_eq!(p10.syscalls_s, Some(500.0));
        assert_eq!(p10.bytes_s, Some((4 << 20) as f64));
        assert_eq!(p10.zombies, Some(0));
        let p20 = app.processes.iter().find(|l| l.pid == 20).unwrap();
        assert_eq!((p20.syscalls_s, p20.zombies), (Some(0.0), Some(2)));
        assert!(app.thread_lines.iter().all(|l| l.zombies.is_none()));
        // Sorting by zombies puts the parent first.
        while app.sort != SortKey::Zombies {
            app.on_key(Key::Char('s'));
        }
        assert_eq!(app.visible()[0].pid, 20);
        // A parent that never switched is listed for its zombie, with its name.
        let idle = app.visible().into_iter().find(|l| l.pid == 77).unwrap();
        assert_eq!((idle.comm.as_str(), idle.zombies), ("sleeper", Some(1)));

        app.on_key(Key::Char('2'));
        assert_eq!(app.tab, Tab::Zombies);
        let z: Vec<u32> = app.visible_zombies().iter().map(|z| z.pid).collect();
        assert_eq!(z, [42, 41, 43], "oldest first");
        // A pid filter on the parent keeps its zombies.
        app.pid_filter = Some(20);
        assert_eq!(app.visible_zombies().len(), 2);
        app.pid_filter = Some(10);
        assert!(app.visible_zombies().is_empty());
        app.pid_filter = None;

        app.on_key(Key::Tab);
        assert_eq!(app.tab, Tab::Copies);
        let c = app.visible_copies();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].top_path, "sendfile file->socket");
        assert_eq!(c[0].zero_copy_pct, 100.0);
        app.on_key(Key::Tab);
        assert_eq!(app.tab, Tab::Switches);
    }

    #[test]
    fn history_is_bounded() {
        let mut app = App::new(false);
        for _ in 0..HISTORY + 10 {
            app.on_snapshot(&snapshot());
        }
        assert_eq!(app.rate_history.len(), HISTORY);
        assert_eq!(app.rate_history.back(), Some(&2000));
        assert_eq!(app.cross_history.back(), Some(&250), "25.0% in tenths");
    }
}
