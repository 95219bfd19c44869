//! Small reads from /proc.

use std::{collections::HashMap, fs, path::Path};

use crate::error::Fatal;

/// The command name of a task, or `None` once it has gone.
pub fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end_matches('\n').to_string())
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

/// Command names by key, read once while the task lives and remembered after it exits.
#[derive(Debug)]
pub struct CommCache<K> {
    names: HashMap<K, String>,
}

impl<K> Default for CommCache<K> {
    fn default() -> Self {
        Self {
            names: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy> CommCache<K> {
    /// The name of `pid` for row `key`: re-read while the task lives (exec renames it).
    pub fn get(&mut self, key: K, pid: u32, alive: bool) -> String {
        if alive {
            if let Some(c) = comm(pid) {
                self.names.insert(key, c.clone());
                return c;
            }
        }
        self.names.get(&key).cloned().unwrap_or_else(|| "?".into())
    }

    /// Forgets keys not in `keep`.
    pub fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.names.retain(|k, _| keep(k));
    }
}
