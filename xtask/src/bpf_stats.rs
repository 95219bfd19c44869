//! The kernel's own per-program run time and run count (`kernel.bpf_stats_enabled`): on
//! while a [`BpfStats`] lives, then as it was, even on error or panic. For the benchmarks
//! and for the tests that bound a tool's own cost with it.

use std::fs;

use anyhow::{Context as _, Result};

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

pub struct BpfStats {
    previous: String,
}

impl BpfStats {
    pub fn enable() -> Result<Self> {
        let previous = fs::read_to_string(SYSCTL).with_context(|| format!("reading {SYSCTL}"))?;
        fs::write(SYSCTL, "1").with_context(|| format!("enabling {SYSCTL} (needs root)"))?;
        Ok(Self {
            previous: previous.trim().to_string(),
        })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(SYSCTL, &self.previous);
    }
}
