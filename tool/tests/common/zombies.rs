//! Helpers of the lifecycle tests: `ps` as the oracle, and `proclens zombies` run as a
//! snapshot or a `--watch` stream.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{Bounded as _, COMMAND_LIMIT, PROCLENS, Proclens};

/// `ps -eo pid,ppid,stat`: pid → (ppid, stat).
pub fn ps() -> BTreeMap<u32, (u32, String)> {
    let out = Command::new("ps")
        .args(["-eo", "pid=,ppid=,stat="])
        .output()
        .expect("ps is installed");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((
                f.next()?.parse().ok()?,
                (f.next()?.parse().ok()?, f.next()?.to_string()),
            ))
        })
        .collect()
}

/// Zombie children of `ppid` according to ps.
pub fn ps_zombies_of(ppid: u32) -> BTreeSet<u32> {
    ps().into_iter()
        .filter(|(_, (pp, st))| *pp == ppid && st.starts_with('Z'))
        .map(|(pid, _)| pid)
        .collect()
}

pub fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap()
        .trim_end()
        .to_string()
}

/// `proclens zombies --json` with `args`: (exit code, zombie objects, summary object).
pub fn snapshot(args: &[&str]) -> (i32, Vec<Value>, Value) {
    let out = Command::new(PROCLENS)
        .args(["zombies", "--json"])
        .args(args)
        .output_within(COMMAND_LIMIT);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let summary = lines
        .iter()
        .find(|v| v["type"] == "summary")
        .cloned()
        .unwrap_or_else(|| panic!("no summary in {text}"));
    let zombies = lines
        .into_iter()
        .filter(|v| v["type"] == "zombie")
        .collect();
    (out.status.code().unwrap(), zombies, summary)
}

/// A running `proclens zombies --watch --json`.
pub fn watch(min_age: &str) -> Proclens {
    let p = Proclens::spawn(&[
        "zombies",
        "--watch",
        "--json",
        "--min-age",
        min_age,
        "--interval",
        "0.2",
    ]);
    // The first stats line means the programs are attached and the table is seeded.
    p.json_until(Duration::from_secs(30), |v| v["type"] == "stats");
    p
}

/// Reads watch lines until `done` holds for everything read so far; returns them all.
pub fn collect_until(
    p: &Proclens,
    timeout: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out; saw {} lines, last: {:?}",
            seen.len(),
            seen.last()
        );
        let line = p.line(left);
        seen.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}")));
    }
    seen
}

pub fn of_type<'a>(lines: &'a [Value], kind: &str, ppid: u32) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| v["type"] == kind && v["ppid"] == ppid)
        .collect()
}

/// The stats entry of parent `pid` in a stats line.
pub fn parent_stats(stats: &Value, pid: u32) -> Option<Value> {
    stats["parents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .cloned()
}
