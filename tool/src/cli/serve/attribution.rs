//! The attribution labels of `serve` (`--labels`): the raw cgroup path, the systemd unit,
//! the Kubernetes pod and container it names, each read once per cgroup path and shared
//! by every process there. Pod names and namespaces come from the kubelet's log
//! directories (`--pod-log-dir`), read again when a pod uid shows up that they do not
//! name yet (at most once per interval).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use clap::ValueEnum;

use crate::model::{
    attribution::{self, Attribution},
    exporter::Attrs,
};

/// Label groups `--labels` can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LabelGroup {
    /// `comm`: the command name.
    Comm,
    /// `cgroup`: the raw cgroup v2 path.
    Cgroup,
    /// `systemd_unit`: the innermost systemd unit, off Kubernetes and outside containers.
    Unit,
    /// `k8s_namespace`, `k8s_pod_name`, `k8s_pod_uid`, `k8s_container_name`, `container_id`.
    Pod,
    /// `container_id`: a container's id (Docker, podman, any Kubernetes runtime).
    Container,
}

/// Intervals an unused cgroup path's labels are kept before they are read again.
const FORGET_AFTER: u64 = 120;

/// Intervals during which the kubelet's directories are read again for a pod or
/// container they do not name yet.
const NAME_TRIES: u64 = 12;

/// The labels chosen, and the kubelet's names for pods and containers.
#[derive(Debug)]
pub(super) struct Attributor {
    groups: Vec<LabelGroup>,
    by_path: HashMap<String, (Attrs, u64)>,
    names: PodNames,
    interval: u64,
}

impl Attributor {
    pub(super) fn new(groups: &[LabelGroup], pod_log_dir: PathBuf) -> Self {
        Self {
            groups: groups.to_vec(),
            by_path: HashMap::new(),
            names: PodNames::new(pod_log_dir),
            interval: 0,
        }
    }

    pub(super) fn comm(&self) -> bool {
        self.groups.contains(&LabelGroup::Comm)
    }

    /// Whether cgroup paths are shown (the `cgroup` group).
    pub(super) fn cgroup(&self) -> bool {
        self.groups.contains(&LabelGroup::Cgroup)
    }

    /// The attribution labels of the processes in cgroup `path`.
    pub(super) fn attrs(&mut self, path: &str) -> Attrs {
        if let Some((a, used)) = self.by_path.get_mut(path) {
            *used = self.interval;
            return a.clone();
        }
        let a = attribution::parse(path);
        if let Some(uid) = &a.pod_uid
            && self.groups.contains(&LabelGroup::Pod)
        {
            let id = a.container.as_ref().map(|(_, id)| id.as_str());
            self.names.want(uid, id, self.interval);
        }
        let attrs = self.labels(path, &a);
        self.by_path
            .insert(path.to_string(), (attrs.clone(), self.interval));
        attrs
    }

