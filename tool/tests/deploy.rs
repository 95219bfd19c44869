//! The deployment files in deploy/ parse and ask for no more privilege than proclens needs.
//! (Kubernetes itself cannot run here: this checks the manifest's structure and content.)

use std::{path::Path, process::Command};

fn deploy(file: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy")
            .join(file),
    )
    .unwrap()
}

#[test]
fn daemonset_is_least_privilege() {
    let doc: serde_json::Value =
        serde_yaml_ng::from_str(&deploy("daemonset.yaml")).expect("valid YAML");
    assert_eq!(doc["kind"], "DaemonSet");
    assert_eq!(doc["apiVersion"], "apps/v1");
    let spec = &doc["spec"]["template"]["spec"];
    assert_eq!(spec["hostPID"], true);
    let c = &spec["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["BPF", "PERFMON"])
    );
    let mount = &c["volumeMounts"][0];
    assert_eq!(mount["mountPath"], "/sys");
    assert_eq!(mount["readOnly"], true);
    assert_eq!(c["args"][0], "serve");
    assert_eq!(c["ports"][0]["containerPort"], 9464);
    assert_eq!(
        doc["spec"]["selector"]["matchLabels"],
        doc["spec"]["template"]["metadata"]["labels"]
    );
}

#[test]
fn systemd_unit_verifies() {
    let unit = deploy("proclens.service");
    assert!(unit.contains("CapabilityBoundingSet=CAP_BPF CAP_PERFMON"));
    assert!(unit.contains("--listen 127.0.0.1:9464"));
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
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
