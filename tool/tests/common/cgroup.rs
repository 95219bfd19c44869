//! A throwaway cgroup v2 directory for `--cgroup` tests, removed on drop.

use std::{fs, path::PathBuf, time::Duration};

pub struct TestCgroup {
    pub dir: PathBuf,
    /// Parents this made for a nested cgroup, innermost first (removed after `dir`).
    parents: Vec<PathBuf>,
}

/// Where the cgroup v2 hierarchy is mounted.
pub fn v2_root() -> PathBuf {
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = mi
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split_whitespace().nth(4))
        .expect("a cgroup2 mount");
    PathBuf::from(root)
}

/// Where a cgroup of the pids controller can be made: the v2 root when its children have
/// the controller, else the v1 pids hierarchy of a hybrid machine (this one's); with the
/// hierarchy's root, from which cgroup paths are shown.
pub fn pids_hierarchy() -> PathBuf {
    let v2 = v2_root();
    let control = fs::read_to_string(v2.join("cgroup.subtree_control")).unwrap_or_default();
    if control.split_whitespace().any(|c| c == "pids") {
        return v2;
    }
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let v1 = mi
        .lines()
        .find(|l| {
            l.split_once(" - ").is_some_and(|(_, fs)| {
                fs.starts_with("cgroup ")
                    && fs
                        .split_whitespace()
                        .nth(2)
                        .is_some_and(|o| o.split(',').any(|o| o == "pids"))
            })
        })
        .and_then(|l| l.split_whitespace().nth(4))
        .expect("a pids controller: in the v2 root's subtree_control or a v1 mount");
    PathBuf::from(v1)
}

impl TestCgroup {
    /// `proclens-test-<name>-<pid>` in the pids hierarchy (see [`pids_hierarchy`]), with
    /// `pids.max` set to `max`.
    pub fn with_pids_max(name: &str, max: u64) -> Self {
        let dir = pids_hierarchy().join(format!("proclens-test-{name}-{}", std::process::id()));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("pids.max"), max.to_string()).unwrap();
        Self {
            dir,
            parents: Vec::new(),
        }
    }

    /// Tasks in the cgroup now, as its pids controller counts them.
    pub fn pids_current(&self) -> u64 {
        fs::read_to_string(self.dir.join("pids.current"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// `proclens-test-<name>-<pid>` below the cgroup v2 root.
    pub fn new(name: &str) -> Self {
        let dir = v2_root().join(format!("proclens-test-{name}-{}", std::process::id()));
        fs::create_dir(&dir).unwrap();
        Self {
            dir,
            parents: Vec::new(),
        }
    }

    /// The cgroup at `rel` below the v2 root (`kubepods.slice/.../x.scope`), making the
    /// levels that do not exist yet (and removing those on drop).
    pub fn nested(rel: &str) -> Self {
        let mut made = Vec::new();
        let mut dir = v2_root();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            if !dir.exists() {
                fs::create_dir(&dir).unwrap();
                made.push(dir.clone());
            }
        }
        let dir = made.pop().expect("the innermost level is new");
        made.reverse();
        Self { dir, parents: made }
    }

    /// The cgroup's path as /proc/PID/cgroup shows it (from the v2 root).
    pub fn rel(&self) -> String {
        format!("/{}", self.dir.strip_prefix(v2_root()).unwrap().display())
    }

    pub fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add(&self, pid: u32) {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Its processes must be gone (reaped) first; give stragglers a second.
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for p in &self.parents {
            let _ = fs::remove_dir(p);
        }
    }
}
