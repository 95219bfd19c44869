//! podman for the tests that run containers: availability (a failure under CI, where
//! `cargo xtask setup` installs it), and a container removed on drop.

use std::process::{Command, Output};

/// podman's flags these machines need (verified, shared/fleet-conventions.md): crun
/// cannot start containers on their hybrid cgroup hierarchy, runc can; limits no higher
/// than the host's.
pub const MACHINE_FLAGS: &[&str] = &[
    "--runtime",
    "/usr/sbin/runc",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// Whether podman can run here. Under CI (CI=true) a missing podman is a failure, since
/// `cargo xtask setup` installs it; elsewhere the test is skipped with a printed reason.
pub fn available() -> bool {
    let ok = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
            "CI=true but podman is not installed (cargo xtask setup installs it)"
        );
        eprintln!("skipped: podman is not installed (cargo xtask setup installs it)");
    }
    ok
}

fn podman(args: &[&str]) -> Output {
    Command::new("podman").args(args).output().unwrap()
}

/// A detached container, removed (with its processes) on drop.
pub struct Container {
    pub id: String,
}

impl Container {
    /// `podman run -d` with the machine's flags and `args`; panics with podman's output
    /// when it cannot start.
    pub fn run(args: &[&str]) -> Self {
        let mut all = vec!["run", "-d"];
        all.extend_from_slice(MACHINE_FLAGS);
        all.extend_from_slice(args);
        let out = podman(&all);
        assert!(
            out.status.success(),
            "podman {all:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            id: String::from_utf8(out.stdout).unwrap().trim().to_string(),
        }
    }

    /// The host pid of the container's first process.
    pub fn pid(&self) -> u32 {
        let out = podman(&["inspect", "--format", "{{.State.Pid}}", &self.id]);
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    /// Its output so far (stdout and stderr).
    pub fn logs(&self) -> String {
        let out = podman(&["logs", &self.id]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Whether it still runs.
    pub fn running(&self) -> bool {
        let out = podman(&["inspect", "--format", "{{.State.Running}}", &self.id]);
        String::from_utf8_lossy(&out.stdout).trim() == "true"
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "5", &self.id]);
    }
}
