//! The kernel's own per-program run time and run count (`kernel.bpf_stats_enabled`),
//! switched on for the benchmark and restored afterwards, even on error or panic (see
//! `proclens_xtask::bpf_stats`).

use std::process::Command;

use anyhow::{Context as _, Result};

pub use proclens_xtask::bpf_stats::BpfStats;

/// Numeric fields of a program's `bpftool prog show` (0 when absent).
fn prog_fields<const N: usize>(id: u64, names: [&str; N]) -> Result<[u64; N]> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show", "id", &id.to_string()])
        .output()
        .context("running bpftool")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(names.map(|name| {
        text.split(&format!("\"{name}\":"))
            .nth(1)
            .map(|r| {
                r.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|d| d.parse().ok())
            .unwrap_or(0)
    }))
}

/// (`run_time_ns`, `run_cnt`) of a program, from bpftool.
pub fn prog_stats(id: u64) -> Result<(u64, u64)> {
    let [t, n] = prog_fields(id, ["run_time_ns", "run_cnt"])?;
    Ok((t, n))
}

/// A program's instructions as verified (what runs: the verifier removes dead code).
pub fn xlated_insns(id: u64) -> Result<u64> {
    Ok(prog_fields(id, ["bytes_xlated"])?[0] / 8)
}

/// The id of the program named `name` among `ids`. bpftool shows the name BTF gives a
/// program (its function's, in full: proclens's programs) or else the kernel's copy, which
/// keeps 15 characters (bpftrace's): either matches.
pub fn find_named(ids: &[u64], name: &str) -> Option<u64> {
    let full = format!("\"name\":\"{name}\"");
    let short = format!("\"name\":\"{}\"", &name[..name.len().min(15)]);
    ids.iter().copied().find(|id| {
        Command::new("bpftool")
            .args(["-j", "prog", "show", "id", &id.to_string()])
            .output()
            .ok()
            .is_some_and(|o| {
                let text = String::from_utf8_lossy(&o.stdout);
                text.contains(&full) || text.contains(&short)
            })
    })
}

/// The id of the program among `ids` attached to tracepoint `tp` (`call_function_single_entry`):
/// through a link (BTF and raw tracepoints: `bpftool link show`'s `tp_name`) or a perf event
/// (classic tracepoints, bpftrace's: `bpftool perf show`'s `tracepoint`). Unlike a name,
/// which the kernel may cut to 15 characters (`call_function_s` for both the entry and the
/// exit), the attach point tells every program apart. Falls back to the name where bpftool
/// shows neither.
pub fn find_attached(ids: &[u64], tp: &str) -> Option<u64> {
    let listed = |what: &str, field: &str| -> Option<u64> {
        let out = Command::new("bpftool")
            .args(["-j", what, "show"])
            .output()
            .ok()?;
        let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
        all.iter()
            .filter(|v| v[field] == tp)
            .filter_map(|v| v["prog_id"].as_u64())
            .find(|id| ids.contains(id))
    };
    listed("link", "tp_name")
        .or_else(|| listed("perf", "tracepoint"))
        .or_else(|| find_named(ids, tp))
}
