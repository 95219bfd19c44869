//! tracefs: finding (or mounting) it, and parsing tracepoint format files so record
//! offsets come from the running kernel.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::error::Fatal;

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The declaration as the kernel prints it (`long prev_state`, `__data_loc char[] comm`).
    pub decl: String,
    pub name: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

impl Field {
    /// `__data_loc` fields hold a (offset, length) pair to a string elsewhere in the record.
    pub fn is_data_loc(&self) -> bool {
        self.decl.starts_with("__data_loc")
    }
}

/// A parsed `events/<category>/<name>/format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub name: String,
    pub id: u32,
    pub fields: Vec<Field>,
}

impl Format {
    pub fn field(&self, name: &str) -> Result<&Field> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .with_context(|| format!("tracepoint {} has no field `{name}`", self.name))
    }

    /// A field that must be an integer of one of the given sizes.
    pub fn int_field(&self, name: &str, sizes: &[u32]) -> Result<&Field> {
        let f = self.field(name)?;
        if f.is_data_loc() || !sizes.contains(&f.size) {
            bail!(
                "tracepoint {} field `{name}` is `{}` ({} bytes); expected an integer of {sizes:?} bytes",
                self.name,
                f.decl,
                f.size
            );
        }
        Ok(f)
    }
}

/// Parses a tracefs format file. Rejects malformed input with an error, never panics.
pub fn parse_format(text: &str) -> Result<Format> {
    let mut name = None;
    let mut id = None;
    let mut fields = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("name:") {
            name = Some(n.trim().to_string());
        } else if let Some(i) = line.strip_prefix("ID:") {
            id = Some(
                i.trim()
                    .parse::<u32>()
                    .with_context(|| format!("bad ID line `{line}`"))?,
            );
        } else if line.starts_with("field:") {
            fields.push(parse_field(line)?);
        }
    }
    let name = name.context("format has no `name:` line")?;
    let id = id.context("format has no `ID:` line")?;
    if fields.is_empty() {
        bail!("format of {name} lists no fields");
    }
    Ok(Format { name, id, fields })
}

/// `field:long prev_state;	offset:32;	size:8;	signed:1;`
fn parse_field(line: &str) -> Result<Field> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    let mut signed = None;
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once(':')
            .with_context(|| format!("bad field part `{part}`"))?;
        match key.trim() {
            "field" => decl = Some(value.trim().to_string()),
            "offset" => {
                offset = Some(
                    value
                        .trim()
                        .parse::<u32>()
                        .with_context(|| format!("bad offset in `{line}`"))?,
                )
            }
            "size" => {
                size = Some(
                    value
                        .trim()
                        .parse::<u32>()
                        .with_context(|| format!("bad size in `{line}`"))?,
                )
            }
            "signed" => signed = Some(value.trim() == "1"),
            _ => {}
        }
    }
    let decl = decl.with_context(|| format!("no declaration in `{line}`"))?;
    // The name is the last identifier of the declaration, before any array suffix.
    let name = decl
        .split_whitespace()
        .last()
        .map(|w| w.split('[').next().unwrap_or(w))
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .with_context(|| format!("no field name in `{line}`"))?
        .to_string();
    Ok(Field {
        decl,
        name,
        offset: offset.with_context(|| format!("no offset in `{line}`"))?,
        size: size.with_context(|| format!("no size in `{line}`"))?,
        signed: signed.unwrap_or(false),
    })
}

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The tracefs root, mounting tracefs at /sys/kernel/tracing when it is missing and we are
/// allowed to. The mount is left in place (it is harmless and other tools expect it).
pub fn root() -> Result<PathBuf> {
    for candidate in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(candidate).join("events").is_dir() {
            return Ok(candidate.into());
        }
    }
    let caps = super::privilege::effective()?;
    if !super::privilege::has(caps, super::privilege::CAP_SYS_ADMIN) {
        return Err(Fatal::Tracefs(format!(
            "tracefs is not mounted and mounting it needs CAP_SYS_ADMIN: run `mount -t tracefs nodev {TRACEFS}` as root"
        ))
        .into());
    }
    nix::mount::mount(
        Some("nodev"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| {
        Fatal::Tracefs(format!(
            "tracefs is not mounted and mounting it at {TRACEFS} failed: {e}"
        ))
    })?;
    if !Path::new(TRACEFS).join("events").is_dir() {
        return Err(Fatal::Tracefs(format!(
            "mounted tracefs at {TRACEFS} but it has no events/"
        ))
        .into());
    }
    Ok(TRACEFS.into())
}

