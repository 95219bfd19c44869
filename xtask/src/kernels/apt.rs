//! Fetching Debian cloud kernels through a throwaway apt configuration under
//! target/kernels/apt/: the system's apt configuration is never touched.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::status;

/// A kernel of the matrix: which Debian suite ships it and from which archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSpec {
    /// `major.minor`, e.g. `6.1`.
    pub version: &'static str,
    pub suite: &'static str,
    pub archive: Archive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    Debian,
    Security,
}

/// The kernels `cargo xtask test-kernels` knows, oldest first.
pub const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        version: "5.10",
        suite: "bullseye",
        archive: Archive::Debian,
    },
    KernelSpec {
        version: "6.1",
        suite: "bookworm",
        archive: Archive::Debian,
    },
    KernelSpec {
        version: "6.12",
        suite: "bookworm-security",
        archive: Archive::Security,
    },
    KernelSpec {
        version: "6.18",
        suite: "trixie-backports",
        archive: Archive::Debian,
    },
];

pub fn spec(version: &str) -> Option<&'static KernelSpec> {
    KERNELS.iter().find(|k| k.version == version)
}

/// The Debian and Debian-security mirrors the machine already uses, from the text of its
/// apt sources (one-line `deb URI SUITE ...` or deb822 `URIs:` fields).
pub fn mirrors_from_sources(text: &str) -> (Option<String>, Option<String>) {
    let mut uris = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("URIs:") {
            uris.extend(rest.split_whitespace().map(str::to_string));
        } else if let Some(rest) = line.strip_prefix("deb ") {
            // `deb [options] URI suite components`
            let rest = match rest.trim_start().strip_prefix('[') {
                Some(r) => r.split_once(']').map_or("", |(_, r)| r),
                None => rest,
            };
            if let Some(uri) = rest.split_whitespace().next() {
                uris.push(uri.to_string());
            }
        }
    }
    let clean = |u: &String| u.trim_end_matches('/').to_string();
    let security = uris
        .iter()
        .find(|u| u.trim_end_matches('/').ends_with("/debian-security"))
        .map(clean);
    let debian = uris
        .iter()
        .find(|u| u.trim_end_matches('/').ends_with("/debian"))
        .map(clean);
    (debian, security)
}

fn system_mirrors() -> (String, String) {
    let mut text = String::new();
    text += &fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            text += "\n";
            text += &fs::read_to_string(e.path()).unwrap_or_default();
        }
    }
    let (debian, security) = mirrors_from_sources(&text);
    let debian = debian.unwrap_or_else(|| "http://deb.debian.org/debian".into());
    let security = security.unwrap_or_else(|| format!("{debian}-security"));
    (debian, security)
}

