//! The live TUI in a real terminal (tmux): it shows a known workload by name with a
//! non-zero rate, sorts, filters, quits on `q`, and leaves the terminal as it found it.
mod common;

use std::{
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use common::{PROCLENS, can_trace};

workload_entry!();

/// A terminal of its own: a tmux server on a private socket (`-L`) with one session. A
/// shared default server made one test's `new-session` race the shutdown of the server
/// whose last session the previous test had just killed.
struct Tmux {
    socket: String,
    session: String,
}

impl Tmux {
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("proclens-test-{}-{n}", std::process::id());
        let t = Self {
            socket: name.clone(),
            session: name,
        };
        let out = t
            .cmd()
            .args(["new-session", "-d", "-s", &t.session])
            .args(["-x", "160", "-y", "40", "sh"])
            .env("TERM", "xterm-256color")
            .output()
            .expect("tmux (cargo xtask setup installs it)");
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    /// `tmux -L <this terminal's server>`.
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn send(&self, keys: &[&str]) {
        assert!(
            self.cmd()
                .args(["send-keys", "-t", &self.session])
                .args(keys)
                .status()
                .unwrap()
                .success()
        );
    }

    /// The pid of the proclens the pane's shell is running.
    fn proclens_pid(&self) -> i32 {
        let out = self
            .cmd()
            .args(["list-panes", "-t", &self.session, "-F", "#{pane_pid}"])
            .output()
            .unwrap();
        let shell = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let out = Command::new("pgrep")
            .args(["-P", &shell, "-x", "proclens"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no proclens under the pane's shell {shell}"))
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(&self, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{s}"
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The line the shell prints after proclens exits (`EXITED-<code>`), not the typed command.
fn exit_line(screen: &str) -> Option<&str> {
    // The shell may print its prompt (`# `) before the line.
    screen
        .lines()
        .filter(|l| !l.contains("echo"))
        .filter_map(|l| l.split_whitespace().last())
        .find(|w| {
            w.strip_prefix("EXITED-")
                .is_some_and(|c| !c.is_empty() && c.chars().all(|d| d.is_ascii_digit()))
        })
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // The server exits with its only session; its socket file stays unless removed.
        let socket = self
            .cmd()
            .args(["display-message", "-p", "#{socket_path}"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let _ = self
            .cmd()
            .args(["kill-session", "-t", &self.session])
            .status();
        if let Ok(path) = socket
            && !path.is_empty()
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A background process and the symlink that names it, both gone when dropped (also when
/// a test fails).
struct Named {
    child: Child,
    name: String,
    link: std::path::PathBuf,
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.link);
    }
}

/// A process with a recognisable name that switches ~100 times a second and writes 6
/// bytes each time (the shell's builtin echo, to /dev/null).
fn named_workload() -> Named {
    let name = format!("pltui{}", std::process::id() % 100_000);
    let link = std::env::temp_dir().join(&name);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/bin/sh", &link).unwrap();
    let child = Command::new(&link)
        .args(["-c", "while :; do echo hello; sleep 0.01; done > /dev/null"])
        .spawn()
        .unwrap();
    Named { child, name, link }
}

/// A process named `plz<pid>` holding two zombies (two `true`s it never waits for).
fn zombie_parent() -> Named {
    let name = format!("plz{}", std::process::id() % 100_000);
    let link = std::env::temp_dir().join(&name);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/bin/sleep", &link).unwrap();
    let child = Command::new("sh")
        .args([
            "-c",
            &format!("/bin/true & /bin/true & exec {} 60", link.display()),
        ])
        .spawn()
        .unwrap();
    Named { child, name, link }
}

/// A `sleep 60` named `name` (through a symlink).
fn named_sleeper(name: &str) -> Named {
    let link = std::env::temp_dir().join(name);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/bin/sleep", &link).unwrap();
    let child = Command::new(&link).arg("60").spawn().unwrap();
    Named {
        child,
        name: name.to_string(),
        link,
    }
}

/// `top -p A -p B -p C --comm NAME --count 2`: the live view shows A and B (every pid
/// asked for, though they only sleep), not C (whose name does not match) nor anything
/// else, and ends by itself after two reports with status 0, as the line view does.
#[test]
fn count_every_pid_and_comm_are_honoured() {
    if !can_trace() {
        return;
    }
    let tag = std::process::id() % 100_000;
    let (a, b) = (
        named_sleeper(&format!("plsel{tag}a")),
        named_sleeper(&format!("plsel{tag}b")),
    );
    let c = named_sleeper(&format!("ploth{tag}c"));
    let pids = [&a, &b, &c].map(|n| n.child.id().to_string());
    let t = Tmux::new();
    t.send(&[
        &format!(
            "{PROCLENS} top -p {} -p {} -p {} --comm plsel{tag} --interval 1.5 --count 2; echo EXITED-$?",
            pids[0], pids[1], pids[2]
        ),
        "Enter",
    ]);
    let rows = |s: &str, pid: &str| {
        s.lines()
            .filter(|l| l.split_whitespace().next() == Some(pid))
            .count()
    };
    let s = t.wait_for("both selected sleepers", Duration::from_secs(30), |s| {
        rows(s, &pids[0]) == 1 && rows(s, &pids[1]) == 1
    });
    assert_eq!(rows(&s, &pids[2]), 0, "the unmatched name is shown:\n{s}");
    assert!(s.contains(&a.name) && s.contains(&b.name), "{s}");
    let table_rows = s
        .lines()
        .filter(|l| {
            !l.contains("Switches")
                && l.split_whitespace()
                    .next()
                    .is_some_and(|w| w.parse::<u32>().is_ok())
        })
        .count();
    assert_eq!(table_rows, 2, "only the two selected processes:\n{s}");
    let s = t.wait_for("proclens to exit by itself", Duration::from_secs(30), |s| {
        exit_line(s).is_some()
    });
    assert_eq!(exit_line(&s), Some("EXITED-0"), "{s}");
}

/// The Zombies view lists a parent's zombies with the parent's name; the Copies view
/// shows a process that writes, with its busiest path (the Copies view needs --syscalls).
#[test]
fn zombies_and_copies_views() {
    if !can_trace() {
        return;
    }
    let writer = named_workload();
    let parent = zombie_parent();
    let (name, pname) = (writer.name.clone(), parent.name.clone());
    let t = Tmux::new();
    t.send(&[
        &format!("{PROCLENS} top --syscalls --interval 0.5; echo EXITED-$?"),
        "Enter",
    ]);
    // The Switches view: the parent is listed with its 2 zombies even though it sleeps
    // (filtered by name: a busy machine has more rows than the screen).
    t.wait_for("the table", Duration::from_secs(20), |s| {
        s.contains("nvcswch/s")
    });
    t.send(&["/"]);
    t.send(&[&pname, "Enter"]);
    let s = t.wait_for("the zombie parent's row", Duration::from_secs(20), |s| {
        s.lines()
            .any(|l| l.contains(&pname) && l.split_whitespace().last() == Some("2"))
    });
    assert!(s.contains("zomb"), "{s}");
    t.send(&["2"]);
    let s = t.wait_for("the zombies view", Duration::from_secs(10), |s| {
        s.lines()
            .filter(|l| l.contains(&pname) && l.contains("true"))
            .count()
            == 2
    });
    assert!(s.contains("exit 0"), "{s}");
    t.send(&["Escape", "/"]);
    t.send(&[&name, "Enter", "3"]);
    let s = t.wait_for("the copies view", Duration::from_secs(10), |s| {
        s.lines()
            .any(|l| l.contains(&name) && l.contains("write user->other"))
    });
    assert!(s.contains("BUSIEST PATH"), "{s}");
    t.send(&["q"]);
    let s = t.wait_for("proclens to exit", Duration::from_secs(10), |s| {
        exit_line(s).is_some()
    });
    assert_eq!(exit_line(&s), Some("EXITED-0"), "{s}");
}

#[test]
fn live_table_shows_sorts_and_restores_the_terminal() {
    if !can_trace() {
        return;
    }
    let workload = named_workload();
    let name = workload.name.clone();
    let t = Tmux::new();
    t.send(&[
        &format!("{PROCLENS} top --interval 0.5; echo EXITED-$?"),
        "Enter",
    ]);
    let s = t.wait_for("the workload in the table", Duration::from_secs(20), |s| {
        s.contains(&name) && s.contains("nvcswch/s")
    });
    let row = s.lines().find(|l| l.contains(&name)).unwrap();
    let rate: f64 = row.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(rate > 0.0, "the workload's cswch/s is zero: {row}");
    assert!(s.contains("q quit"), "{s}");
    // Sorting cycles.
    t.send(&["s"]);
    t.wait_for("sort by cswch/s", Duration::from_secs(5), |s| {
        s.contains("sort: cswch/s")
    });
    // Command filter: only the workload's line remains.
    t.send(&["/"]);
    t.send(&[&name, "Enter"]);
    // The frame is written top to bottom: the header shows the filter before the rows
    // below are redrawn, and the prompt line at the bottom goes last.
    let s = t.wait_for("the filter", Duration::from_secs(5), |s| {
        s.contains(&format!("comm~{name}")) && !s.contains("command contains:")
    });
    // Only the workload's line remains (and, at times, a forked child of it that has not
    // exec'd `sleep` yet, which still bears its name).
    let table_rows: Vec<&str> = s
        .lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
                && !l.contains("Switches")
        })
        .collect();
    assert!(
        table_rows
            .iter()
            .any(|l| l.split_whitespace().next() == Some(&workload.child.id().to_string())),
        "{s}"
    );
    assert!(table_rows.iter().all(|l| l.contains(&name)), "{s}");
    // Quit: the shell gets its prompt back, the exit code is 0, the screen is the shell's.
    t.send(&["q"]);
    let s = t.wait_for("proclens to exit", Duration::from_secs(10), |s| {
        exit_line(s).is_some()
    });
    assert_eq!(exit_line(&s), Some("EXITED-0"), "{s}");
    assert!(
        !s.contains("nvcswch/s"),
        "still on the alternate screen:\n{s}"
    );
    // The shell reads its next line in canonical mode again (raw mode was undone). The
    // marker is split in the typed command so only the output line matches it.
    t.send(&[
        "clear; printf 'MO''DE:%s\\n' \"$(stty -a | grep -o -- '-*icanon')\"",
        "Enter",
    ]);
    let after = t.wait_for("stty output", Duration::from_secs(5), |s| {
        s.lines().any(|l| l.trim().starts_with("MODE:"))
    });
    let mode = after
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("MODE:"))
        .unwrap();
    assert_eq!(mode, "MODE:icanon", "terminal mode not restored:\n{after}");
    drop(workload);
}

#[test]
fn sigterm_restores_the_terminal_too() {
    if !can_trace() {
        return;
    }
    let t = Tmux::new();
    t.send(&[
        &format!("{PROCLENS} top --interval 0.3; echo EXITED-$?"),
        "Enter",
    ]);
    t.wait_for("the table", Duration::from_secs(20), |s| {
        s.contains("nvcswch/s")
    });
    let pid = t.proclens_pid();
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let s = t.wait_for("proclens to exit", Duration::from_secs(10), |s| {
        exit_line(s).is_some()
    });
    assert_eq!(exit_line(&s), Some("EXITED-0"), "{s}");
    assert!(
        !s.contains("nvcswch/s"),
        "still on the alternate screen:\n{s}"
    );
}

/// Closing the terminal under the live view (the tmux session is killed) ends proclens
/// promptly, instead of leaving it spinning on a dead tty with its programs attached.
#[test]
fn a_closed_terminal_ends_the_view() {
    if !can_trace() {
        return;
    }
    let t = Tmux::new();
    t.send(&[&format!("{PROCLENS} top --interval 0.3"), "Enter"]);
    t.wait_for("the table", Duration::from_secs(20), |s| {
        s.contains("nvcswch/s")
    });
    let pid = t.proclens_pid();
    drop(t);
    let deadline = Instant::now() + Duration::from_secs(10);
    // Gone, or a zombie waiting for its (killed) shell's reaper.
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
            st.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        })
    };
    while alive() {
        assert!(
            Instant::now() < deadline,
            "proclens {pid} still runs after its terminal closed"
        );
        thread::sleep(Duration::from_millis(100));
    }
}
