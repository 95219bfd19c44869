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

struct Tmux {
    session: String,
}

impl Tmux {
    fn new() -> Self {
        let session = format!("proclens-test-{}", std::process::id());
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                "160",
                "-y",
                "40",
                "sh",
            ])
            .env("TERM", "xterm-256color")
            .status()
            .expect("tmux (cargo xtask setup installs it)")
            .success();
        assert!(ok, "tmux new-session failed");
        Self { session }
    }

    fn send(&self, keys: &[&str]) {
        assert!(
            Command::new("tmux")
                .args(["send-keys", "-t", &self.session])
                .args(keys)
                .status()
                .unwrap()
                .success()
        );
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
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
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .status();
    }
}

/// A process with a recognisable name that switches ~100 times a second.
fn named_workload() -> (Child, String, std::path::PathBuf) {
    let name = format!("pltui{}", std::process::id() % 100_000);
    let link = std::env::temp_dir().join(&name);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/bin/sh", &link).unwrap();
    let child = Command::new(&link)
        .args(["-c", "while :; do sleep 0.01; done"])
        .spawn()
        .unwrap();
    (child, name, link)
}

#[test]
fn live_table_shows_sorts_and_restores_the_terminal() {
    if !can_trace() {
        return;
    }
    let (mut workload, name, link) = named_workload();
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
    let s = t.wait_for("the filter", Duration::from_secs(5), |s| {
        s.contains(&format!("comm~{name}"))
    });
    let table_rows = s
        .lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .count();
    assert_eq!(table_rows, 1, "{s}");
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
    let _ = workload.kill();
    let _ = workload.wait();
    let _ = std::fs::remove_file(link);
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
    let pid = String::from_utf8(
        Command::new("pgrep")
            .args(["-n", "-x", "proclens"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let pid: i32 = pid.trim().parse().unwrap();
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
