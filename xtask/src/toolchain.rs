//! Finding a way to compile Rust for `bpfel-unknown-none` on this machine.
//!
//! Two routes exist:
//! - **build-std**: a rustup nightly with the `rust-src` component compiles `core` for BPF
//!   (`cargo +nightly build -Z build-std=core`); the usual route on a developer laptop.
//! - **prebuilt**: a compiler whose sysroot already holds a BPF `core` (Debian/Ubuntu's
//!   `rustc-web` + `libstd-rust-web-dev-bpf`), driven with `RUSTC=... RUSTC_BOOTSTRAP=1`.
//!
//! Either way `bpf-linker` must link the same LLVM major as the compiler.

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// How the BPF object will be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `rustup run <toolchain> cargo build -Z build-std=core`.
    BuildStd { toolchain: String },
    /// `RUSTC=<rustc> RUSTC_BOOTSTRAP=1 cargo build` with a sysroot that has BPF `core`.
    Prebuilt { rustc: PathBuf },
}

impl Route {
    /// LLVM major version of the compiler this route uses.
    pub fn llvm_major(&self) -> Result<u32> {
        let out = match self {
            Route::BuildStd { toolchain } => {
                command_output(Command::new("rustup").args(["run", toolchain, "rustc", "-vV"]))?
            }
            Route::Prebuilt { rustc } => command_output(Command::new(rustc).arg("-vV"))?,
        };
        parse_llvm_major(&out).context("the BPF compiler's `rustc -vV` names no LLVM version")
    }
}

/// The LLVM major version from `rustc -vV` output (`LLVM version: 22.1.8`).
pub fn parse_llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
}

/// The LLVM major version a `bpf-linker` binary links, from `ldd` (`libLLVM.so.22.1`,
/// `libLLVM-22.so`). `None` when it links LLVM statically.
pub fn parse_ldd_llvm_major(ldd: &str) -> Option<u32> {
    ldd.lines().find_map(|l| {
        let name = l.split_whitespace().next()?;
        let rest = name.strip_prefix("libLLVM")?;
        let digits: String = rest
            .trim_start_matches(['-', '.'])
            .trim_start_matches("so.")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

fn command_output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A rustup nightly whose sysroot holds rust-src, if any.
fn build_std_route() -> Option<Route> {
    let toolchain = env::var("PROCLENS_NIGHTLY").unwrap_or_else(|_| "nightly".into());
    let sysroot = command_output(
        Command::new("rustup").args(["run", &toolchain, "rustc", "--print", "sysroot"]),
    )
    .ok()?;
    let src = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core/Cargo.toml");
    src.exists().then_some(Route::BuildStd { toolchain })
}

/// A compiler whose sysroot has a prebuilt `core` for bpfel-unknown-none, if any.
fn prebuilt_route() -> Option<Route> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = env::var_os("PROCLENS_BPF_RUSTC") {
        candidates.push(p.into());
    }
    candidates.push("/usr/bin/rustc".into());
    candidates.into_iter().find_map(|rustc| {
        let sysroot = command_output(Command::new(&rustc).args(["--print", "sysroot"])).ok()?;
        let lib = Path::new(sysroot.trim()).join("lib/rustlib/bpfel-unknown-none/lib");
        let has_core = fs::read_dir(&lib).ok()?.flatten().any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("libcore-") && n.ends_with(".rlib")
        });
        has_core.then_some(Route::Prebuilt { rustc })
    })
}

/// Picks the route that works here: build-std when a nightly with rust-src exists,
/// otherwise the distribution's prebuilt BPF core.
pub fn detect_route() -> Option<Route> {
    build_std_route().or_else(prebuilt_route)
}

/// Where `cargo install` puts binaries.
pub fn cargo_bin_dir() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// `PATH` with cargo's bin directory in front, so a freshly installed bpf-linker is found.
pub fn path_with_cargo_bin() -> OsString {
    let mut paths = vec![cargo_bin_dir()];
    if let Some(p) = env::var_os("PATH") {
        paths.extend(env::split_paths(&p));
    }
    env::join_paths(paths).unwrap_or_default()
}