    fn labels(&self, path: &str, a: &Attribution) -> Attrs {
        let mut v: Vec<(&'static str, Arc<str>)> = Vec::new();
        let s = |o: Option<&str>| Arc::<str>::from(o.unwrap_or(""));
        let id = a.container.as_ref().map(|(_, id)| id.as_str());
        for g in [LabelGroup::Cgroup, LabelGroup::Unit, LabelGroup::Pod] {
            if !self.groups.contains(&g) {
                continue;
            }
            match g {
                LabelGroup::Cgroup => v.push(("cgroup", path.into())),
                LabelGroup::Unit => v.push(("systemd_unit", s(a.unit.as_deref()))),
                _ => {
                    let uid = a.pod_uid.as_deref();
                    let pod = uid.and_then(|u| self.names.pods.get(u));
                    v.push(("k8s_namespace", s(pod.map(|p| p.0.as_str()))));
                    v.push(("k8s_pod_name", s(pod.map(|p| p.1.as_str()))));
                    v.push(("k8s_pod_uid", s(uid)));
                    let name = id.and_then(|i| self.names.containers.get(i));
                    v.push(("k8s_container_name", s(name.map(String::as_str))));
                }
            }
        }
        if self.groups.contains(&LabelGroup::Pod) || self.groups.contains(&LabelGroup::Container) {
            v.push(("container_id", s(id)));
        }
        v.into()
    }

    /// Ends an interval: forgets paths unused for a while, and when a pod uid was not
    /// named, reads the kubelet's directories again and forgets the labels made without
    /// its name.
    pub(super) fn end_interval(&mut self) {
        let now = self.interval;
        self.by_path
            .retain(|_, (_, used)| now.saturating_sub(*used) < FORGET_AFTER);
        if self.names.refresh(now) {
            self.by_path.clear();
        }
        self.interval += 1;
    }

    /// Cgroup paths whose labels are kept (`proclens_label_sets` is the other table).
    #[cfg(test)]
    pub(super) fn paths(&self) -> usize {
        self.by_path.len()
    }
}

/// Pod namespaces and names by uid, container names by id, from the kubelet's
/// `/var/log/pods/<namespace>_<name>_<uid>/` and `/var/log/containers/<pod>_<namespace>_
/// <container>-<id>.log` (the `containers` directory beside `--pod-log-dir`).
#[derive(Debug)]
struct PodNames {
    dir: PathBuf,
    pods: HashMap<String, (String, String)>,
    containers: HashMap<String, String>,
    /// Pod uids and container ids asked for that the directories did not name when
    /// last read.
    /// With the interval each was first asked for: given up after [`NAME_TRIES`]
    /// intervals (a pod's sandbox container has no log, so no name).
    unnamed: HashMap<String, u64>,
    read_at: Option<u64>,
}

impl PodNames {
    fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            pods: HashMap::new(),
            containers: HashMap::new(),
            unnamed: HashMap::new(),
            read_at: None,
        }
    }

    /// Notes a pod (and container) whose names are wanted.
    fn want(&mut self, uid: &str, container: Option<&str>, now: u64) {
        if self.read_at.is_none() {
            self.read(now);
        }
        if !self.pods.contains_key(uid) {
            self.unnamed.entry(uid.to_string()).or_insert(now);
        }
        if let Some(id) = container
            && !self.containers.contains_key(id)
        {
            self.unnamed.entry(id.to_string()).or_insert(now);
        }
    }

    /// Reads the directories again while a uid is unnamed (once per interval: a readdir
    /// of a few hundred names); whether one was named now.
    fn refresh(&mut self, now: u64) -> bool {
        if self.unnamed.is_empty() || self.read_at == Some(now) {
            return false;
        }
        self.read(now);
        let (pods, containers) = (&self.pods, &self.containers);
        let mut named = false;
        self.unnamed.retain(|u, since| {
            let found = pods.contains_key(u) || containers.contains_key(u);
            named |= found;
            !found && now - *since < NAME_TRIES
        });
        named
    }

    fn read(&mut self, now: u64) {
        self.read_at = Some(now);
        self.pods = names_in(&self.dir)
            .filter_map(|n| attribution::parse_pod_log_dir(&n))
            .map(|(ns, name, uid)| (uid, (ns, name)))
            .collect();
        let containers = self.dir.parent().map(|p| p.join("containers"));
        self.containers = containers
            .iter()
            .flat_map(|d| names_in(d))
            .filter_map(|n| attribution::parse_container_log(&n))
            .map(|(name, id)| (id, name))
            .collect();
    }
}

fn names_in(dir: &Path) -> impl Iterator<Item = String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1b2c3d4e-5f6a-7b8c-9d0e-1f2a3b4c5d6e";
    const ID: &str = "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970";

    fn pairs(a: &Attrs) -> Vec<(&str, &str)> {
        a.iter().map(|(k, v)| (*k, &**v)).collect()
    }

    #[test]
    fn pod_labels_name_the_pod_from_the_kubelet_log_directories() {
        let root = std::env::temp_dir().join(format!("proclens-pods-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        let mut a = Attributor::new(&[LabelGroup::Pod], root.join("pods"));
        // Not named yet: the uid and id, nameless.
        let first = a.attrs(&path);
        assert_eq!(
            pairs(&first),
            [
                ("k8s_namespace", ""),
                ("k8s_pod_name", ""),
                ("k8s_pod_uid", UID),
                ("k8s_container_name", ""),
                ("container_id", ID)
            ]
        );
        // The kubelet makes its directories; the next interval reads them.
        std::fs::create_dir_all(root.join(format!("pods/shop_web-0_{UID}/nginx"))).unwrap();
        std::fs::create_dir_all(root.join("containers")).unwrap();
        std::fs::write(
            root.join(format!("containers/web-0_shop_nginx-{ID}.log")),
            "",
        )
        .unwrap();
        a.end_interval(); // the names were read in this interval already
        a.end_interval();
        let named = a.attrs(&path);
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(
            pairs(&named),
            [
                ("k8s_namespace", "shop"),
                ("k8s_pod_name", "web-0"),
                ("k8s_pod_uid", UID),
                ("k8s_container_name", "nginx"),
                ("container_id", ID)
            ]
        );
    }

    #[test]
    fn groups_choose_labels_in_a_fixed_order() {
        let mut a = Attributor::new(
            &[LabelGroup::Container, LabelGroup::Unit, LabelGroup::Cgroup],
            "/nonexistent/pods".into(),
        );
        assert_eq!(
            pairs(&a.attrs("/system.slice/nginx.service")),
            [
                ("cgroup", "/system.slice/nginx.service"),
                ("systemd_unit", "nginx.service"),
                ("container_id", "")
            ]
        );
        let docker = format!("/system.slice/docker-{ID}.scope");
        assert_eq!(
            pairs(&a.attrs(&docker)),
            [
                ("cgroup", docker.as_str()),
                ("systemd_unit", ""),
                ("container_id", ID)
            ]
        );
        assert!(!a.comm());
        for _ in 0..=FORGET_AFTER {
            a.end_interval();
        }
        assert_eq!(a.paths(), 0, "unused paths are forgotten");
    }
}
