//! Issue 18: pods and units named from real cgroups. A workload in a cgroup shaped as the
//! kubelet makes it (systemd driver with containerd; cgroupfs driver with CRI-O), with the
//! kubelet's log directories beside it, carries its namespace, pod name, pod uid,
//! container name and container id; one in a systemd scope carries the unit. (The
//! layouts of every runtime and driver are unit-tested against
//! tests/fixtures/cgroup-paths.txt; tests/image.rs labels a real podman container.)
mod common;

use std::{fs, path::Path, time::Duration};

use common::{
    can_trace,
    cgroup::TestCgroup,
    exporter::{Named, Server, http, samples, wait_for},
};

workload_entry!();

const UID: &str = "1b2c3d4e-5f6a-7b8c-9d0e-1f2a3b4c5d6e";
const ID: &str = "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970";

/// A shell loop under its own name, moved into `cg` (with the shell's later children).
fn workload_in(cg: &TestCgroup, comm: &str) -> Named {
    let w = Named::run(comm, "/bin/sh", |link| {
        // The loop's shell is named `comm`; its sleeps are sleep.
        format!("exec {link} -c 'while :; do sleep 0.05; done'")
    });
    cg.add(w.child.id());
    w
}

/// The labels of the voluntary switch series of `comm`, once it shows up.
fn labels_of(server: &Server, comm: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    wait_for(
        &format!("{comm} in /metrics"),
        Duration::from_secs(15),
        || {
            let body = http(server.addr, "GET", "/metrics", None).1;
            let s = samples(
                &body,
                "proclens_context_switches_total",
                &[("comm", comm), ("kind", "voluntary")],
            );
            // The first collection may have seen it before it moved.
            found = s
                .into_iter()
                .map(|(l, _)| l)
                .find(|l| {
                    l.iter().any(|(k, v)| {
                        k == "k8s_pod_uid" && !v.is_empty() || k == "systemd_unit" && !v.is_empty()
                    })
                })
                .unwrap_or_default();
            !found.is_empty()
        },
    );
    found
}

fn get<'a>(labels: &'a [(String, String)], key: &str) -> &'a str {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map_or("<missing>", |(_, v)| v.as_str())
}

/// The kubelet's log directories for one pod and container, in a throwaway directory.
fn kubelet_logs(root: &Path, ns: &str, pod: &str, container: &str) {
    fs::create_dir_all(root.join(format!("pods/{ns}_{pod}_{UID}/{container}"))).unwrap();
    fs::create_dir_all(root.join("containers")).unwrap();
    fs::write(
        root.join(format!("containers/{pod}_{ns}_{container}-{ID}.log")),
        "",
    )
    .unwrap();
}

fn pod_case(cgroup_rel: &str, comm: &str, ns: &str, pod: &str, container: &str) {
    let logs = std::env::temp_dir().join(format!("proclens-kubelet-{comm}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&logs);
    kubelet_logs(&logs, ns, pod, container);
    let cg = TestCgroup::nested(cgroup_rel);
    let pods = logs.join("pods");
    let server = Server::start(&[
        "--labels",
        "comm,cgroup,pod",
        "--pod-log-dir",
        pods.to_str().unwrap(),
    ]);
    let w = workload_in(&cg, comm);
    let l = labels_of(&server, comm);
    assert_eq!(get(&l, "cgroup"), cg.rel());
    assert_eq!(get(&l, "k8s_namespace"), ns, "{l:?}");
    assert_eq!(get(&l, "k8s_pod_name"), pod, "{l:?}");
    assert_eq!(get(&l, "k8s_pod_uid"), UID, "{l:?}");
    assert_eq!(get(&l, "k8s_container_name"), container, "{l:?}");
    assert_eq!(get(&l, "container_id"), ID, "{l:?}");
    drop(w);
    drop(server);
    let _ = fs::remove_dir_all(&logs);
}

#[test]
fn a_pod_under_the_systemd_driver_with_containerd_is_named() {
    if !can_trace() {
        return;
    }
    let uid = UID.replace('-', "_");
    pod_case(
        &format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{ID}.scope"
        ),
        "plpod-ctrd",
        "shop",
        "web-7d9f-x2v9k",
        "nginx",
    );
}

#[test]
fn a_pod_under_the_cgroupfs_driver_with_cri_o_is_named() {
    if !can_trace() {
        return;
    }
    pod_case(
        &format!("kubepods/besteffort/pod{UID}/crio-{ID}"),
        "plpod-crio",
        "batch",
        "report-28h4q",
        "worker",
    );
}

/// Off Kubernetes, a process in a transient scope carries its unit. Where systemd runs
/// (PID 1), `systemd-run --scope` makes the scope; elsewhere (this project's machines and
/// CI run no systemd) the test makes the same cgroup itself, `system.slice/<name>.scope`,
/// and says so.
#[test]
fn a_systemd_scope_is_named() {
    if !can_trace() {
        return;
    }
    let unit = format!("proclens-test-{}.scope", std::process::id());
    let comm = "plunit";
    let server = Server::start(&["--labels", "comm,cgroup,unit"]);
    if Path::new("/run/systemd/system").is_dir() {
        let w = Named::run(comm, "/bin/sh", |link| {
            format!(
                "exec systemd-run --scope --unit {unit} -- {link} -c 'while :; do sleep 0.05; done'"
            )
        });
        let l = labels_of(&server, comm);
        drop(w);
        assert_eq!(get(&l, "systemd_unit"), unit, "{l:?}");
    } else {
        eprintln!(
            "note: systemd is not PID 1 here: the scope is made by hand, as system.slice/{unit}"
        );
        let cg = TestCgroup::nested(&format!("system.slice/{unit}"));
        let w = workload_in(&cg, comm);
        let l = labels_of(&server, comm);
        assert_eq!(get(&l, "systemd_unit"), unit, "{l:?}");
        assert_eq!(get(&l, "cgroup"), format!("/system.slice/{unit}"));
        drop(w);
    }
}
