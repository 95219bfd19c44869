//! The initramfs every kernel of the matrix boots: busybox-static, proclens, the
//! integration-test binaries with their shared libraries, and an /init that runs them.

use std::{
    fmt::Write as _,
    fs,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::status;

/// Markers /init prints on the serial console; [`super::serial`] parses them.
pub const BEGIN: &str = "PROCLENS-TEST-BEGIN";
pub const RESULT: &str = "PROCLENS-TEST-RESULT";
pub const KERNEL: &str = "PROCLENS-KERNEL";
pub const SUMMARY: &str = "PROCLENS-SUMMARY";
/// Brackets /init's dump of the guest's processes (their kernel stacks included) when a
/// test binary outlives [`Selection::binary_timeout_s`]; the binary is then killed.
pub const HUNG: &str = "PROCLENS-HUNG";
pub const HUNG_END: &str = "PROCLENS-HUNG-END";

/// Host tools the tests run: bpftool (the leak tests look BPF objects up by id),
/// util-linux's setpriv (busybox's lacks --reuid/--regid) and unshare (busybox's lacks
/// --kill-child), and coreutils' dd (a copy test runs dd under another name, which
/// busybox answers with "applet not found").
const HOST_TOOLS: &[&str] = &[
    "/usr/sbin/bpftool",
    "/usr/bin/setpriv",
    "/usr/bin/unshare",
    "/bin/dd",
];

/// A test binary to run inside the VM: its cargo target name and built path.
#[derive(Debug, Clone)]
pub struct TestBinary {
    pub name: String,
    pub path: PathBuf,
}

/// Which tests /init runs, and how often.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// A libtest name filter passed to every binary (none: all tests).
    pub filter: Option<String>,
    /// Runs of each binary (at least 1): repeating a flaky test shows how often it fails.
    pub repeat: u32,
    /// Seconds one run of a test binary may take before /init dumps the processes and
    /// kills it (0: no limit), so one hung test costs one binary, not the whole boot.
    pub binary_timeout_s: u32,
}

/// The /init script: mounts what proclens and the tests need, runs each test binary one
/// test at a time with CI=true (`selection.repeat` times), prints one result line per run
/// and a summary, and powers the VM off.
pub fn init_script(tests: &[TestBinary], selection: &Selection) -> String {
    let mut s = String::from(
        r"#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec 0</dev/console 1>/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tracefs tracefs /sys/kernel/tracing
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
# /tmp stays on the initramfs itself (writable): the test binaries may live under it.
mount -t tmpfs tmpfs /run
ip link set lo up 2>/dev/null
export HOME=/root CI=true RUST_BACKTRACE=0 TMPDIR=/tmp PROCLENS_EMULATED=1
",
    );
    let _ = writeln!(s, "echo \"{KERNEL} $(uname -r)\"");
    s += "pass=0\nfail=0\n";
    s += &watchdog(selection.binary_timeout_s);
    let filter = selection
        .filter
        .as_deref()
        .map(|f| format!(" '{}'", f.replace('\'', "")))
        .unwrap_or_default();
    for _ in 0..selection.repeat.max(1) {
        for t in tests {
            let name = &t.name;
            let _ = write!(
                s,
                r#"echo "{BEGIN} {name}"
run {name} /tests/{name} --test-threads=1{filter}
rc=$?
if [ $rc -eq 0 ]; then pass=$((pass+1)); echo "{RESULT} {name} PASS"; else fail=$((fail+1)); echo "{RESULT} {name} FAIL exit=$rc"; fi
"#
            );
        }
    }
    let _ = writeln!(s, "echo \"{SUMMARY} pass=$pass fail=$fail\"");
    s += "sync\npoweroff -f\n";
    s
}

/// The shell function `run NAME CMD...`: runs CMD in the foreground (signal dispositions
/// as a test expects them) and returns its exit status. When `timeout_s` is not 0, a
/// background watchdog waits that long; if CMD still runs, it prints every user process
/// with its state, wait channel and kernel stack between [`HUNG`] markers, kills CMD and
/// the proclens processes it started, and `run` returns 124 (`timeout`'s status).
fn watchdog(timeout_s: u32) -> String {
    format!(
        r#"run() {{
  name=$1; shift
  rm -f /tmp/test.pid /tmp/hung
  dog=
  if [ {timeout_s} -gt 0 ]; then
    ( sleep {timeout_s}
      p=$(cat /tmp/test.pid 2>/dev/null)
      if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
        echo
        echo "{HUNG} $name after {timeout_s} s"
        for d in /proc/[0-9]*; do
          cmd=$(tr '\0' ' ' < "$d/cmdline" 2>/dev/null)
          [ -n "$cmd" ] || continue
          echo "pid ${{d#/proc/}} state $(cut -d' ' -f3 "$d/stat") wchan $(cat "$d/wchan" 2>/dev/null): $cmd"
          head -12 "$d/stack" 2>/dev/null | sed 's/^/    /'
        done
        echo "{HUNG_END}"
        touch /tmp/hung
        kill -9 "$p"; killall -9 proclens 2>/dev/null
      fi ) &
    dog=$!
  fi
  sh -c 'echo $$ > /tmp/test.pid; exec "$@"' sh "$@"
  rc=$?
  [ -n "$dog" ] && kill "$dog" 2>/dev/null
  [ -e /tmp/hung ] && rc=124
  return $rc
}}
"#
    )
}

