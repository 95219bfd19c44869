//! What an operator needs to act on a process that holds zombies: its full command
//! line, where it runs (cgroup, and the systemd unit or container the cgroup path names),
//! what it is doing (state and wait channel), and how close it and the machine are to
//! running out of pids. Pure: the caller reads /proc and /sys; parsing lives here.

use std::collections::BTreeMap;

use serde::Serialize;

/// A parent's context, each field `None` when it could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ParentInfo {
    /// `/proc/PID/cmdline`, arguments joined by spaces.
    pub cmdline: Option<String>,
    /// Its cgroup v2 path.
    pub cgroup: Option<String>,
    /// The systemd unit its cgroup path names (`nginx.service`, `session-3.scope`).
    pub unit: Option<String>,
    /// The container its cgroup path names (docker, containerd, CRI-O, podman).
    pub container_id: Option<String>,
    /// `/proc/PID/stat`'s state (`S` sleeping, `R`, `D`, `T`, `Z`...).
    pub state: Option<String>,
    /// `/proc/PID/wchan`: where in the kernel it sleeps (readable to who may ptrace it).
    pub wchan: Option<String>,
    /// The pids controller of its cgroup (or the nearest ancestor with one): tasks now,
    /// and the limit (`None`: no limit, `max`).
    pub pids_current: Option<u64>,
    pub pids_max: Option<u64>,
}

/// A cgroup's pids controller: the cgroup that has it (the process's own, or its nearest
/// ancestor with one), its tasks now (`pids.current`: zombies count until reaped) and
/// its limit (`pids.max`; `None`: `max`, no limit).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct CgroupPids {
    pub cgroup: String,
    pub current: u64,
    pub max: Option<u64>,
}

/// Of a cgroup's pids controllers, nearest first (its own, then its ancestors'), the one
/// that limits it the most: the fewest pids left before `pids.max`; where none has a
/// limit, the nearest.
pub fn tightest(levels: impl IntoIterator<Item = CgroupPids>) -> Option<CgroupPids> {
    let left = |p: &CgroupPids| p.max.map(|m| m.saturating_sub(p.current));
    levels.into_iter().fold(None, |found, here| match found {
        Some(f) if left(&here).is_none_or(|h| left(&f).is_some_and(|l| l <= h)) => Some(f),
        _ => Some(here),
    })
}

/// The machine's pid headroom: tasks (threads) in use against `kernel.pid_max`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Headroom {
    pub pid_max: u64,
    pub tasks: u64,
}

/// What is shown beside zombies: each of their parents' context, the machine's headroom.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub parents: BTreeMap<u32, ParentInfo>,
    pub headroom: Option<Headroom>,
}

impl Context {
    /// The context of parent `ppid` (empty when it was not read).
    pub fn parent(&self, ppid: u32) -> ParentInfo {
        self.parents.get(&ppid).cloned().unwrap_or_default()
    }
}

/// A command line as /proc gives it (NUL-separated arguments): joined by spaces; `None`
/// when empty (a zombie, a kernel thread).
pub fn cmdline(raw: &[u8]) -> Option<String> {
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!args.is_empty()).then(|| args.join(" "))
}

/// A wait channel as /proc gives it: `None` for `0` (running, or not readable).
pub fn wchan(raw: &str) -> Option<String> {
    let w = raw.trim();
    (!w.is_empty() && w != "0").then(|| w.to_string())
}

/// A `pids.max` value: `None` for `max`.
pub fn pids_max(raw: &str) -> Option<u64> {
    raw.trim().parse().ok()
}

/// The pids controller's cgroup in a v1 (hybrid) hierarchy, from /proc/PID/cgroup
/// (`5:pids:/user.slice/x.scope`).
pub fn v1_pids_cgroup(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers.split(',').any(|c| c == "pids").then_some(path)
    })
}

/// Where the v1 pids hierarchy is mounted, and the cgroup the mount shows as its root
/// (`/` unless bind-mounted or in a cgroup namespace), from /proc/self/mountinfo (a
/// `cgroup` mount with the `pids` super option).
pub fn v1_pids_mount(mountinfo: &str) -> Option<(String, String)> {
    mountinfo.lines().find_map(|l| {
        let (mine, fs) = l.split_once(" - ")?;
        let mut f = fs.split_whitespace();
        let (kind, _, options) = (f.next()?, f.next()?, f.next()?);
        if kind != "cgroup" || !options.split(',').any(|o| o == "pids") {
            return None;
        }
        let mut m = mine.split_whitespace().skip(3);
        let (root, at) = (m.next()?, m.next()?);
        Some((at.to_string(), root.to_string()))
    })
}

/// The number of tasks in /proc/loadavg (`0.00 0.01 0.05 1/523 4242`: 523).
pub fn loadavg_tasks(raw: &str) -> Option<u64> {
    raw.split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

/// The systemd unit and the container id a cgroup path names, from its last components:
/// `.../docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `libpod-<id>.scope` (systemd driver), `/docker/<id>`, `/kubepods/.../pod<uid>/<id>`
/// (cgroupfs driver), and the nearest `.service` or `.scope` as the unit.
#[allow(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "systemd unit suffixes are case-sensitive: `x.Service` is no unit"
)]
pub fn owner(cgroup: &str) -> (Option<String>, Option<String>) {
    let parts: Vec<&str> = cgroup.split('/').filter(|p| !p.is_empty()).collect();
    let unit = parts
        .iter()
        .rev()
        .find(|p| p.ends_with(".service") || p.ends_with(".scope"))
        .map(|p| (*p).to_string());
    let container = parts.iter().rev().find_map(|p| container_id(p, &parts));
    (unit, container)
}

