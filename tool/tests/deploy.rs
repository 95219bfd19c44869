//! The deployment files in deploy/ parse and ask for no more privilege than proclens needs.
//! (Kubernetes itself cannot run here: this checks the manifests' structure and content;
//! tests/image.rs runs the image as the DaemonSet says.)
mod common;

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::{
    PROCLENS, can_trace,
    exporter::{free_port, http, wait_for},
};

workload_entry!();

fn deploy(file: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy")
            .join(file),
    )
    .unwrap()
}

fn yaml(file: &str) -> serde_json::Value {
    serde_yaml_ng::from_str(&deploy(file)).expect("valid YAML")
}

#[test]
fn daemonset_is_least_privilege() {
    let doc = yaml("daemonset.yaml");
    assert_eq!(doc["kind"], "DaemonSet");
    assert_eq!(doc["apiVersion"], "apps/v1");
    let spec = &doc["spec"]["template"]["spec"];
    assert_eq!(spec["hostPID"], true);
    assert_eq!(spec["automountServiceAccountToken"], false);
    let psc = &spec["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert_eq!(psc["runAsUser"], 65534);
    assert_eq!(psc["seccompProfile"]["type"], "Localhost");
    let c = &spec["containers"][0];
    assert_eq!(
        c["image"],
        proclens_xtask::image::tag(),
        "the tag cargo xtask image builds"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    // Escalation is allowed only so that exec grants the image's file capabilities
    // (Kubernetes gives a non-root process none of its added ones); the bounding set
    // stops it at these two.
    assert_eq!(sc["allowPrivilegeEscalation"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["BPF", "PERFMON"])
    );
    for m in c["volumeMounts"].as_array().unwrap() {
        assert_eq!(m["readOnly"], true, "{m}");
    }
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/sys");
    assert_eq!(c["args"][0], "serve");
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let labels = args[args.iter().position(|a| *a == "--labels").unwrap() + 1];
    assert!(labels.split(',').any(|l| l == "pod"), "{labels}");
    assert_eq!(c["ports"][0]["containerPort"], 9464);
    assert_eq!(
        doc["spec"]["selector"]["matchLabels"],
        doc["spec"]["template"]["metadata"]["labels"]
    );
}

#[test]
fn networkpolicy_admits_only_prometheus_to_the_metrics_port() {
    let ds = yaml("daemonset.yaml");
    let np = yaml("networkpolicy.yaml");
    assert_eq!(np["kind"], "NetworkPolicy");
    assert_eq!(np["metadata"]["namespace"], ds["metadata"]["namespace"]);
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"],
        ds["spec"]["template"]["metadata"]["labels"]
    );
    assert_eq!(
        np["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    assert_eq!(
        np["spec"]["egress"],
        serde_json::json!([]),
        "proclens connects nowhere"
    );
    let ingress = np["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1);
    let port = &ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"];
    assert_eq!(
        ingress[0]["ports"],
        serde_json::json!([{"protocol": "TCP", "port": port}])
    );
    let from = ingress[0]["from"].as_array().unwrap();
    assert_eq!(from.len(), 1);
    assert_eq!(
        from[0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "prometheus"
    );
}

/// The profile the DaemonSet names is the container runtime's default profile (the one
/// podman installs, /usr/share/containers/seccomp.json) with exactly one change: `bpf()`
/// moves from the rules that allow it only with `CAP_SYS_ADMIN` to an allow rule of its
/// own. Nothing else is allowed, `perf_event_open` included (only --copies needs it).
#[test]
fn seccomp_profile_is_the_default_plus_bpf() {
    let default = Path::new("/usr/share/containers/seccomp.json");
    if !default.exists() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
            "CI=true but {} is missing (podman installs it)",
            default.display()
        );
        eprintln!(
            "skipped: {} is missing (apt-get install podman)",
            default.display()
        );
        return;
    }
    let ours: serde_json::Value = serde_json::from_str(&deploy("seccomp-proclens.json")).unwrap();
    let mut want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(default).unwrap()).unwrap();
    let rules = want["syscalls"].as_array_mut().unwrap();
    let mut moved = 0;
    for r in rules.iter_mut() {
        let cap = |k: &str| r[k]["caps"] == serde_json::json!(["CAP_SYS_ADMIN"]);
        if cap("includes") || cap("excludes") {
            let names = r["names"].as_array_mut().unwrap();
            let before = names.len();
            names.retain(|n| n != "bpf");
            moved += before - names.len();
        }
    }
    assert_eq!(
        moved, 2,
        "the default allows bpf() with CAP_SYS_ADMIN, refuses it without"
    );
    let added = ours["syscalls"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(added["names"], serde_json::json!(["bpf"]));
    assert_eq!(added["action"], "SCMP_ACT_ALLOW");
    rules.push(added);
    assert_eq!(
        ours, want,
        "only bpf() differs from the runtime's default profile"
    );
}

/// The unit's value of `key` (the last one, as systemd reads it).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
        .collect()
}

fn have_systemd_analyze() -> bool {
    let ok = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok();
    assert!(
        ok || !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
        "CI=true but systemd-analyze is missing (cargo xtask setup installs systemd)"
    );
    ok
}

/// Issue 18: the unit scores well in `systemd-analyze security`: 1.8 ("OK") with systemd
/// 252, the figure the README records, and no worse.
#[test]
fn systemd_unit_scores_well_in_systemd_analyze_security() {
    if !have_systemd_analyze() {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/proclens.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for proclens.service: ")
                .nth(1)
        })
        .unwrap_or_else(|| panic!("no overall level in {text}"));
    let score: f64 = level.split_whitespace().next().unwrap().parse().unwrap();
    assert!(score <= 1.8, "exposure {level}");
    // Not root, and only the two capabilities it needs.
    let unit = deploy("proclens.service");
    assert_eq!(unit_values(&unit, "DynamicUser"), ["yes"]);
    assert_eq!(
        unit_values(&unit, "AmbientCapabilities"),
        ["CAP_BPF CAP_PERFMON"]
    );
    assert_eq!(unit_values(&unit, "LimitMEMLOCK"), ["infinity"]);
}

