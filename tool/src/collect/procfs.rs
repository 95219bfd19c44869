//! Small reads from /proc.

use std::{collections::HashMap, fs, path::Path};

use crate::error::Fatal;

/// The command name of a task, or `None` once it has gone.
pub fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end_matches('\n').to_string())
}

/// The cgroup v2 path of a process (`0::/system.slice/x.service` → `/system.slice/x.service`).
pub fn cgroup(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// Whether a process exists.
pub fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Fails with exit code 4 for the first pid that does not exist.
pub fn check_pids(pids: &[u32]) -> anyhow::Result<()> {
    match pids.iter().find(|p| !exists(**p)) {
        Some(p) => Err(Fatal::NoSuchProcess(*p).into()),
        None => Ok(()),
    }
}

/// A per-process text from /proc (command name, cgroup) by row key: re-read while the
/// task lives (exec renames it), remembered after it exits.
#[derive(Debug)]
pub struct NameCache<K> {
    names: HashMap<K, String>,
    read: fn(u32) -> Option<String>,
}

/// Command names by row key.
pub type CommCache<K> = NameCache<K>;

impl<K> Default for NameCache<K> {
    fn default() -> Self {
        Self {
            names: HashMap::new(),
            read: comm,
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy> NameCache<K> {
    /// A cache filled by `read` (e.g. [`cgroup`]).
    pub fn reading(read: fn(u32) -> Option<String>) -> Self {
        Self {
            names: HashMap::new(),
            read,
        }
    }

    /// The text for `pid` under row `key`, else the last one seen, else `hint` (from an
    /// exit event), else `?`.
    pub fn get(&mut self, key: K, pid: u32, alive: bool, hint: Option<&str>) -> String {
        if alive {
            if let Some(c) = (self.read)(pid) {
                self.names.insert(key, c.clone());
                return c;
            }
        }
        if let Some(h) = hint {
            return h.to_string();
        }
        self.names.get(&key).cloned().unwrap_or_else(|| "?".into())
    }

    /// Forgets keys not in `keep`.
    pub fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.names.retain(|k, _| keep(k));
    }
}
