//! What the running process may do, read from /proc/self/status (`CapEff`).

use anyhow::{Context as _, Result};

use crate::error::Fatal;

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The effective capability set as a bit mask, parsed from a /proc status text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

pub fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

pub fn effective() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    parse_cap_eff(&status).context("no CapEff line in /proc/self/status")
}

/// Loading and attaching tracing programs needs CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN).
pub fn check_can_trace() -> Result<()> {
    let caps = effective()?;
    if has(caps, CAP_SYS_ADMIN) || (has(caps, CAP_BPF) && has(caps, CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(c, _)| !has(caps, *c))
        .map(|(_, n)| n)
        .collect();
    Err(Fatal::Privilege(format!(
        "not privileged: missing {} (run as root, e.g. with sudo, or grant CAP_BPF and CAP_PERFMON)",
        missing.join(" and ")
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cap_eff() {
        let root = "Name:\tbash\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let caps = parse_cap_eff(root).unwrap();
        assert!(has(caps, CAP_SYS_ADMIN) && has(caps, CAP_BPF) && has(caps, CAP_PERFMON));
        let user = "CapEff:\t0000000000000000\n";
        assert_eq!(parse_cap_eff(user), Some(0));
        let bpf_only = format!("CapEff:\t{:016x}\n", 1u64 << CAP_BPF);
        let caps = parse_cap_eff(&bpf_only).unwrap();
        assert!(has(caps, CAP_BPF) && !has(caps, CAP_PERFMON));
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
        assert_eq!(parse_cap_eff(""), None);
    }
}