fn copy_into(root: &Path, src: &Path, dest: &Path) -> Result<()> {
    let to = root.join(dest.strip_prefix("/").unwrap_or(dest));
    if to.exists() {
        return Ok(());
    }
    fs::create_dir_all(to.parent().unwrap())?;
    fs::copy(src, &to).with_context(|| format!("copying {} to {}", src.display(), to.display()))?;
    Ok(())
}

/// Copies an executable and every library it links (at their own paths).
fn copy_with_libs(root: &Path, exe: &Path, dest: &Path) -> Result<()> {
    copy_into(root, exe, dest)?;
    for lib in proclens_xtask::ldd::libraries(exe)? {
        let real = fs::canonicalize(&lib).unwrap_or(lib.clone());
        copy_into(root, &real, &lib)?;
    }
    Ok(())
}

/// Builds the initramfs into `out` (gzip'd newc cpio) from a staging tree `root`.
pub fn build(
    root: &Path,
    out: &Path,
    proclens: &Path,
    tests: &[TestBinary],
    selection: &Selection,
) -> Result<()> {
    if root.exists() {
        fs::remove_dir_all(root)?;
    }
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run", "root", "tests",
        "etc", "lib64",
    ] {
        fs::create_dir_all(root.join(d))?;
    }
    // busybox-static and one symlink per applet.
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        bail!("/bin/busybox is missing (apt-get install busybox-static)");
    }
    let out_list = Command::new(busybox).arg("--list-full").output()?;
    let bb_dest = root.join("bin/busybox");
    fs::copy(busybox, &bb_dest)?;
    for applet in String::from_utf8_lossy(&out_list.stdout).lines() {
        let link = root.join(applet.trim());
        if applet.trim().is_empty() || link.exists() {
            continue;
        }
        fs::create_dir_all(link.parent().unwrap())?;
        symlink("/bin/busybox", &link)?;
    }
    // proclens where the test binaries expect it (CARGO_BIN_EXE_proclens is absolute).
    copy_with_libs(root, proclens, proclens)?;
    symlink(proclens, root.join("usr/bin/proclens"))?;
    // Host tools the tests call, in place of busybox applets where both exist.
    for tool in HOST_TOOLS {
        let path = Path::new(tool);
        if !path.exists() {
            bail!("{tool} is missing (cargo xtask setup installs it)");
        }
        let dest = root.join(tool.trim_start_matches('/'));
        if dest.is_symlink() {
            fs::remove_file(&dest)?;
        }
        copy_with_libs(root, path, path)?;
    }
    for t in tests {
        copy_with_libs(root, &t.path, &Path::new("/tests").join(&t.name))?;
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    let init = root.join("init");
    fs::write(&init, init_script(tests, selection))?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    for (name, kind, major, minor) in [("console", "c", "5", "1"), ("null", "c", "1", "3")] {
        status(
            Command::new("mknod")
                .arg(root.join("dev").join(name))
                .args([kind, major, minor]),
        )?;
    }
    status(
        Command::new("sh")
            .current_dir(root)
            .args([
                "-c",
                "find . | cpio -o -H newc --quiet | gzip -1 > \"$1\"",
                "sh",
            ])
            .arg(out),
    )?;
    let size = fs::metadata(out)?.len();
    eprintln!("xtask: initramfs {} ({} MiB)", out.display(), size >> 20);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_runs_every_binary_and_powers_off() {
        let tests = [
            TestBinary {
                name: "switches".into(),
                path: "/x/switches-1".into(),
            },
            TestBinary {
                name: "cli".into(),
                path: "/x/cli-2".into(),
            },
        ];
        let s = init_script(&tests, &Selection::default());
        assert!(
            s.contains("if [ 0 -gt 0 ]"),
            "no watchdog without a time limit"
        );
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("run switches /tests/switches --test-threads=1\n"));
        assert!(s.contains("run cli /tests/cli --test-threads=1\n"));
        assert!(s.contains("mount -t cgroup2 cgroup2 /sys/fs/cgroup"));
        assert!(s.contains("CI=true"));
        assert!(s.trim_end().ends_with("poweroff -f"));
        let again = Selection {
            filter: Some("cgroup_filter".into()),
            repeat: 3,
            binary_timeout_s: 0,
        };
        let s = init_script(&tests, &again);
        assert_eq!(
            s.matches("run cli /tests/cli --test-threads=1 'cgroup_filter'\n")
                .count(),
            3
        );
        let watched = Selection {
            binary_timeout_s: 300,
            ..Selection::default()
        };
        let s = init_script(&tests, &watched);
        assert!(s.contains("( sleep 300\n"));
        assert!(s.contains(HUNG) && s.contains(HUNG_END));
    }
}