/// The container id in one path component, if it names one.
fn container_id(part: &str, parts: &[&str]) -> Option<String> {
    let scoped = part.strip_suffix(".scope").and_then(|s| {
        ["docker-", "cri-containerd-", "crio-", "libpod-"]
            .iter()
            .find_map(|pre| s.strip_prefix(pre))
    });
    if let Some(id) = scoped.filter(|id| is_id(id)) {
        return Some(id.to_string());
    }
    // cgroupfs driver: a bare id under a docker or kubepods hierarchy.
    let under = parts.first().is_some_and(|p| {
        ["docker", "kubepods", "libpod_parent"].contains(p) || p.starts_with("kubepods")
    });
    let bare = part.strip_prefix("libpod-").unwrap_or(part);
    (under && is_id(bare) && bare.len() == 64).then(|| bare.to_string())
}

fn is_id(s: &str) -> bool {
    (12..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";

    #[test]
    fn cgroup_paths_name_their_unit_and_container() {
        let own = |p: &str| owner(p);
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            own("/system.slice/nginx.service"),
            (s("nginx.service"), None)
        );
        assert_eq!(
            own("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service"),
            (s("foo.service"), None)
        );
        assert_eq!(
            own("/user.slice/user-1000.slice/session-3.scope"),
            (s("session-3.scope"), None)
        );
        // systemd driver: docker, containerd (Kubernetes), CRI-O, podman.
        for pre in ["docker-", "cri-containerd-", "crio-", "libpod-"] {
            let path = format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/{pre}{ID}.scope"
            );
            assert_eq!(
                own(&path),
                (Some(format!("{pre}{ID}.scope")), s(ID)),
                "{path}"
            );
        }
        // cgroupfs driver.
        assert_eq!(own(&format!("/docker/{ID}")), (None, s(ID)));
        assert_eq!(
            own(&format!("/kubepods/burstable/pod0b5c-11e9/{ID}")),
            (None, s(ID))
        );
        // Nothing to name.
        assert_eq!(own("/"), (None, None));
        assert_eq!(own("/init.scope"), (s("init.scope"), None));
        assert_eq!(own("/docker/not-an-id"), (None, None));
        assert_eq!(
            own("/system.slice/docker-zz.scope"),
            (s("docker-zz.scope"), None)
        );
    }

    #[test]
    fn proc_texts_parse() {
        assert_eq!(
            cmdline(b"/usr/sbin/nginx\0-g\0daemon off;\0"),
            Some("/usr/sbin/nginx -g daemon off;".into())
        );
        assert_eq!(cmdline(b""), None);
        assert_eq!(wchan("do_wait\n"), Some("do_wait".into()));
        assert_eq!(wchan("0"), None);
        assert_eq!(pids_max("max\n"), None);
        assert_eq!(pids_max("512\n"), Some(512));
        assert_eq!(pids_max(""), None);
        let p = |cgroup: &str, current, max| CgroupPids {
            cgroup: cgroup.into(),
            current,
            max,
        };
        // A scope without a limit inside a slice with one: the slice limits it.
        let scope = p("/user.slice/a.scope", 5, None);
        let slice = p("/user.slice", 90, Some(100));
        assert_eq!(
            tightest([scope.clone(), slice.clone()]),
            Some(slice.clone())
        );
        // The nearest when it has less room, and when none has a limit.
        let tight = p("/user.slice/a.scope", 5, Some(6));
        assert_eq!(tightest([tight.clone(), slice]), Some(tight));
        let top = p("/user.slice", 90, None);
        assert_eq!(tightest([scope.clone(), top]), Some(scope));
        assert_eq!(tightest([]), None);
        let own = "12:pids:/user.slice/a.scope\n11:cpu,cpuacct:/x\n0::/y\n";
        assert_eq!(v1_pids_cgroup(own), Some("/user.slice/a.scope"));
        assert_eq!(v1_pids_cgroup("0::/y\n"), None);
        let mounts = "30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu\n\
                      35 25 0:31 / /sys/fs/cgroup/pids rw,relatime shared:14 - cgroup cgroup rw,pids\n\
                      36 25 0:32 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            v1_pids_mount(mounts),
            Some(("/sys/fs/cgroup/pids".into(), "/".into()))
        );
        // In a cgroup namespace, or bind-mounted: the mount shows a cgroup as its root.
        let ns = "35 25 0:31 /kubepods/pod1 /sys/fs/cgroup/pids ro - cgroup cgroup rw,pids\n";
        assert_eq!(
            v1_pids_mount(ns),
            Some(("/sys/fs/cgroup/pids".into(), "/kubepods/pod1".into()))
        );
        assert_eq!(
            v1_pids_mount("36 25 0:32 / /u rw - cgroup2 cgroup2 rw\n"),
            None
        );
        assert_eq!(loadavg_tasks("0.00 0.01 0.05 1/523 4242\n"), Some(523));
        assert_eq!(loadavg_tasks("garbage"), None);
    }
}
