//! The kernel side's diagnostics (aya-log): off by default, when the programs' log calls
//! are pruned by the verifier (their level is a load-time global) and cost nothing; on
//! with `--log-level` or `RUST_LOG`, when their records are read from the `AYA_LOGS` ring
//! and printed by the userspace logger (see `main`'s `init_logging`).

use anyhow::{Context as _, Result};
use aya::Ebpf;
use aya_log::EbpfLogger;

/// The programs' log records, read by the driver as they come.
pub struct KernelLog {
    logger: EbpfLogger<&'static dyn log::Log>,
}

/// The most verbose level the programs log: the userspace logger's (`log::max_level`,
/// set from `--log-level` or `RUST_LOG`); 0 when logging is off. aya-log numbers its
/// levels as the `log` crate does (error 1 … trace 5).
pub fn kernel_level() -> u8 {
    log::max_level() as usize as u8
}

impl KernelLog {
    /// Starts reading the programs' records when logging is on; `None` when it is off.
    pub fn attach(obj: &mut Ebpf) -> Result<Option<Self>> {
        if kernel_level() == 0 {
            return Ok(None);
        }
        let logger = EbpfLogger::init(obj).context("reading the BPF programs' log")?;
        Ok(Some(Self { logger }))
    }

    /// Prints the records that are waiting.
    pub fn flush(&mut self) {
        self.logger.flush();
    }
}

impl std::os::fd::AsRawFd for KernelLog {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.logger.as_raw_fd()
    }
}