/// The numeric components of a kernel package's version part: `6.12.117+deb12` ->
/// [6, 12, 117, 12], `5.10.0-32` -> [5, 10, 0, 32].
fn version_numbers(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Picks the newest `linux-image-<version>...-cloud-amd64` package (not -dbg, not
/// -unsigned) for `version` (`major.minor`) among package names.
pub fn select_package<'a>(
    version: &str,
    names: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let want = version_numbers(version);
    names
        .into_iter()
        .filter_map(|n| {
            let v = n
                .strip_prefix("linux-image-")?
                .strip_suffix("-cloud-amd64")?;
            let nums = version_numbers(v);
            (v.starts_with(char::is_numeric)
                && nums.len() > want.len()
                && nums[..want.len()] == want[..])
                .then_some((nums, n))
        })
        .max()
        .map(|(_, n)| n.to_string())
}

/// The throwaway apt configuration.
pub struct Apt {
    dir: PathBuf,
}

impl Apt {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn cmd(&self, tool: &str) -> Command {
        let d = |p: &str| self.dir.join(p).to_string_lossy().into_owned();
        let mut c = Command::new(tool);
        // apt's progress goes to stderr: stdout is kept for the result table.
        c.stdout(std::io::stderr());
        c.args(["-o", &format!("Dir::Etc::SourceList={}", d("sources.list"))])
            .args(["-o", "Dir::Etc::SourceParts=/dev/null"])
            .args(["-o", &format!("Dir::State::Lists={}", d("lists"))])
            .args(["-o", &format!("Dir::Cache={}", d("cache"))])
            .args(["-o", &format!("Dir::State::status={}", d("status"))])
            .args(["-o", "Dir::Etc::Preferences=/dev/null"])
            .args(["-o", "Dir::Etc::PreferencesParts=/dev/null"])
            .args(["-o", "APT::Sandbox::User=root"])
            .args(["-o", "Debug::NoLocking=1"]);
        c
    }

    /// Writes sources for `specs`' suites and runs `apt-get update` on them.
    pub fn update(&self, specs: &[&KernelSpec]) -> Result<()> {
        let (debian, security) = system_mirrors();
        let mut list = String::new();
        let mut suites: Vec<&str> = specs.iter().map(|s| s.suite).collect();
        suites.dedup();
        for s in specs {
            let uri = match s.archive {
                Archive::Debian => &debian,
                Archive::Security => &security,
            };
            let line = format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {uri} {} main\n",
                s.suite
            );
            if !list.contains(&line) {
                list += &line;
            }
        }
        for d in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(self.dir.join(d))?;
        }
        fs::write(self.dir.join("sources.list"), &list)?;
        if !self.dir.join("status").exists() {
            fs::write(self.dir.join("status"), "")?;
        }
        eprintln!(
            "xtask: throwaway apt configuration in {} for {suites:?}",
            self.dir.display()
        );
        status(self.cmd("apt-get").args(["update", "-q"]))
    }

    /// The cloud kernel package for `version` in the configured suites.
    pub fn kernel_package(&self, version: &str) -> Result<String> {
        let out = self
            .cmd("apt-cache")
            .stdout(std::process::Stdio::piped())
            .args([
                "search",
                "--names-only",
                &format!("^linux-image-{}", regex_escape(version)),
            ])
            .output()
            .context("running apt-cache search")?;
        if !out.status.success() {
            bail!(
                "apt-cache search failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        select_package(
            version,
            text.lines().filter_map(|l| l.split_whitespace().next()),
        )
        .with_context(|| format!("no linux-image-{version}.*-cloud-amd64 package in the suites"))
    }

    /// Downloads `package` into `dest` and returns the .deb's path.
    #[allow(
        clippy::case_sensitive_file_extension_comparisons,
        reason = "apt-get download names its files `<package>_<version>_<arch>.deb`, lower case"
    )]
    pub fn download(&self, package: &str, dest: &Path) -> Result<PathBuf> {
        fs::create_dir_all(dest)?;
        status(
            self.cmd("apt-get")
                .current_dir(dest)
                .args(["download", "-q", package]),
        )?;
        fs::read_dir(dest)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            })
            .with_context(|| format!("apt-get download left no {package}_*.deb"))
    }
}

fn regex_escape(s: &str) -> String {
    s.replace('.', "\\.")
}

/// Extracts only ./boot/ of a kernel .deb into `dir` and returns the vmlinuz path.
pub fn extract_vmlinuz(deb: &Path, dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    status(
        Command::new("sh")
            .args([
                "-c",
                "dpkg-deb --fsys-tarfile \"$1\" | tar -x -C \"$2\" ./boot/",
                "sh",
            ])
            .arg(deb)
            .arg(dir),
    )?;
    fs::read_dir(dir.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{} has no boot/vmlinuz-*", deb.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_newest_cloud_image_of_the_version() {
        let names = [
            "linux-image-6.1.0-31-cloud-amd64",
            "linux-image-6.1.0-37-cloud-amd64",
            "linux-image-6.1.0-37-cloud-amd64-dbg",
            "linux-image-6.1.0-37-cloud-amd64-unsigned",
            "linux-image-6.1.0-37-amd64",
            "linux-image-6.12.117+deb12-cloud-amd64",
            "linux-image-6.12.9+deb12-cloud-amd64",
            "linux-image-cloud-amd64",
        ];
        assert_eq!(
            select_package("6.1", names).as_deref(),
            Some("linux-image-6.1.0-37-cloud-amd64")
        );
        assert_eq!(
            select_package("6.12", names).as_deref(),
            Some("linux-image-6.12.117+deb12-cloud-amd64")
        );
        assert_eq!(select_package("6.18", names), None);
        assert_eq!(
            select_package(
                "5.10",
                [
                    "linux-image-5.10.0-9-cloud-amd64",
                    "linux-image-5.10.0-32-cloud-amd64"
                ]
            )
            .as_deref(),
            Some("linux-image-5.10.0-32-cloud-amd64")
        );
    }

    #[test]
    fn reads_mirrors_from_both_source_formats() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security/\nSuites: bookworm-security\n";
        assert_eq!(
            mirrors_from_sources(deb822),
            (
                Some("http://deb.debian.org/debian".into()),
                Some("http://deb.debian.org/debian-security".into())
            )
        );
        let one_line = "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main\n";
        assert_eq!(
            mirrors_from_sources(one_line),
            (Some("http://mirror.example/debian".into()), None)
        );
    }
}
