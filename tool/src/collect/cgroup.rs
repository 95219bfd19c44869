//! cgroup v2: resolving `--cgroup PATH` to the id the kernel compares, and the throwaway
//! cgroup `run -- CMD` puts its command in so it and every descendant are traced from the
//! first instruction, with no race.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::error::Fatal;

/// A cgroup v2 subtree to trace: its id (the cgroup directory's inode number) and depth
/// below the v2 root (the ancestor level `bpf_get_current_ancestor_cgroup_id` compares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupFilter {
    pub path: PathBuf,
    pub id: u64,
    pub level: u32,
}

/// The cgroup v2 mount point from a /proc/self/mountinfo text.
pub fn parse_v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        // ... mount-point ... - fstype source options
        let (left, right) = l.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

pub fn v2_root() -> Result<PathBuf> {
    let mi = fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    parse_v2_mount(&mi).ok_or_else(|| {
        Fatal::KernelUnsupported(
            "no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup)".into(),
        )
        .into()
    })
}

/// Resolves a user's path: absolute under the v2 mount, or relative to it.
pub fn resolve(path: &Path) -> Result<CgroupFilter> {
    let root = v2_root()?;
    let full = if path.starts_with(&root) {
        path.to_path_buf()
    } else {
        root.join(path.strip_prefix("/").unwrap_or(path))
    };
    let meta =
        fs::metadata(&full).map_err(|e| Fatal::NoSuchCgroup(format!("{}: {e}", full.display())))?;
    if !full.join("cgroup.procs").exists() {
        return Err(Fatal::NoSuchCgroup(format!(
            "{} is not a cgroup v2 directory",
            full.display()
        ))
        .into());
    }
    let rel = full
        .strip_prefix(&root)
        .context("cgroup path outside the v2 mount")?;
    let level = rel.components().count() as u32;
    Ok(CgroupFilter {
        path: full,
        id: meta.ino(),
        level,
    })
}

/// A cgroup created for one command and removed when dropped (its remaining processes
/// are moved back to proclens's own cgroup first).
#[derive(Debug)]
pub struct RunCgroup {
    pub filter: CgroupFilter,
    home: PathBuf,
}

impl RunCgroup {
    pub fn create() -> Result<Self> {
        let root = v2_root()?;
        let own = fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
        let own_rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/");
        let home = root.join(own_rel.trim_start_matches('/'));
        let dir = root.join(format!("proclens-run-{}", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        let filter = resolve(&dir)?;
        Ok(Self { filter, home })
    }

    /// Path of `cgroup.procs`, written by the child before it execs.
    pub fn procs_file(&self) -> PathBuf {
        self.filter.path.join("cgroup.procs")
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        // Processes the command left running go back where proclens runs.
        if let Ok(pids) = fs::read_to_string(self.procs_file()) {
            for pid in pids.lines() {
                let _ = fs::write(self.home.join("cgroup.procs"), pid);
            }
        }
        let _ = fs::remove_dir(&self.filter.path);
    }
}

/// Fails unless `path` names a cgroup (for argument checking before anything is loaded).
pub fn check_exists(path: &Path) -> Result<CgroupFilter> {
    let f = resolve(path)?;
    if f.id == 0 {
        bail!("cgroup {} has id 0", f.path.display());
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_v2_mount() {
        let hybrid = "25 30 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
                      33 25 0:28 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                      34 25 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            parse_v2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(parse_v2_mount(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(
            parse_v2_mount("34 25 0:29 / /x rw - cgroup cgroup rw,cpu\n"),
            None
        );
        assert_eq!(parse_v2_mount("garbage"), None);
        assert_eq!(parse_v2_mount(""), None);
    }
}
