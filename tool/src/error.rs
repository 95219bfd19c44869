//! Exit codes and the errors that map to them.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success (for `run`: the command's own exit code) |
//! | 1 | any other runtime error |
//! | 2 | bad command-line arguments |
//! | 3 | not privileged enough (needs root, or CAP_BPF + CAP_PERFMON) |
//! | 4 | no such process (or cgroup) |
//! | 5 | the kernel lacks something proclens needs (BTF, a tracepoint, ring buffer) |
//! | 7 | proclens is not in the initial pid namespace (the kernel's pids are not /proc's) |

use std::process::ExitCode;

/// Errors with their own exit code. Anything else is exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    #[error("{0}")]
    Privilege(String),
    #[error("no such process: {0}")]
    NoSuchProcess(u32),
    #[error("{0}")]
    KernelUnsupported(String),
    #[error("no such cgroup: {0}")]
    NoSuchCgroup(String),
    #[error("{0}")]
    PidNamespace(String),
}

impl Fatal {
    pub fn exit_code(&self) -> u8 {
        match self {
            Fatal::Privilege(_) => 3,
            Fatal::NoSuchProcess(_) | Fatal::NoSuchCgroup(_) => 4,
            Fatal::KernelUnsupported(_) => 5,
            Fatal::PidNamespace(_) => 7,
        }
    }
}

/// The exit code for an error chain: the first [`Fatal`] in it decides, else 1.
pub fn exit_code(err: &anyhow::Error) -> ExitCode {
    let code = err
        .downcast_ref::<Fatal>()
        .or_else(|| err.chain().find_map(|e| e.downcast_ref::<Fatal>()))
        .map_or(1, Fatal::exit_code);
    ExitCode::from(code)
}

/// Documented in `--help` (one place, shown by help, man page and README).
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (`run`: the command's own exit code)
  1  runtime error
  2  bad arguments
  3  not privileged: run as root, or grant CAP_BPF and CAP_PERFMON
  4  no such process (-p) or cgroup (--cgroup)
  5  kernel lacks a needed feature (BTF, tracepoint, ring buffer)
  7  not in the host's pid namespace: run with the host's (--pid host, hostPID)";
