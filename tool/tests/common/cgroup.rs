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

impl TestCgroup {
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
