//! Compiles `tool-ebpf` for `bpfel-unknown-none` along the route `toolchain` picked.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::toolchain::{self, Route};

/// Name of the eBPF binary target (tool-ebpf's `[[bin]]`).
const OBJECT_NAME: &str = "proclens";

/// Environment a parent cargo (build script or xtask) sets that must not leak into the
/// nested BPF build.
fn scrub(cmd: &mut Command) {
    for (key, _) in env::vars_os() {
        let k = key.to_string_lossy();
        let leaks = k.starts_with("CARGO_")
            && k != "CARGO_HOME"
            && k != "CARGO_MAKEFLAGS"
            && k != "CARGO_REGISTRIES_CRATES_IO_PROTOCOL"
            || k.starts_with("RUSTC")
            || k.starts_with("RUSTFLAGS")
            || k.starts_with("RUSTDOC")
            || k.starts_with("DEP_")
            || [
                "OUT_DIR",
                "TARGET",
                "HOST",
                "PROFILE",
                "OPT_LEVEL",
                "DEBUG",
                "NUM_JOBS",
                "RUSTUP_TOOLCHAIN",
            ]
            .contains(&k.as_ref());
        if leaks {
            cmd.env_remove(&key);
        }
    }
}

/// `cargo <subcommand>` in `tool-ebpf` for bpfel-unknown-none along `route`, with the
/// build's flags and its target directory. `cargo_clippy` runs clippy instead: on the
/// prebuilt route, the distribution's `cargo-clippy` beside its compiler (`rustup`'s
/// clippy is another compiler, which cannot read the prebuilt BPF `core`).
fn ebpf_cargo(route: &Route, workspace_root: &Path, target_dir: &Path, clippy: bool) -> Command {
    let subcommand = if clippy { "clippy" } else { "build" };
    let mut cmd = match route {
        Route::BuildStd { toolchain } => {
            let mut c = Command::new("rustup");
            c.args([
                "run",
                toolchain,
                "cargo",
                subcommand,
                "-Z",
                "build-std=core",
            ]);
            c
        }
        Route::Prebuilt { rustc } => {
            let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut c = if clippy {
                let mut c = Command::new(clippy_beside(rustc));
                c.env("CARGO", cargo);
                c
            } else {
                Command::new(cargo)
            };
            c.arg(subcommand);
            c
        }
    };
    scrub(&mut cmd);
    if let Route::Prebuilt { rustc } = route {
        cmd.env("RUSTC", rustc).env("RUSTC_BOOTSTRAP", "1");
    }
    cmd.current_dir(workspace_root.join("tool-ebpf"))
        .args(["--release", "--locked", "--target", "bpfel-unknown-none"])
        .env("CARGO_TARGET_DIR", target_dir)
        // BTF for maps and programs; debuginfo is what bpf-linker turns into BTF.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Cdebuginfo=2\u{1f}-Clink-arg=--btf",
        )
        .env("PATH", toolchain::path_with_cargo_bin());
    cmd
}

/// The `cargo-clippy` that drives the same compiler as `rustc` (Debian's `rust-web-clippy`
/// installs it beside `rustc-web`'s `/usr/bin/rustc`).
pub fn clippy_beside(rustc: &Path) -> PathBuf {
    rustc.with_file_name("cargo-clippy")
}

/// Runs clippy on the kernel side for bpfel-unknown-none, warnings as errors: its lints
/// are `tool-ebpf/Cargo.toml`'s `[workspace.lints]`.
pub fn clippy(workspace_root: &Path, target_dir: &Path) -> Result<()> {
    let (route, _linker) = toolchain::check()?;
    let mut cmd = ebpf_cargo(&route, workspace_root, target_dir, true);
    cmd.args(["--", "-D", "warnings"]);
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("clippy on the eBPF programs failed ({status}); route: {route:?}");
    }
    Ok(())
}

/// Builds the BPF object and returns its path (inside `target_dir`).
pub fn build(workspace_root: &Path, target_dir: &Path) -> Result<PathBuf> {
    let (route, _linker) = toolchain::check()?;
    let mut cmd = ebpf_cargo(&route, workspace_root, target_dir, false);
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("building the eBPF programs failed ({status}); route: {route:?}");
    }
    let obj = target_dir
        .join("bpfel-unknown-none/release")
        .join(OBJECT_NAME);
    if !obj.is_file() {
        bail!("the eBPF build succeeded but {} is missing", obj.display());
    }
    Ok(obj)
}

/// Entry point for `tool/build.rs`: builds the object (or takes `PROCLENS_EBPF_OBJ`),
/// copies it to `$OUT_DIR/proclens.bpf.o` and tells cargo when to rebuild.
pub fn build_script() -> Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest
        .parent()
        .context("tool/ has no parent")?
        .to_path_buf();
    let out = PathBuf::from(env::var("OUT_DIR")?).join("proclens.bpf.o");
    println!("cargo:rerun-if-env-changed=PROCLENS_EBPF_OBJ");
    let obj = if let Some(prebuilt) = env::var_os("PROCLENS_EBPF_OBJ") {
        PathBuf::from(prebuilt)
    } else {
        for p in [
            "tool-ebpf/src",
            "tool-ebpf/Cargo.toml",
            "tool-ebpf/Cargo.lock",
            "tool-common/src",
        ] {
            println!("cargo:rerun-if-changed={}", root.join(p).display());
        }
        build(&root, &root.join("target/ebpf"))?
    };
    std::fs::copy(&obj, &out).with_context(|| format!("copying {}", obj.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The `[workspace.lints.*]` lines of a manifest, comments and blank lines left out.
    fn lint_lines(manifest: &str) -> Vec<String> {
        let mut in_lints = false;
        let mut lines = Vec::new();
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                in_lints = line.starts_with("[workspace.lints.");
            }
            if in_lints && !line.is_empty() && !line.starts_with('#') {
                lines.push(line.to_owned());
            }
        }
        lines
    }

    /// tool-ebpf is its own workspace, so it repeats the root's lint set: every root lint
    /// line must stand in its manifest, in the same order (kernel-side allows may follow).
    #[test]
    fn ebpf_lints_repeat_the_root_set() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        let ours = lint_lines(&read("Cargo.toml"));
        let theirs = lint_lines(&read("tool-ebpf/Cargo.toml"));
        assert!(
            ours.len() > 10,
            "the root's lint set was not found: {ours:?}"
        );
        let mut rest = theirs.iter();
        for line in &ours {
            assert!(
                rest.any(|l| l == line),
                "tool-ebpf/Cargo.toml lacks (or reorders) the root's lint line `{line}`"
            );
        }
    }
}
