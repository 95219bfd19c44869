//! Issue 18: the image `cargo xtask image` builds runs exactly as deploy/daemonset.yaml
//! says — its user, capabilities, seccomp profile, read-only root and /sys, host pid
//! namespace, mounts, memory limit and arguments turned into podman's flags — and a real
//! Prometheus scrapes it. A podman container is attributed by its cgroup: proclens's
//! in-kernel filter on that cgroup's id sees its processes, labelled with its id.
mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::{
    PROCLENS, can_trace, cgroup,
    exporter::{Named, Prometheus, Server, free_port, http, samples, wait_for},
    kept_caps,
    podman::{self, Container},
};

workload_entry!();

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy(file: &str) -> PathBuf {
    workspace().join("deploy").join(file)
}

/// Builds the image from the binary under test into a throwaway staging directory.
fn build_image() -> (String, PathBuf) {
    let work = std::env::temp_dir().join(format!("proclens-image-{}", std::process::id()));
    let tag = proclens_xtask::image::tag();
    proclens_xtask::image::build(Path::new(PROCLENS), &workspace(), &work, &tag)
        .unwrap_or_else(|e| panic!("{e:#}"));
    (tag, work)
}

/// podman's flags for the DaemonSet's pod spec, with its arguments: every field that
/// podman can express, read from the manifest (so a change there changes the test).
/// Two things differ, as they must on a machine without Kubernetes: the pod network
/// (`--network host`, and `--listen` on a free loopback port instead of 0.0.0.0:9464) and
/// the kubelet's log directories, which do not exist here (empty directories instead).
fn daemonset_flags(port: u16, logs: &Path) -> (String, Vec<String>, Vec<String>) {
    let doc: serde_json::Value =
        serde_yaml_ng::from_str(&fs::read_to_string(deploy("daemonset.yaml")).unwrap()).unwrap();
    let pod = &doc["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    let psc = &pod["securityContext"];
    let mut f: Vec<String> = vec!["--network".into(), "host".into()];
    let s = |v: &serde_json::Value| v.as_str().unwrap().to_string();
    if pod["hostPID"] == true {
        f.extend(["--pid".into(), "host".into()]);
    }
    f.extend([
        "--user".into(),
        format!("{}:{}", psc["runAsUser"], psc["runAsGroup"]),
    ]);
    assert_eq!(psc["seccompProfile"]["type"], "Localhost");
    assert_eq!(psc["seccompProfile"]["localhostProfile"], "proclens.json");
    f.extend([
        "--security-opt".into(),
        format!("seccomp={}", deploy("seccomp-proclens.json").display()),
    ]);
    assert_eq!(sc["privileged"], false);
    if sc["allowPrivilegeEscalation"] == false {
        f.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    if sc["readOnlyRootFilesystem"] == true {
        f.push("--read-only".into());
    }
    for cap in sc["capabilities"]["drop"].as_array().unwrap() {
        f.extend(["--cap-drop".into(), s(cap)]);
    }
    for cap in sc["capabilities"]["add"].as_array().unwrap() {
        f.extend(["--cap-add".into(), s(cap)]);
    }
    let memory = s(&c["resources"]["limits"]["memory"]);
    f.extend([
        "--memory".into(),
        memory.replace("Mi", "m").replace("Gi", "g"),
    ]);
    for m in c["volumeMounts"].as_array().unwrap() {
        let vol = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap();
        let host = s(&vol["hostPath"]["path"]);
        let host = if Path::new(&host).is_dir() {
            host
        } else {
            let d = logs.join(m["name"].as_str().unwrap());
            fs::create_dir_all(&d).unwrap();
            d.to_string_lossy().into_owned()
        };
        let ro = if m["readOnly"] == true { ":ro" } else { "" };
        f.extend(["-v".into(), format!("{host}:{}{ro}", s(&m["mountPath"]))]);
    }
    let mut args: Vec<String> = c["args"].as_array().unwrap().iter().map(s).collect();
    let listen = args.iter().position(|a| a == "--listen").unwrap() + 1;
    assert_eq!(args[listen], "0.0.0.0:9464");
    args[listen] = format!("127.0.0.1:{port}");
    (s(&c["image"]), f, args)
}

/// The CapEff/CapPrm/CapBnd/CapAmb/NoNewPrivs/Uid lines of a process.
fn status_field(pid: u32, field: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap()
        .trim()
        .to_string()
}

const CAP_BPF_PERFMON: u64 = (1 << 39) | (1 << 38);

#[test]
fn the_image_runs_as_the_daemonset_says_and_prometheus_scrapes_it() {
    if !can_trace() || !podman::available() {
        return;
    }
    let (tag, work) = build_image();
    let port = free_port();
    let (image, flags, args) = daemonset_flags(port, &work.join("logs"));
    assert_eq!(
        image, tag,
        "the DaemonSet runs the image cargo xtask image tags"
    );
    let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
    all.push(&image);
    all.extend(args.iter().map(String::as_str));
    let container = Container::run(&all);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for("the container to serve", Duration::from_secs(30), || {
        assert!(container.running(), "exited: {}", container.logs());
        container.logs().contains("proclens: serving http://")
    });
    let w = Named::start();
    let prom = Prometheus::start(&[addr]);
    let query = format!(
        "proclens_context_switches_total{{comm=\"{}\",kind=\"voluntary\"}}",
        w.comm
    );
    wait_for(
        "Prometheus to scrape the workload from the container",
        Duration::from_mins(1),
        || prom.vector(&query).iter().any(|(_, v)| *v > 0.0),
    );
    assert_eq!(prom.vector("up{job=\"proclens\"}")[0].1, 1.0);
    // Not root, no capability left but the bounding set's two (and CAP_BPF where the
    // kernel checks every map read), no ambient ones: the binary's file capabilities gave
    // it what it needed to attach.
    let pid = container.pid();
    assert!(
        status_field(pid, "Uid").starts_with("65534"),
        "uid {}",
        status_field(pid, "Uid")
    );
    let mask = |f| u64::from_str_radix(&status_field(pid, f), 16).unwrap();
    assert_eq!(mask("CapBnd"), CAP_BPF_PERFMON);
    let kept = kept_caps(&container.logs());
    assert_eq!(mask("CapEff") & !kept, 0);
    assert_eq!(mask("CapPrm") & !kept, 0);
    assert_eq!(mask("CapAmb"), 0);
    let body = http(addr, "GET", "/metrics", None).1;
    assert!(!samples(&body, "proclens_system_threads", &[]).is_empty());
    drop(container);
    let _ = fs::remove_dir_all(&work);
}

/// How Kubernetes starts the binary: bounding set BPF and PERFMON, no ambient or
/// inheritable capabilities, not root. Only the image's file capabilities can give it
/// what it needs; with them it serves.
#[test]
fn file_capabilities_alone_start_the_image_binary_as_kubernetes_would() {
    if !can_trace() || !podman::available() {
        return;
    }
    let work = std::env::temp_dir().join(format!("proclens-stage-{}", std::process::id()));
    proclens_xtask::image::stage(Path::new(PROCLENS), &work.join("rootfs")).unwrap();
    let binary = work.join("rootfs").join(proclens_xtask::image::BINARY_PATH);
    let child = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all,+bpf,+perfmon",
        ])
        .arg(&binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--interval", "0.3"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let server = Server::from_child(child);
    wait_for(
        "switches read as uid 65534",
        Duration::from_secs(15),
        || {
            let body = http(server.addr, "GET", "/metrics", None).1;
            samples(&body, "proclens_system_switches_total", &[])
                .iter()
                .any(|(_, v)| *v > 0.0)
        },
    );
    assert!(status_field(server.child.id(), "Uid").starts_with("65534"));
    drop(server);
    let _ = fs::remove_dir_all(&work);
}

/// A real podman container: its processes, picked out by proclens's in-kernel filter on
/// the container's cgroup (the cgroup v2 id podman's runtime made), carry its id as
/// `container_id` and its cgroup path as `cgroup`.
#[test]
fn a_podman_container_is_labelled_by_its_id() {
    if !can_trace() || !podman::available() {
        return;
    }
    // A root filesystem of sh and sleep with their libraries, no image needed.
    let rootfs = std::env::temp_dir().join(format!("proclens-rootfs-{}", std::process::id()));
    for exe in ["/bin/sh", "/bin/sleep"] {
        let real = fs::canonicalize(exe).unwrap();
        let mut files = proclens_xtask::ldd::libraries(&real).unwrap();
        files.push(PathBuf::from(exe));
        for f in files {
            let to = rootfs.join(f.strip_prefix("/").unwrap());
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::copy(fs::canonicalize(&f).unwrap(), &to).unwrap();
        }
    }
    let root = rootfs.to_string_lossy().into_owned();
    let c = Container::run(&[
        "--rootfs",
        &root,
        "/bin/sh",
        "-c",
        "while :; do /bin/sleep 0.1; done",
    ]);
    assert_eq!(c.id.len(), 64, "podman's id: {}", c.id);
    let path = fs::read_to_string(format!("/proc/{}/cgroup", c.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .unwrap();
    assert!(path.contains(&c.id), "{path}");
    let dir = cgroup::v2_root().join(path.trim_start_matches('/'));
    assert!(
        dir.is_dir(),
        "{} is the container's cgroup v2",
        dir.display()
    );
    let server = Server::start(&[
        "--cgroup",
        dir.to_str().unwrap(),
        "--labels",
        "comm,cgroup,container",
    ]);
    let mut body = String::new();
    wait_for("the container's shell", Duration::from_secs(15), || {
        body = http(server.addr, "GET", "/metrics", None).1;
        !samples(&body, "proclens_context_switches_total", &[("comm", "sh")]).is_empty()
    });
    // Only the container's processes pass the filter; each whose cgroup was read while it
    // lived carries the container's id and path. (A `sleep` that ended before the next
    // collection has no /proc/PID/cgroup left: "?", and no id.)
    let series = samples(&body, "proclens_context_switches_total", &[]);
    for (labels, _) in &series {
        let get = |k: &str| {
            labels
                .iter()
                .find(|(lk, _)| lk == k)
                .map(|(_, v)| v.as_str())
        };
        assert!(matches!(get("comm"), Some("sh" | "sleep")), "{labels:?}");
        if get("cgroup") != Some("?") || get("comm") == Some("sh") {
            assert_eq!(get("container_id"), Some(c.id.as_str()), "{labels:?}");
            assert_eq!(get("cgroup"), Some(path.as_str()), "{labels:?}");
        }
    }
    drop(c);
    let _ = fs::remove_dir_all(&rootfs);
}
