//! cgroup v2: resolving `--cgroup PATH` to the id the kernel compares, and the throwaway
//! cgroup `run -- CMD` puts its command in so it and every descendant are traced from the
//! first instruction, with no race.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::error::Fatal;

/// A cgroup v2 subtree to trace: its id (the cgroup directory's inode number) and depth
/// below the v2 root (the ancestor level `bpf_get_current_ancestor_cgroup_id` compares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupFilter {
    pub path: PathBuf,
    pub id: u64,
    pub level: u32,
}

/// The cgroup v2 mount point from a /proc/self/mountinfo text.
pub fn parse_v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        // ... mount-point ... - fstype source options
        let (left, right) = l.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(unescape_mount_path)
    })
}

/// A path as /proc/self/mountinfo prints it: the kernel writes a space, tab, newline and
/// backslash in it as an octal escape (`\040`, `\011`, `\012`, `\134`).
fn unescape_mount_path(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt as _;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        if let Some(c) = octal {
            out.push(c);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

pub fn v2_root() -> Result<PathBuf> {
    let mi = fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    parse_v2_mount(&mi).ok_or_else(|| {
        Fatal::KernelUnsupported(
            "no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup)".into(),
        )
        .into()
    })
}

/// Resolves a user's path: absolute under the v2 mount, or relative to it.
pub fn resolve(path: &Path) -> Result<CgroupFilter> {
    let root = v2_root()?;
    let full = if path.starts_with(&root) {
        path.to_path_buf()
    } else {
        root.join(path.strip_prefix("/").unwrap_or(path))
    };
    let meta =
        fs::metadata(&full).map_err(|e| Fatal::NoSuchCgroup(format!("{}: {e}", full.display())))?;
    if !full.join("cgroup.procs").exists() {
        return Err(Fatal::NoSuchCgroup(format!(
            "{} is not a cgroup v2 directory",
            full.display()
        ))
        .into());
    }
    let rel = full
        .strip_prefix(&root)
        .context("cgroup path outside the v2 mount")?;
    let level = rel.components().count() as u32;
    Ok(CgroupFilter {
        path: full,
        id: meta.ino(),
        level,
    })
}

/// A cgroup created for one command and removed when dropped (its remaining processes
/// are moved back to proclens's own cgroup first).
#[derive(Debug)]
pub struct RunCgroup {
    pub filter: CgroupFilter,
    home: PathBuf,
}

/// Name prefix of the cgroups `run` creates (below the v2 root), followed by proclens's pid.
const RUN_PREFIX: &str = "proclens-run-";

impl RunCgroup {
    /// What removing the cgroup takes once proclens has dropped its other capabilities:
    /// the v2 root may be read-only to uid 0 without `CAP_DAC_OVERRIDE` (0555 on hybrid
    /// hierarchies), and rmdir needs write access to the parent.
    pub const REMOVAL_CAPS: &[caps::Capability] = &[caps::Capability::CAP_DAC_OVERRIDE];

    /// Makes the cgroup `run`'s command runs in. It is made before the tracer starts (the
    /// tracer filters on it), so the check that proclens may trace comes first: who may
    /// not hears what is missing (exit code 3), not cgroupfs's refusal.
    pub fn create() -> Result<Self> {
        super::privilege::check_can_trace()?;
        let root = v2_root()?;
        sweep_stale(&root);
        let own = fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
        let own_rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/");
        let home = root.join(own_rel.trim_start_matches('/'));
        let dir = root.join(format!("{RUN_PREFIX}{}", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        let filter = resolve(&dir)?;
        Ok(Self { filter, home })
    }

    /// Path of `cgroup.procs`, written by the child before it execs.
    pub fn procs_file(&self) -> PathBuf {
        self.filter.path.join("cgroup.procs")
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        // Processes the command left running go back where proclens runs.
        if let Ok(pids) = fs::read_to_string(self.procs_file()) {
            for pid in pids.lines() {
                let _ = fs::write(self.home.join("cgroup.procs"), pid);
            }
        }
        let _ = fs::remove_dir(&self.filter.path);
    }
}

/// Removes the empty run cgroups of proclens processes that are gone (killed before they
/// could remove theirs, e.g. by SIGKILL), and one left by an earlier holder of this pid.
/// A cgroup still holding processes stays (rmdir refuses it); a live proclens's is never
/// touched.
fn sweep_stale(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    let me = std::process::id();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(RUN_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let live_proclens =
            pid != me && super::procfs::comm(pid).is_some_and(|c| c == env!("CARGO_BIN_NAME"));
        if !live_proclens {
            let _ = fs::remove_dir(e.path());
        }
    }
}

/// Whether process `pid` is in the cgroup `path` names or below it (as /proc/PID/cgroup
/// says; false when either cannot be read).
pub fn holds(path: &Path, pid: u32) -> bool {
    let (Ok(f), Ok(root)) = (resolve(path), v2_root()) else {
        return false;
    };
    let Ok(rel) = f.path.strip_prefix(&root) else {
        return false;
    };
    let want = Path::new("/").join(rel);
    super::procfs::cgroup(pid).is_some_and(|c| Path::new(&c).starts_with(&want))
}

/// Fails unless `path` names a cgroup (for argument checking before anything is loaded).
pub fn check_exists(path: &Path) -> Result<CgroupFilter> {
    let f = resolve(path)?;
    if f.id == 0 {
        bail!("cgroup {} has id 0", f.path.display());
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn finds_the_v2_mount() {
        let hybrid = "25 30 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
                      33 25 0:28 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                      34 25 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            parse_v2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(parse_v2_mount(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(
            parse_v2_mount("34 25 0:29 / /x rw - cgroup cgroup rw,cpu\n"),
            None
        );
        assert_eq!(parse_v2_mount("garbage"), None);
        assert_eq!(parse_v2_mount(""), None);
    }

    /// A path with the characters the kernel escapes in mountinfo.
    fn mount_path() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::collection::vec(
                prop_oneof![
                    Just(' '),
                    Just('\t'),
                    Just('\n'),
                    Just('\\'),
                    Just('-'),
                    prop::char::range('a', 'z'),
                    prop::char::range('\u{e0}', '\u{ff}'),
                ],
                1..10,
            )
            .prop_map(|c| c.into_iter().collect::<String>()),
            0..4,
        )
        .prop_map(|segs| format!("/{}", segs.join("/")))
    }

    /// How the kernel's `mangle_path` writes a path into mountinfo.
    fn escape(path: &str) -> String {
        path.chars()
            .map(|c| match c {
                ' ' | '\t' | '\n' | '\\' => format!("\\{:03o}", c as u32),
                c => c.to_string(),
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary text is parsed or rejected, never a panic.
        #[test]
        fn proptest_arbitrary_mountinfo_text(text in any::<String>()) {
            if parse_v2_mount(&text).is_some() {
                prop_assert!(text.contains(" - cgroup2"));
            }
        }

        /// The mount point of the first cgroup2 line of a mountinfo text, whatever the
        /// characters in its path, the other mounts and their optional fields.
        #[test]
        #[allow(
            clippy::format_collect,
            reason = "builds one test input per case: plain map-and-collect reads best"
        )]
        fn proptest_v2_mount_round_trips(
            mounts in prop::collection::vec(
                (
                    mount_path(),
                    prop::sample::select(vec!["cgroup2", "cgroup", "tmpfs", "ext4", "proc"]),
                    prop::collection::vec("(shared|master|propagate_from):[0-9]{1,3}", 0..3),
                ),
                0..8,
            ),
        ) {
            let text: String = mounts
                .iter()
                .enumerate()
                .map(|(i, (path, fstype, optional))| {
                    let optional: String = optional.iter().map(|o| format!(" {o}")).collect();
                    format!(
                        "{} 1 0:{i} / {} rw,nosuid{optional} - {fstype} {fstype} rw\n",
                        20 + i,
                        escape(path)
                    )
                })
                .collect();
            let want = mounts
                .iter()
                .find(|(_, fstype, _)| *fstype == "cgroup2")
                .map(|(path, _, _)| PathBuf::from(path));
            prop_assert_eq!(parse_v2_mount(&text), want, "{}", text);
        }
    }

    /// A cgroup2 mount point holding a space: mountinfo shows it as `\040`.
    #[test]
    fn mount_points_with_escaped_characters() {
        let mi = "33 25 0:28 / /mnt/my\\040cgroup\\134x rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_v2_mount(mi), Some(PathBuf::from("/mnt/my cgroup\\x")));
        // Not an escape: left as it is.
        let mi = "33 25 0:28 / /mnt/a\\9b\\04 rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_v2_mount(mi), Some(PathBuf::from("/mnt/a\\9b\\04")));
    }
}
