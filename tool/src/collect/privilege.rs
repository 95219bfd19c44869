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

/// Loading and attaching tracing programs needs `CAP_BPF` + `CAP_PERFMON` (or
/// `CAP_SYS_ADMIN`).
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

/// Drops every capability of this thread (effective, permitted, inheritable, ambient)
/// except `keep`. Capabilities are per thread: call this before any other thread exists,
/// so every thread proclens starts later inherits the reduced set.
pub fn drop_all_but(keep: &[caps::Capability]) -> Result<()> {
    use caps::CapSet;
    caps::clear(None, CapSet::Ambient).context("clearing ambient capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("clearing inheritable capabilities")?;
    let kept: caps::CapsHashSet = keep.iter().copied().collect();
    caps::set(None, CapSet::Effective, &kept).context("dropping effective capabilities")?;
    caps::set(None, CapSet::Permitted, &kept).context("dropping permitted capabilities")?;
    Ok(())
}

/// The capabilities this thread may still raise (its permitted set).
pub fn permitted() -> Result<caps::CapsHashSet> {
    caps::read(None, caps::CapSet::Permitted).context("reading the permitted capabilities")
}

/// `wanted`, less what is not permitted: asking to keep a capability proclens was never
/// given fails, and a least-privilege start (`CAP_BPF` and `CAP_PERFMON` only, not root)
/// must not exit for want of one it does not need.
pub fn keepable(
    wanted: &[caps::Capability],
    permitted: &caps::CapsHashSet,
) -> Vec<caps::Capability> {
    let mut v: Vec<caps::Capability> = wanted
        .iter()
        .copied()
        .filter(|c| permitted.contains(c))
        .collect();
    v.sort_unstable_by_key(caps::Capability::index);
    v.dedup();
    v
}

/// Whether a process holding only `keep` can still read a map through a file descriptor
/// it already holds. Probed for real: a forked child drops everything else and tries
/// `read`. With nothing kept, 6.1+ says yes; 5.10 checks privileges on every `bpf()` call
/// (`CAP_BPF`, or `CAP_SYS_ADMIN` before 5.8, satisfies the check).
pub fn reads_work_with(keep: &[caps::Capability], read: impl FnOnce() -> bool) -> bool {
    // SAFETY: the process is single-threaded here (checked by the caller's contract); the
    // child only drops capabilities, reads one map and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return false;
    }
    if pid == 0 {
        let ok = drop_all_but(keep).is_ok() && read();
        unsafe { libc::_exit(i32::from(!ok)) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid, &raw mut status, 0) };
    r == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// What map reads need on a kernel where they do not survive dropping everything: the first
/// of `CAP_BPF` (5.8+) or `CAP_SYS_ADMIN` that is permitted and lets the probe read, else
/// every one of `CAP_BPF`, `CAP_PERFMON` and `CAP_SYS_ADMIN` that is permitted (the reads
/// will then say what fails).
pub fn map_read_caps(
    permitted: &caps::CapsHashSet,
    read: impl Fn() -> bool,
) -> Vec<caps::Capability> {
    use caps::Capability::{CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN};
    for c in [CAP_BPF, CAP_SYS_ADMIN] {
        if permitted.contains(&c) && reads_work_with(&[c], &read) {
            return vec![c];
        }
    }
    keepable(&[CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN], permitted)
}

/// The note proclens prints when it keeps `caps` for its map reads.
pub fn keeps_note(caps: &[caps::Capability]) -> String {
    let names: Vec<String> = caps.iter().map(ToString::to_string).collect();
    format!(
        "proclens: note: this kernel checks privileges on every map read; keeping {}",
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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

    #[test]
    fn only_permitted_capabilities_are_kept() {
        use caps::Capability::{CAP_BPF, CAP_DAC_OVERRIDE, CAP_PERFMON, CAP_SYS_ADMIN};
        let granted: caps::CapsHashSet = [CAP_BPF, CAP_PERFMON].into_iter().collect();
        assert_eq!(
            keepable(
                &[CAP_SYS_ADMIN, CAP_BPF, CAP_DAC_OVERRIDE, CAP_BPF],
                &granted
            ),
            [CAP_BPF]
        );
        assert_eq!(
            keeps_note(&[CAP_BPF]),
            "proclens: note: this kernel checks privileges on every map read; keeping CAP_BPF"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary text is parsed or rejected, never a panic; a value comes from a
        /// `CapEff:` line.
        #[test]
        fn proptest_arbitrary_status_text(text in any::<String>()) {
            if parse_cap_eff(&text).is_some() {
                prop_assert!(text.lines().any(|l| l.starts_with("CapEff:")));
            }
        }

        /// The CapEff mask of a status text, wherever its line is among the others, is
        /// read back exactly.
        #[test]
        #[allow(
            clippy::format_collect,
            reason = "builds one test input per case: plain map-and-collect reads best"
        )]
        fn proptest_cap_eff_round_trips(
            caps in any::<u64>(),
            before in prop::collection::vec("(Name|CapInh|CapPrm|CapBnd|Threads):\t[0-9a-f ]{0,20}", 0..8),
            after in prop::collection::vec("[A-Za-z_]{1,12}:\t[ -~]{0,30}", 0..8),
        ) {
            let text = format!(
                "{}CapEff:\t{caps:016x}\n{}",
                before.iter().map(|l| format!("{l}\n")).collect::<String>(),
                after.iter().map(|l| format!("{l}\n")).collect::<String>(),
            );
            prop_assert_eq!(parse_cap_eff(&text), Some(caps));
        }
    }
}