/// Reads and parses the format of `category/name`; a missing tracepoint is a kernel error.
pub fn format(root: &Path, category: &str, name: &str) -> Result<Format> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Fatal::KernelUnsupported(format!(
            "tracepoint {category}/{name} is not available ({}: {e})",
            path.display()
        ))
    })?;
    parse_format(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SWITCH_6_18: &str = include_str!("../../tests/fixtures/6.18-sched_switch.format");
    const SWITCH_5_10: &str = include_str!("../../tests/fixtures/5.10-sched_switch.format");
    const WAKEUP_6_18: &str = include_str!("../../tests/fixtures/6.18-sched_wakeup.format");
    const FORK_6_18: &str = include_str!("../../tests/fixtures/6.18-sched_process_fork.format");
    const FORK_5_10: &str = include_str!("../../tests/fixtures/5.10-sched_process_fork.format");

    #[test]
    fn sched_switch_6_18() {
        let f = parse_format(SWITCH_6_18).unwrap();
        assert_eq!(f.name, "sched_switch");
        assert_eq!(f.id, 372);
        let st = f.int_field("prev_state", &[4, 8]).unwrap();
        assert_eq!((st.offset, st.size, st.signed), (32, 8, true));
        assert_eq!(f.field("next_pid").unwrap().offset, 56);
        assert_eq!(f.field("prev_comm").unwrap().size, 16);
        assert_eq!(f.field("common_pid").unwrap().offset, 4);
    }

    #[test]
    fn sched_switch_5_10() {
        let f = parse_format(SWITCH_5_10).unwrap();
        let st = f.int_field("prev_state", &[4, 8]).unwrap();
        assert_eq!((st.offset, st.size), (32, 8));
        assert_eq!(f.field("prev_pid").unwrap().offset, 24);
    }

    #[test]
    fn wakeup_pid() {
        let f = parse_format(WAKEUP_6_18).unwrap();
        let pid = f.int_field("pid", &[4]).unwrap();
        assert_eq!((pid.offset, pid.size), (24, 4));
    }

    #[test]
    fn fork_comm_is_data_loc_on_6_18_but_array_on_5_10() {
        let new = parse_format(FORK_6_18).unwrap();
        assert!(new.field("parent_comm").unwrap().is_data_loc());
        assert_eq!(new.field("child_pid").unwrap().offset, 20);
        assert!(
            new.int_field("parent_comm", &[4]).is_err(),
            "a __data_loc is not an integer"
        );
        let old = parse_format(FORK_5_10).unwrap();
        let comm = old.field("parent_comm").unwrap();
        assert!(!comm.is_data_loc());
        assert_eq!(comm.size, 16);
        assert_eq!(old.field("child_pid").unwrap().offset, 56);
    }

    #[test]
    fn malformed_formats_are_errors() {
        for bad in [
            "",
            "name: x\n",
            "name: x\nID: 1\n",
            "name: x\nID: nope\nformat:\n\tfield:int a;\toffset:0;\tsize:4;\tsigned:1;\n",
            "name: x\nID: 1\nformat:\n\tfield:int a;\toffset:zz;\tsize:4;\tsigned:1;\n",
            "name: x\nID: 1\nformat:\n\tfield:int a;\tsize:4;\n",
            "name: x\nID: 1\nformat:\n\tfield:;\toffset:0;\tsize:4;\n",
            "name: x\nID: 1\nformat:\n\tfield\n",
        ] {
            assert!(parse_format(bad).is_err(), "accepted {bad:?}");
        }
        assert!(parse_format(SWITCH_6_18).unwrap().field("nope").is_err());
    }
}
