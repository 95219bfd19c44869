//! A throwaway cgroup v2 directory for `--cgroup` tests, removed on drop.

use std::{fs, path::PathBuf, time::Duration};

pub struct TestCgroup {
    pub dir: PathBuf,
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
        Self { dir }
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
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
