//! Reading a zombie holder's context from /proc and the cgroup v2 tree (see
//! `model::parent_info`): everything here works without privileges except the wait
//! channel of another user's process, which /proc shows only to who may ptrace it.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use super::{cgroup, procfs};
use crate::model::parent_info::{self, CgroupPids, Headroom, ParentInfo};

/// What /proc and /sys show of process `pid` now.
pub fn info(pid: u32) -> ParentInfo {
    let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let cgroup_path = procfs::v2_path(&own).map(str::to_string);
    let (unit, container_id) = cgroup_path
        .as_deref()
        .map(parent_info::owner)
        .unwrap_or_default();
    let (pids_current, pids_max) = pids_in(&own).map_or((None, None), |p| (Some(p.current), p.max));
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

/// The pids controller of process `pid`'s cgroup (see [`pids_in`]).
pub fn pids_of_process(pid: u32) -> Option<CgroupPids> {
    pids_in(&fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
}

/// Where a pids controller may be mounted: the v2 hierarchy, and a hybrid machine's v1
/// pids hierarchy with the cgroup the mount shows as its root. Read once.
struct PidsMounts {
    v2: Option<PathBuf>,
    v1: Option<(String, String)>,
}

fn mounts() -> &'static PidsMounts {
    static MOUNTS: OnceLock<PidsMounts> = OnceLock::new();
    MOUNTS.get_or_init(|| {
        let mi = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        PidsMounts {
            v2: cgroup::parse_v2_mount(&mi),
            v1: parent_info::v1_pids_mount(&mi),
        }
    })
}

/// The pids controller of the process whose /proc/PID/cgroup reads `own`: in the v2
/// hierarchy, or, on a hybrid machine whose pids controller is still mounted as v1,
/// there (see [`pids_of`]).
fn pids_in(own: &str) -> Option<CgroupPids> {
    let m = mounts();
    if let Some(p) =
        m.v2.as_deref()
            .zip(procfs::v2_path(own))
            .and_then(|(root, path)| pids_of(root, path))
    {
        return Some(p);
    }
    let (mount, mount_root) = m.v1.as_ref()?;
    let path = parent_info::v1_pids_cgroup(own)?;
    // Paths are from the hierarchy's root; the mount shows the part below its own root.
    let below = Path::new(path).strip_prefix(mount_root).ok()?;
    pids_of(Path::new(mount), &format!("/{}", below.display()))
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
