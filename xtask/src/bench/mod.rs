//! `cargo xtask bench`: overhead measurements, all conditions in one run on one machine,
//! interleaved so drifting noise hits every condition alike; ratios, not absolute times,
//! are what to compare. `--record` writes the tables into BENCHMARKS.md.

mod bpf_stats;
pub mod faults;
mod filtered;
mod fleet;
mod irq;
mod lifecycle;
mod load;
mod serve;
mod startup;
mod switches;
pub mod syscalls;
pub mod waits;

use std::{
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// The sections, in the order they run.
pub const SECTIONS: [&str; 10] = [
    "switches",
    "lifecycle",
    "syscalls",
    "filtered",
    "load",
    "serve",
    "startup",
    "faults",
    "irq",
    "waits",
];

/// Runs every benchmark (or those named in `only`); returns the markdown sections by
/// marker name.
pub fn run_all(
    proclens: &Path,
    reps: usize,
    round_trips: u64,
    only: &[String],
    anchor: Option<&Path>,
) -> Result<Vec<(&'static str, String)>> {
    if let Some(unknown) = only.iter().find(|o| !SECTIONS.contains(&o.as_str())) {
        bail!(
            "no bench section {unknown:?} (sections: {})",
            SECTIONS.join(", ")
        );
    }
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut out = Vec::new();
    if wanted("switches") {
        // Both switch bpf_stats on only for their own cost runs.
        out.push(("switches", switches::run(proclens, reps)?));
    }
    if wanted("lifecycle") {
        out.push(("lifecycle", lifecycle::run(proclens, reps)?));
    }
    if wanted("syscalls") {
        out.push((
            "syscalls",
            syscalls::run(proclens, round_trips, reps as u32)?,
        ));
    }
    if wanted("filtered") {
        out.push(("filtered", filtered::run(proclens, reps)?));
    }
    if wanted("load") {
        out.push(("load", load::run(proclens)?));
    }
    if wanted("serve") {
        out.push(("serve", serve::run(proclens, reps, anchor)?));
    }
    if wanted("startup") {
        out.push(("startup", startup::run(proclens, reps)?));
    }
    if wanted("faults") {
        out.push(("faults", faults::run(proclens, reps)?));
    }
    if wanted("irq") {
        out.push(("irq", irq::run(proclens, reps)?));
    }
    if wanted("waits") {
        out.push(("waits", waits::run(proclens, reps)?));
    }
    Ok(out)
}

/// Replaces the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in
/// BENCHMARKS.md (appending the section when it is missing).
pub fn record(path: &Path, sections: &[(&str, String)]) -> Result<()> {
    let mut text = fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    for (name, body) in sections {
        let (open, close) = (
            format!("<!-- bench:{name} -->"),
            format!("<!-- /bench:{name} -->"),
        );
        let block = format!("{open}\n{body}\n{close}");
        match (text.find(&open), text.find(&close)) {
            (Some(a), Some(b)) if b > a => text.replace_range(a..b + close.len(), &block),
            _ => text = format!("{}\n\n{block}\n", text.trim_end()),
        }
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// A tracer running in the background for the length of a measurement.
pub struct Background {
    child: Child,
}

impl Background {
    /// Starts `cmd` and waits until it holds at least `progs` BPF programs (attached).
    pub fn start(mut cmd: Command, progs: usize) -> Result<Self> {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let mut bg = Self { child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while bg.prog_ids().len() < progs {
            if Instant::now() > deadline {
                bail!("{cmd:?} did not attach {progs} programs within 30 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
        // Loaded is not attached: a tracer that fails to attach its last program exits
        // after loading them all (bpftrace does), and what followed would run untraced.
        thread::sleep(Duration::from_millis(500));
        if let Some(st) = bg.child.try_wait()? {
            bail!("{cmd:?} exited ({st}) after loading its programs: it failed to attach");
        }
        Ok(bg)
    }

    /// CPU time the process has used so far (ns), all its threads
    /// (`/proc/PID/task/*/schedstat`'s first field).
    pub fn cpu_ns(&self) -> u64 {
        let Ok(dir) = fs::read_dir(format!("/proc/{}/task", self.child.id())) else {
            return 0;
        };
        dir.flatten()
            .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// Values of fdinfo field `field` (`prog_id`, `map_id`) over the fds the process
    /// holds, of links (`links`) or of the rest.
    fn fdinfo_ids(&self, field: &str, links: bool) -> Vec<u64> {
        let mut ids = Vec::new();
        let Ok(dir) = fs::read_dir(format!("/proc/{}/fdinfo", self.child.id())) else {
            return ids;
        };
        for fd in dir.flatten() {
            let Ok(info) = fs::read_to_string(fd.path()) else {
                continue;
            };
            if info.lines().any(|l| l.starts_with("link_id:")) != links {
                continue;
            }
            ids.extend(
                info.lines()
                    .filter_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                    .filter_map(|v| v.trim().parse::<u64>().ok()),
            );
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Ids of the programs the process has attached through links it holds.
    pub fn attached_prog_ids(&self) -> Vec<u64> {
        self.fdinfo_ids("prog_id", true)
    }

    /// Ids of the BPF maps the process holds.
    pub fn map_ids(&self) -> Vec<u64> {
        self.fdinfo_ids("map_id", false)
    }

    /// Ids of the BPF programs the process holds (from its fdinfo; a link's fdinfo names
    /// its program too, so links are left out: each program once).
    pub fn prog_ids(&self) -> Vec<u64> {
        self.fdinfo_ids("prog_id", false)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // SAFETY: SIGINT to our own child, so it detaches cleanly.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

/// Machine and kernel, for the record.
pub fn machine() -> String {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = thread::available_parallelism().map_or(0, usize::from);
    format!("Linux {}, {cpus} CPUs ({cpu})", kernel.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn record_replaces_or_appends_sections() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("B.md");
        fs::write(
            &p,
            "# B\n\nintro\n\n<!-- bench:a -->\nold\n<!-- /bench:a -->\n\noutro\n",
        )
        .unwrap();
        record(&p, &[("a", "new".into()), ("b", "bee".into())]).unwrap();
        let t = fs::read_to_string(&p).unwrap();
        assert!(
            t.contains("<!-- bench:a -->\nnew\n<!-- /bench:a -->"),
            "{t}"
        );
        assert!(!t.contains("old"));
        assert!(t.contains("outro"));
        assert!(
            t.trim_end()
                .ends_with("<!-- bench:b -->\nbee\n<!-- /bench:b -->"),
            "{t}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