/// The bpf-linker on `PATH` (or in cargo's bin directory), if any.
pub fn find_bpf_linker() -> Option<PathBuf> {
    env::split_paths(&path_with_cargo_bin())
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}

/// The bpf-linker release the build is known to work with (`cargo xtask setup` installs
/// exactly this one): a newer one may emit BTF or relocations this aya does not read.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// The version a bpf-linker binary reports (`bpf-linker 0.13.0`).
pub fn bpf_linker_version(linker: &Path) -> Option<String> {
    let out = command_output(Command::new(linker).arg("--version")).ok()?;
    parse_bpf_linker_version(&out)
}

fn parse_bpf_linker_version(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix("bpf-linker "))
        .map(|v| v.trim().to_string())
}

/// The LLVM major a bpf-linker binary links, or `None` when it cannot be told (static).
pub fn bpf_linker_llvm_major(linker: &Path) -> Option<u32> {
    command_output(Command::new("ldd").arg(linker))
        .ok()
        .and_then(|o| parse_ldd_llvm_major(&o))
}

/// What to install when no route works, as one message.
pub const MISSING_TOOLCHAIN: &str = "cannot build the eBPF programs: no compiler for \
bpfel-unknown-none. Install one of: (a) a rustup nightly with rust-src \
(`rustup toolchain install nightly --component rust-src`), or (b) on Debian/Ubuntu the \
prebuilt BPF core library (`apt-get install rustc-web libstd-rust-web-dev-bpf`); then \
bpf-linker for that compiler's LLVM major N (`apt-get install llvm-N-dev libpolly-N-dev` and \
`cargo install bpf-linker --version 0.13.0 --no-default-features --features llvm-N`). As \
root on Debian/Ubuntu, `cargo xtask setup` does all of this.";

/// Checks that a route and a matching bpf-linker exist; the error says what to install.
pub fn check() -> Result<(Route, PathBuf)> {
    let Some(route) = detect_route() else {
        bail!(MISSING_TOOLCHAIN)
    };
    let major = route.llvm_major()?;
    let Some(linker) = find_bpf_linker() else {
        bail!(
            "cannot build the eBPF programs: bpf-linker is not installed. Install it for LLVM \
             {major}: `apt-get install llvm-{major}-dev libpolly-{major}-dev` and \
             `cargo install bpf-linker --no-default-features --features llvm-{major}` \
             (or run `cargo xtask setup` as root)"
        )
    };
    if let Some(linked) = bpf_linker_llvm_major(&linker)
        && linked != major
    {
        bail!(
            "{} links LLVM {linked} but the BPF compiler ({route:?}) uses LLVM {major}: \
                 reinstall it with `cargo install bpf-linker --force --no-default-features \
                 --features llvm-{major}` (or run `cargo xtask setup`)",
            linker.display()
        );
    }
    Ok((route, linker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_rustc_vv() {
        let out = "rustc 1.96.0 (ac68faa20 2026-05-25)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\nrelease: 1.96.0\nLLVM version: 22.1.8\n";
        assert_eq!(parse_llvm_major(out), Some(22));
        assert_eq!(parse_llvm_major("rustc 1.0\n"), None);
    }

    #[test]
    fn bpf_linker_version_from_its_output() {
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.13.0\n").as_deref(),
            Some("0.13.0")
        );
        assert_eq!(parse_bpf_linker_version("something else\n"), None);
    }

    #[test]
    fn llvm_major_from_ldd() {
        let debian = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1 (0x00007fe0)\n";
        assert_eq!(parse_ldd_llvm_major(debian), Some(22));
        let older = "\tlibLLVM-19.so => /usr/lib/llvm-19/lib/libLLVM-19.so (0x00007f)\n";
        assert_eq!(parse_ldd_llvm_major(older), Some(19));
        assert_eq!(
            parse_ldd_llvm_major("\tlibc.so.6 => /lib/libc.so.6\n"),
            None
        );
    }
}
