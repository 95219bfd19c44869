//! Who a cgroup v2 path belongs to: a Kubernetes pod and container, a container run by
//! Docker or podman outside Kubernetes, or a systemd unit.
//!
//! The path is the only attribution the kernel offers for free, and its shape depends on
//! the cgroup driver (systemd or cgroupfs) and the container runtime (containerd, CRI-O,
//! Docker, podman): users who rebuild pod names from it with `label_replace` find that it
//! breaks across nodes. The parser reads each layout by its markers, wherever they sit in
//! the path (a cgroup namespace shows `/../..` in front; kind nests everything under
//! `kubelet.slice`), and anything it does not recognise attributes to nothing rather
//! than to a guess; the raw path stays available as the `cgroup` label. The layouts it
//! knows are tested against `tool/tests/fixtures/cgroup-paths.txt`.
//!
//! The pod *name* and namespace are not in the path: [`parse_pod_log_dir`] and
//! [`parse_container_log`] read them from the names of the kubelet's log directories.

/// The container runtime a container's cgroup names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    Podman,
    /// cgroupfs driver under Kubernetes: the directory is the bare id, whoever made it.
    Unknown,
}

impl Runtime {
    /// How the fixtures name it.
    #[cfg(test)]
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
            Runtime::Unknown => "",
        }
    }
}

/// What a cgroup path says about its processes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution {
    /// The Kubernetes pod uid (dashed form, as the API shows it), under `kubepods`.
    pub pod_uid: Option<String>,
    /// The container id (64 hex digits) and the runtime whose naming shows it.
    pub container: Option<(Runtime, String)>,
    /// The innermost systemd unit (`nginx.service`, `session-3.scope`), off Kubernetes
    /// and outside containers (whose scopes are named after their ids).
    pub unit: Option<String>,
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A container id: 64 hex digits (Docker, containerd, CRI-O and podman all use them).
fn container_id(s: &str) -> Option<&str> {
    (s.len() == 64 && is_hex(s)).then_some(s)
}

/// A pod uid as a cgroup name writes it: a UUID with `-` (cgroupfs) or `_` (systemd,
/// where `-` separates slice levels), or the 32 hex digits of a static pod's uid (a hash
/// of its manifest). Returned in the API's form.
fn pod_uid(s: &str) -> Option<String> {
    if s.len() == 32 && is_hex(s) {
        return Some(s.to_ascii_lowercase());
    }
    let parts: Vec<&str> = s.split(['-', '_']).collect();
    let shape = parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12]);
    (s.len() == 36 && shape && parts.iter().all(|p| is_hex(p)))
        .then(|| parts.join("-").to_ascii_lowercase())
}

/// The pod uid in one path segment: `pod<uid>` (cgroupfs) or `...-pod<uid>.slice`
/// (systemd: `kubepods-burstable-pod<uid>.slice`, `kubepods-pod<uid>.slice`).
fn pod_segment(seg: &str) -> Option<String> {
    if let Some(uid) = seg.strip_prefix("pod") {
        return pod_uid(uid);
    }
    let slice = seg.strip_suffix(".slice")?;
    let at = slice.rfind("-pod")?;
    slice[..at]
        .contains("kubepods")
        .then(|| pod_uid(&slice[at + 4..]))?
}

/// The container in one path segment, by the runtime's naming: `cri-containerd-<id>.scope`,
/// `crio-<id>.scope` or `crio-<id>` (CRI-O, either driver), `docker-<id>.scope`,
/// `libpod-<id>.scope` or `libpod-<id>` (podman), or a bare `<id>` (cgroupfs driver:
/// Kubernetes with containerd or Docker, and Docker's own `/docker/<id>`).
fn container_segment(seg: &str, parent: Option<&str>) -> Option<(Runtime, String)> {
    let name = seg.strip_suffix(".scope").unwrap_or(seg);
    let prefixed = [
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("docker-", Runtime::Docker),
        ("libpod-", Runtime::Podman),
    ];
    for (prefix, runtime) in prefixed {
        if let Some(id) = name.strip_prefix(prefix).and_then(container_id) {
            return Some((runtime, id.to_string()));
        }
    }
    let id = container_id(seg)?;
    let runtime = match parent {
        Some("docker") => Runtime::Docker,
        _ => Runtime::Unknown,
    };
    Some((runtime, id.to_string()))
}

/// A runtime's monitor process beside a container (`crio-conmon-<id>.scope`,
/// `libpod-conmon-<id>.scope`): named after a container, but not the container, and not
/// a unit worth a label of its own either (one per container).
fn is_monitor(seg: &str) -> bool {
    seg.starts_with("crio-conmon-") || seg.starts_with("libpod-conmon-")
}

/// Reads a cgroup v2 path (`/kubepods.slice/...`, as /proc/PID/cgroup's `0::` line has
/// it). Never fails: what it does not recognise is left out.
#[allow(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "systemd unit suffixes are case-sensitive: `x.Service` is no unit"
)]
pub fn parse(path: &str) -> Attribution {
    let segs: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != "..")
        .collect();
    let mut a = Attribution::default();
    let mut kube = false;
    for (i, seg) in segs.iter().enumerate() {
        let parent = i.checked_sub(1).map(|p| segs[p]);
        if seg.starts_with("kubepods") || seg.contains("-kubepods") {
            kube = true;
        }
        if kube
            && a.pod_uid.is_none()
            && let Some(uid) = pod_segment(seg)
        {
            a.pod_uid = Some(uid);
            continue;
        }
        if a.container.is_none()
            && !is_monitor(seg)
            && let Some(c) = container_segment(seg, parent)
        {
            // A bare id names a container only where a runtime puts one: in a pod, or
            // under Docker's cgroupfs parent.
            let bare = container_id(seg).is_some();
            if !bare || a.pod_uid.is_some() || parent == Some("docker") {
                a.container = Some(c);
            }
        }
    }
    let contained = kube || a.container.is_some() || segs.iter().any(|s| is_monitor(s));
    if !contained {
        a.unit = segs
            .iter()
            .rev()
            .find(|s| s.ends_with(".service") || s.ends_with(".scope"))
            .map(|s| (*s).to_string());
    }
    a
}

/// A pod's namespace, name and uid from the name of its kubelet log directory,
/// `<namespace>_<name>_<uid>` (`/var/log/pods/`). Namespaces and pod names are DNS names,
/// which cannot hold `_`, so the split is unambiguous.
pub fn parse_pod_log_dir(name: &str) -> Option<(String, String, String)> {
    let mut it = name.splitn(3, '_');
    let (ns, pod, uid) = (it.next()?, it.next()?, it.next()?);
    let uid = pod_uid(uid)?;
    (!ns.is_empty() && !pod.is_empty()).then(|| (ns.to_string(), pod.to_string(), uid))
}

/// A container's name and id from the name of its kubelet log symlink,
/// `<pod>_<namespace>_<container>-<id>.log` (`/var/log/containers/`).
pub fn parse_container_log(name: &str) -> Option<(String, String)> {
    let stem = name.strip_suffix(".log")?;
    let (rest, id) = stem.rsplit_once('-')?;
    let id = container_id(id)?;
    let container = rest.splitn(3, '_').nth(2)?;
    (!container.is_empty()).then(|| (container.to_string(), id.to_string()))
}

#[cfg(test)]
mod tests;
