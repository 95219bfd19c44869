//! The live TUI of `proclens top`: an [`App`] state fed by snapshots and key presses, and
//! a pure [`draw`] of that state, so rendering is testable from recorded data.

mod draw;

use std::collections::VecDeque;

pub use draw::draw;

use crate::{
    collect::session::Snapshot,
    model::{
        histogram::percentile_us,
        rates::{per_second, percent},
        switches::Row,
    },
};

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
    Pid,
}

impl SortKey {
    const ALL: [SortKey; 7] = [
        SortKey::Switches,
        SortKey::Voluntary,
        SortKey::Involuntary,
        SortKey::CrossShare,
        SortKey::RunqP99,
        SortKey::Cpu,
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
}

impl Line {
    fn of(row: &Row, comm: &str, elapsed_s: f64, threads: bool) -> Self {
        let d = &row.delta;
        let ins = d.same_in + d.cross_in + d.idle_kernel_in;
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
    CtrlC,
}

#[derive(Debug, Clone)]
pub struct App {
    pub threads: bool,
    pub sort: SortKey,
    pub selected: usize,
    pub pid_filter: Option<u32>,
    pub comm_filter: Option<String>,
    pub prompt: Option<Prompt>,
    /// Lines of the last snapshot (process and thread views).
    pub processes: Vec<Line>,
    pub thread_lines: Vec<Line>,
    pub clock: String,
    pub switches_per_s: f64,
    pub cross_pct: f64,
    pub lost_events: u64,
    /// System switches/s and address-space-switch share, oldest first.
    pub rate_history: VecDeque<u64>,
    pub cross_history: VecDeque<u64>,
}

impl App {
    pub fn new(threads: bool) -> Self {
        Self {
            threads,
            sort: SortKey::Switches,
            selected: 0,
            pid_filter: None,
            comm_filter: None,
            prompt: None,
            processes: Vec::new(),
            thread_lines: Vec::new(),
            clock: String::new(),
            switches_per_s: 0.0,
            cross_pct: 0.0,
            lost_events: 0,
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
        push_bounded(&mut self.rate_history, self.switches_per_s.round() as u64);
        push_bounded(
            &mut self.cross_history,
            (self.cross_pct * 10.0).round() as u64,
        );
        self.processes = snap
            .rows
            .iter()
            .map(|(r, c)| Line::of(r, c, snap.elapsed_s, false))
            .collect();
        self.thread_lines = snap
            .thread_rows
            .iter()
            .map(|(r, c)| Line::of(r, c, snap.elapsed_s, true))
            .collect();
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
            .filter(|l| self.pid_filter.is_none_or(|p| l.pid == p))
            .filter(|l| {
                self.comm_filter
                    .as_ref()
                    .is_none_or(|c| l.comm.contains(c.as_str()))
            })
            .filter(|l| l.voluntary_s + l.involuntary_s > 0.0 || self.pid_filter.is_some())
            .collect();
        let key = |l: &Line| -> f64 {
            match self.sort {
                SortKey::Switches => l.voluntary_s + l.involuntary_s,
                SortKey::Voluntary => l.voluntary_s,
                SortKey::Involuntary => l.involuntary_s,
                SortKey::CrossShare => l.cross_pct,
                SortKey::RunqP99 => l.runq_p99_us.unwrap_or(0) as f64,
                SortKey::Cpu => l.cpu_pct,
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
                Key::Up | Key::Down => {}
            }
            return Action::Continue;
        }
        match key {
            Key::Char('q') | Key::CtrlC => return Action::Quit,
            Key::Up | Key::Char('k') => self.selected = self.selected.saturating_sub(1),
            Key::Down | Key::Char('j') => {
                self.selected = (self.selected + 1).min(self.visible().len().saturating_sub(1))
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
            extras: Default::default(),
        }
    }

    #[test]
    fn sorting_filtering_and_selection() {
        let mut app = App::new(false);
        app.on_snapshot(&snapshot());
        assert_eq!(
            app.visible().iter().map(|l| l.pid).collect::<Vec<_>>(),
            [10, 20],
            "idle rows hidden, busiest first"
        );
        app.on_key(Key::Char('s')); // cswch/s
        app.on_key(Key::Char('s')); // nvcswch/s
        assert_eq!(app.sort, SortKey::Involuntary);
        assert_eq!(app.visible()[0].pid, 20);
        app.on_key(Key::Down);
        app.on_key(Key::Down);
        assert_eq!(app.selected, 1, "selection stays on the table");
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