/// Every syscall `serve` makes (traced by strace, through start-up, collections, a scrape
/// and the exit) is one the unit's `SystemCallFilter` allows, so the filter cannot kill it.
#[test]
fn systemd_unit_allows_every_syscall_serve_makes() {
    if !can_trace() || !have_systemd_analyze() {
        return;
    }
    let unit = deploy("proclens.service");
    let mut allowed = BTreeSet::new();
    for v in unit_values(&unit, "SystemCallFilter") {
        assert!(!v.starts_with('~'), "an allow list: {v}");
        for item in v.split_whitespace() {
            allowed.extend(syscall_set(item));
        }
    }
    let trace = std::env::temp_dir().join(format!("proclens-strace-{}", std::process::id()));
    let exec = unit_values(&unit, "ExecStart").pop().unwrap();
    let port = free_port();
    let args: Vec<String> = exec
        .split_whitespace()
        .skip(1)
        .map(|a| {
            if a == "127.0.0.1:9464" {
                format!("127.0.0.1:{port}")
            } else {
                a.into()
            }
        })
        .collect();
    let mut child = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .arg(PROCLENS)
        .args(&args)
        .args(["--interval", "0.3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace (cargo xtask setup installs it)");
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for(
        "serve under strace to answer",
        Duration::from_secs(30),
        || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && http(addr, "GET", "/metrics", None)
                    .1
                    .contains("proclens_system_threads")
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    // SIGINT to proclens itself (strace's child): its exit path is traced too, and strace
    // ends with it.
    let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap();
    let proclens: i32 = kids.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(proclens, libc::SIGINT) };
    common::wait_within(&mut child, Duration::from_mins(1), "strace'd serve to exit");
    let text = std::fs::read_to_string(&trace).unwrap();
    let _ = std::fs::remove_file(&trace);
    let used: BTreeSet<String> = text
        .lines()
        .filter_map(|l| {
            let call = l.split_whitespace().nth(1)?;
            let name = call.split('(').next()?;
            (call.contains('(') && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .then(|| name.to_string())
        })
        .collect();
    assert!(used.contains("bpf") && used.contains("accept4"), "{used:?}");
    let refused: Vec<&String> = used.iter().filter(|s| !allowed.contains(*s)).collect();
    assert!(refused.is_empty(), "the unit's filter refuses {refused:?}");
}

/// The syscalls of a `SystemCallFilter` item: a name, or a `@group` as systemd-analyze
/// lists it (groups nest).
fn syscall_set(item: &str) -> BTreeSet<String> {
    if !item.starts_with('@') {
        return BTreeSet::from([item.to_string()]);
    }
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", item])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut set = BTreeSet::new();
    for l in text.lines().skip_while(|l| l.trim() != item).skip(1) {
        let l = l.trim();
        if l.is_empty() {
            break;
        }
        if l.starts_with('#') {
            continue;
        }
        let name = l.split_whitespace().next().unwrap();
        set.extend(syscall_set(name));
    }
    assert!(
        !set.is_empty(),
        "systemd-analyze syscall-filter {item}: {text}"
    );
    set
}

#[test]
fn systemd_unit_verifies() {
    let unit = deploy("proclens.service");
    assert!(unit.contains("CapabilityBoundingSet=CAP_BPF CAP_PERFMON"));
    assert!(unit.contains("--listen 127.0.0.1:9464"));
    if !have_systemd_analyze() {
        eprintln!("skipped systemd-analyze verify: not installed");
        return;
    }
    // Point ExecStart at the binary cargo built so verify can check it; the man page is
    // not installed here (--man=no).
    let dir = std::env::temp_dir().join(format!("proclens-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("proclens.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/proclens", env!("CARGO_BIN_EXE_proclens")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", path.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let own: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("proclens.service"))
        .collect();
    assert!(
        out.status.success() && own.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}
