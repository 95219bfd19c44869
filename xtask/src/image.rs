//! `cargo xtask image`: proclens's OCI image, built with podman (or buildah) from
//! `deploy/Containerfile`. No registry can be reached from the machines it is built on,
//! so it is `FROM scratch`: the release binary (debug info stripped) and the shared
//! libraries `ldd` names, at the same paths, staged in `target/image/rootfs`. Shared by
//! `cargo xtask image` and the image test (tool/tests/image.rs).

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

/// The image's name; its tag is the workspace's version.
pub const NAME: &str = "proclens";

/// Where the binary lives in the image (the Containerfile's ENTRYPOINT).
pub const BINARY_PATH: &str = "usr/bin/proclens";

/// `proclens:<version>`, the tag `deploy/daemonset.yaml` runs.
pub fn tag() -> String {
    format!("{NAME}:{}", env!("CARGO_PKG_VERSION"))
}

/// Fills `rootfs` with `binary` at [`BINARY_PATH`] (debug info stripped: the image
/// carries no symbols' worth of DWARF; file capabilities set, see [`set_file_caps`]) and
/// its shared libraries at their own paths.
///
/// # Panics
///
/// If ldd names a library by a relative path (it prints absolute ones).
pub fn stage(binary: &Path, rootfs: &Path) -> Result<()> {
    if rootfs.exists() {
        fs::remove_dir_all(rootfs).with_context(|| format!("clearing {}", rootfs.display()))?;
    }
    let dest = rootfs.join(BINARY_PATH);
    fs::create_dir_all(dest.parent().expect("has a parent"))?;
    let st = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(binary)
        .arg(&dest)
        .status()
        .context("running objcopy (binutils)")?;
    if !st.success() {
        bail!("objcopy --strip-debug {} failed ({st})", binary.display());
    }
    set_file_caps(&dest)?;
    for lib in crate::ldd::libraries(binary)? {
        let to = rootfs.join(lib.strip_prefix("/").expect("absolute"));
        fs::create_dir_all(to.parent().expect("has a parent"))?;
        // The file itself, not a symlink into a host path the image does not have.
        fs::copy(&lib, &to).with_context(|| format!("copying {}", lib.display()))?;
    }
    Ok(())
}

/// Gives the staged binary the file capabilities `cap_bpf,cap_perfmon=ep`
/// (`security.capability`, as setcap writes it; the image's layer keeps the attribute).
/// Kubernetes adds a container's capabilities to its bounding set only: a process that
/// is not root gets none of them (kubernetes#56374; ambient capabilities are not
/// supported), unless the file it executes carries them. The bounding set still caps
/// them at what the DaemonSet adds.
fn set_file_caps(path: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    // struct vfs_cap_data, revision 2: magic_etc, then (permitted, inheritable) for the
    // low and the high 32 capabilities; the effective flag raises them at exec.
    const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
    const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x0000_0001;
    let high = (1u32 << (CAP_BPF - 32)) | (1u32 << (CAP_PERFMON - 32));
    let words = [VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE, 0, 0, high, 0];
    let value: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: valid NUL-terminated strings and a buffer of the length passed.
    let r = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            c"security.capability".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        bail!(
            "setting file capabilities on {}: {} (needs root, CAP_SETFCAP)",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The container tool to build with: podman, else buildah (both take `build`).
fn builder() -> Result<&'static str> {
    ["podman", "buildah"]
        .into_iter()
        .find(|tool| {
            Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .context("neither podman nor buildah is installed (apt-get install podman)")
}

/// Stages `binary` under `work` and builds `deploy/Containerfile` of `workspace` into
/// `tag`; a failure carries the tool's output.
pub fn build(binary: &Path, workspace: &Path, work: &Path, tag: &str) -> Result<()> {
    let rootfs = work.join("rootfs");
    stage(binary, &rootfs)?;
    let tool = builder()?;
    let out = Command::new(tool)
        .arg("build")
        .arg("--file")
        .arg(workspace.join("deploy/Containerfile"))
        .arg("--tag")
        .arg(tag)
        .arg("--build-arg")
        .arg(format!("VERSION={}", env!("CARGO_PKG_VERSION")))
        .arg(work)
        .output()
        .with_context(|| format!("running {tool} build"))?;
    if !out.status.success() {
        bail!(
            "{tool} build failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
