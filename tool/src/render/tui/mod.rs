//! The live TUI of `proclens top`: an [`App`] state fed by snapshots (here) and key
//! presses (`keys`), the Switches table's lines, sort keys and filters (`table`), the
//! other tabs' lines (`lines`), and a pure [`draw`] of that state (`draw`), so rendering
//! is testable from recorded data.

mod draw;
mod keys;
mod lines;
mod table;

use std::collections::VecDeque;

pub use draw::draw;
pub use keys::{Action, Key, Prompt};
pub use lines::{CopyLine, ZombieLine};
use lines::{copy_lines, zombie_lines};
pub use table::{Line, SortKey};

use crate::{
    collect::session::Snapshot,
    model::{
        rates::{per_second, percent},
        selection::Selection,
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
        next_of(&Self::ALL, self)
    }
}

/// How many intervals the sparklines remember.
pub const HISTORY: usize = 120;

#[derive(Debug, Clone)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent view toggles, each flipped by its own key"
)]
pub struct App {
    pub tab: Tab,
    pub threads: bool,
    pub sort: SortKey,
    pub selected: usize,
    /// What is shown: `-p` and `--comm` at start, then `p`, `/` and Esc.
    pub selection: Selection,
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
            selection: Selection::default(),
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
}

/// The item after `current` in `all`, wrapping around (`s` and Tab cycle this way).
fn next_of<T: Copy + PartialEq>(all: &[T], current: T) -> T {
    let i = all.iter().position(|t| *t == current).unwrap_or(0);
    all[(i + 1) % all.len()]
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
        collect::{extras::Extras, session::SystemSplit, tracer::Health},
        model::switches::{Counts, Key as RowKey, Row},
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
            irq: None,
            waits: None,
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
            ..Default::default()
        };
        let zombie = |pid: u32, age_s: u64| Zombie {
            key: ProcKey {
                tgid: pid,
                start_ns: 1,
            },
            comm: format!("kid{pid}"),
            ppid: 20,
            parent_comm: "proc20".into(),
            death_ppid: 20,
            status: ExitStatus::Code(3),
            age_ns: age_s * 1_000_000_000,
            dated: crate::model::proctable::Dated::Exit,
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
                        flags: 0,
                        delta: c,
                        total: c,
                    }],
                    ..ProcCopies::default()
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
        assert_eq!(app.selection.comm.as_deref(), Some("proc1"));
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
        assert_eq!(p10.bytes_s, Some(f64::from(4 << 20)));
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
        app.selection.pids = vec![20];
        assert_eq!(app.visible_zombies().len(), 2);
        app.selection.pids = vec![10];
        assert!(app.visible_zombies().is_empty());
        app.selection.pids.clear();

        app.on_key(Key::Tab);
        assert_eq!(app.tab, Tab::Copies);
        let c = app.visible_copies();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].top_path, "sendfile file->socket");
        assert_eq!(c[0].zero_copy_pct, 100.0);
        app.on_key(Key::Tab);
        assert_eq!(app.tab, Tab::Switches);
    }

    /// `-p A -p B` shows both, busy or not, and nothing else; `--comm` applies with them.
    #[test]
    fn every_pid_asked_for_is_shown() {
        let mut app = App::new(false);
        app.selection = Selection {
            pids: vec![10, 77],
            comm: None,
        };
        app.on_snapshot(&snapshot());
        let mut pids: Vec<u32> = app.visible().iter().map(|l| l.pid).collect();
        pids.sort_unstable();
        assert_eq!(pids, [10, 77]);
        app.selection.comm = Some("sleep".into());
        assert_eq!(
            app.visible().iter().map(|l| l.pid).collect::<Vec<_>>(),
            [77]
        );
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
