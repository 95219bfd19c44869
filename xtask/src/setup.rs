//! Installs what proclens needs to build and test, printing each action.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};
use proclens_xtask::toolchain;

use crate::status;

/// Debian packages the tests and benchmarks use as references and workloads.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("bpftool", "/usr/sbin/bpftool"),
    ("bpftrace", "/usr/bin/bpftrace"),
    ("sysstat", "/usr/bin/pidstat"),
    ("stress-ng", "/usr/bin/stress-ng"),
    ("tmux", "/usr/bin/tmux"),
    ("linux-perf", "/usr/bin/perf"),
    ("prometheus", "/usr/bin/prometheus"),
    // The image test and `cargo xtask image`: podman (with runc: crun cannot start
    // containers on these machines' hybrid cgroup hierarchy) and objcopy.
    ("podman", "/usr/bin/podman"),
    ("runc", "/usr/sbin/runc"),
    ("binutils", "/usr/bin/objcopy"),
    // The unit's syscall filter test traces serve; systemd-analyze rates and verifies the unit.
    ("strace", "/usr/bin/strace"),
    ("systemd", "/usr/bin/systemd-analyze"),
    // setpriv, the least-privilege tests' way to start proclens as another user.
    ("util-linux", "/usr/bin/setpriv"),
    // A file server to pair file reads with socket writes (tests/nginx.rs).
    ("nginx", "/usr/sbin/nginx"),
    // A 32-bit static program for the compat-syscall test (tests/compat.rs).
    ("gcc-multilib", "/usr/lib32/libc.a"),
];

fn is_root() -> bool {
    crate::nix_is_root()
}

fn have_apt() -> bool {
    Path::new("/usr/bin/apt-get").exists()
}

fn apt_install(packages: &[&str]) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    if !is_root() || !have_apt() {
        bail!(
            "missing packages {packages:?}: install them (apt-get install {})",
            packages.join(" ")
        );
    }
    static UPDATED: std::sync::Once = std::sync::Once::new();
    let mut update_result = Ok(());
    UPDATED.call_once(|| update_result = status(Command::new("apt-get").args(["update", "-q"])));
    update_result?;
    status(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages),
    )
}

/// Makes sure a BPF compiler route and a matching bpf-linker exist.
pub fn ensure_toolchain() -> Result<()> {
    if toolchain::check().is_ok() {
        return Ok(());
    }
    let route = if let Some(r) = toolchain::detect_route() {
        r
    } else {
        if !(is_root() && have_apt()) {
            bail!(toolchain::MISSING_TOOLCHAIN);
        }
        eprintln!("xtask: no BPF-capable Rust compiler; installing Debian's prebuilt BPF core");
        apt_install(&["rustc-web", "libstd-rust-web-dev-bpf"])?;
        toolchain::detect_route().context(toolchain::MISSING_TOOLCHAIN)?
    };
    let major = route.llvm_major()?;
    let linker_ok = toolchain::find_bpf_linker().is_some_and(|l| {
        toolchain::bpf_linker_llvm_major(&l).is_none_or(|m| m == major)
            && toolchain::bpf_linker_version(&l).as_deref() == Some(toolchain::BPF_LINKER_VERSION)
    });
    if !linker_ok {
        eprintln!(
            "xtask: installing bpf-linker {} for LLVM {major} (the BPF compiler's, {route:?})",
            toolchain::BPF_LINKER_VERSION
        );
        let llvm_config = format!("/usr/lib/llvm-{major}/bin/llvm-config");
        if !Path::new(&llvm_config).exists() {
            apt_install(&[
                &format!("llvm-{major}-dev"),
                &format!("libpolly-{major}-dev"),
            ])?;
        }
        let path = format!(
            "/usr/lib/llvm-{major}/bin:{}",
            toolchain::path_with_cargo_bin().to_string_lossy()
        );
        status(
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .env("PATH", path)
                .args([
                    "install",
                    "--force",
                    "--locked",
                    "bpf-linker",
                    "--version",
                    toolchain::BPF_LINKER_VERSION,
                    "--no-default-features",
                ])
                .args(["--features", &format!("llvm-{major}")]),
        )?;
    }
    toolchain::check().map(drop)
}

/// The clippy that lints the BPF programs: on the prebuilt route, the distribution's, which
/// drives the same compiler (Debian's `rust-web-clippy`, beside `rustc-web`).
pub fn ensure_ebpf_clippy() -> Result<()> {
    let Some(toolchain::Route::Prebuilt { rustc }) = toolchain::detect_route() else {
        return Ok(());
    };
    if proclens_xtask::ebpf_build::clippy_beside(&rustc).exists() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing clippy for the BPF compiler ({})",
        rustc.display()
    );
    apt_install(&["rust-web-clippy"])
}

/// Toolchain plus the reference tools the tests and benchmarks run.
pub fn ensure_all() -> Result<()> {
    ensure_toolchain()?;
    let missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(_, bin)| !Path::new(bin).exists())
        .map(|(p, _)| *p)
        .collect();
    if !missing.is_empty() {
        if is_root() && have_apt() {
            eprintln!("xtask: installing test tools {missing:?}");
            apt_install(&missing)?;
        } else {
            eprintln!(
                "xtask: warning: test tools {missing:?} are missing; tests that compare with them will fail"
            );
        }
    }
    ensure_tracefs()
}

/// The anchors (bpftrace, perf) find tracepoints through tracefs; some machines boot
/// without it mounted. proclens itself never needs it to be (tests/cli.rs checks that in
/// a mount namespace without it), but the tests that compare with bpftrace do: mount it
/// where the kernel expects it.
fn ensure_tracefs() -> Result<()> {
    const AT: &str = "/sys/kernel/tracing";
    if [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .any(|p| Path::new(p).is_dir())
    {
        return Ok(());
    }
    if !is_root() {
        eprintln!(
            "xtask: warning: tracefs is not mounted; the tests that compare with bpftrace will fail (as root: mount -t tracefs tracefs {AT})"
        );
        return Ok(());
    }
    eprintln!("xtask: mounting tracefs at {AT} (bpftrace, an anchor of the tests, needs it)");
    let ok = Command::new("mount")
        .args(["-t", "tracefs", "tracefs", AT])
        .status()
        .context("running mount")?
        .success();
    if !ok {
        bail!("mounting tracefs at {AT} failed: the tests that compare with bpftrace cannot run");
    }
    Ok(())
}

/// What `cargo xtask image` needs: podman and objcopy.
pub fn ensure_image_tools() -> Result<()> {
    let missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(p, bin)| ["podman", "runc", "binutils"].contains(p) && !Path::new(bin).exists())
        .map(|(p, _)| *p)
        .collect();
    apt_install(&missing)
}

/// What `cargo xtask test-kernels` needs on the host: QEMU, busybox-static and cpio.
pub fn ensure_kernel_tools() -> Result<()> {
    let missing: Vec<&str> = crate::kernels::HOST_PACKAGES
        .iter()
        .filter(|(_, bin)| !Path::new(bin).exists())
        .map(|(p, _)| *p)
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask: installing the kernel matrix's tools {missing:?}");
        apt_install(&missing)?;
    }
    Ok(())
}
