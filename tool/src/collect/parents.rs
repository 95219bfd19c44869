//! Reading a zombie holder's context from /proc and the cgroup v2 tree (see
//! `model::parent_info`): everything here works without privileges except the wait
//! channel of another user's process, which /proc shows only to who may ptrace it.

use std::{fs, path::Path};

use super::{cgroup, procfs};
use crate::model::parent_info::{self, CgroupPids, Headroom, ParentInfo};

/// What /proc and /sys show of process `pid` now.
pub fn info(pid: u32) -> ParentInfo {
    let cgroup_path = procfs::cgroup(pid);
    let (unit, container_id) = cgroup_path
        .as_deref()
        .map(parent_info::owner)
        .unwrap_or_default();
    let (pids_current, pids_max) =
        pids_of_process(pid).map_or((None, None), |p| (Some(p.current), p.max));
    ParentInfo {
        cmdline: fs::read(format!("/proc/{pid}/cmdline"))
            .ok()
            .and_then(|b| parent_info::cmdline(&b)),
        cgroup: cgroup_path,
        unit,
        container_id,
        state: procfs::stat(pid).map(|s| s.state.to_string()),
        wchan: fs::read_to_string(format!("/proc/{pid}/wchan"))
            .ok()
            .and_then(|w| parent_info::wchan(&w)),
        pids_current,
        pids_max,
    }
}

/// The pids controller of process `pid`'s cgroup: in the v2 hierarchy, or, on a hybrid
/// machine whose pids controller is still mounted as v1, there (see [`pids_of`]).
pub fn pids_of_process(pid: u32) -> Option<CgroupPids> {
    if let Some(p) = procfs::cgroup(pid)
        .zip(cgroup::v2_root().ok())
        .and_then(|(path, root)| pids_of(&root, &path))
    {
        return Some(p);
    }
    let (mount, mount_root) = v1_pids_mount()?;
    let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = parent_info::v1_pids_cgroup(&own)?;
    // Paths are from the hierarchy's root; the mount shows the part below its own root.
    let below = Path::new(path).strip_prefix(&mount_root).ok()?;
    pids_of(Path::new(&mount), &format!("/{}", below.display()))
}

/// Where the v1 pids hierarchy is mounted, and which of its cgroups the mount shows as
/// its root: read once.
fn v1_pids_mount() -> Option<(String, String)> {
    static MOUNT: std::sync::OnceLock<Option<(String, String)>> = std::sync::OnceLock::new();
    MOUNT
        .get_or_init(|| {
            parent_info::v1_pids_mount(&fs::read_to_string("/proc/self/mountinfo").ok()?)
        })
        .clone()
}

/// The pids controller that limits `cgroup` (a path below the hierarchy mounted at
/// `root`) the most: of the cgroup and its ancestors that have the controller (a root has
/// none), the one with the fewest pids left before its `pids.max`; where none has a
/// limit, the nearest (its count, no limit).
fn pids_of(root: &Path, cgroup: &str) -> Option<CgroupPids> {
    let mut levels = Vec::new();
    let mut dir = Some(Path::new(cgroup.trim_start_matches('/')));
    while let Some(d) = dir {
        dir = d.parent();
        let at = root.join(d);
        let Ok(cur) = fs::read_to_string(at.join("pids.current")) else {
            continue;
        };
        let (Some(current), Ok(max)) = (
            cur.trim().parse().ok(),
            fs::read_to_string(at.join("pids.max")),
        ) else {
            continue;
        };
        levels.push(CgroupPids {
            cgroup: format!("/{}", d.display()),
            current,
            max: parent_info::pids_max(&max),
        });
    }
    parent_info::tightest(levels)
}

/// The machine's pid headroom now.
pub fn headroom() -> Option<Headroom> {
    Some(Headroom {
        pid_max: fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()?
            .trim()
            .parse()
            .ok()?,
        tasks: parent_info::loadavg_tasks(&fs::read_to_string("/proc/loadavg").ok()?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_and_machine_are_read() {
        let me = info(std::process::id());
        assert!(me.cmdline.as_deref().is_some_and(|c| !c.is_empty()));
        assert!(me.state.is_some() && me.cgroup.is_some());
        let h = headroom().unwrap();
        assert!(
            h.pid_max >= 301 && h.tasks > 0 && h.tasks < h.pid_max,
            "{h:?}"
        );
    }
}
