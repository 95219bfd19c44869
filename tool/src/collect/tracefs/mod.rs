//! tracefs: finding it, and parsing tracepoint format files so record
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

/// `field:long prev_state;<TAB>offset:32;<TAB>size:8;<TAB>signed:1;`
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
                );
            }
            "size" => {
                size = Some(
                    value
                        .trim()
                        .parse::<u32>()
                        .with_context(|| format!("bad size in `{line}`"))?,
                );
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

/// The tracefs root, where it is mounted. proclens does not mount it: only the fork-call
/// timing of `forks` reads tracepoint formats, and goes without where tracefs is missing.
pub fn root() -> Result<PathBuf> {
    for candidate in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(candidate).join("events").is_dir() {
            return Ok(candidate.into());
        }
    }
    bail!("tracefs is not mounted (at {TRACEFS} or {DEBUGFS_TRACING})")
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
mod tests;
