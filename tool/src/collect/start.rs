//! Starting a view's tracer: its arguments checked first (a missing pid or cgroup is
//! one line and its own exit code before anything is loaded), then the programs loaded and
//! attached, then every privilege loading needed dropped.

use std::path::Path;

use anyhow::Result;

use super::{
    cgroup, procfs,
    tracer::{Tracer, TracerOptions},
};

/// Checks `pids` and `cgroup`, starts a tracer with `opts` limited to that cgroup, reads
/// what only a privileged reader may (the start-up zombies, from the kernel; the `io_uring`
/// fds open when copies are accounted), and drops privileges but the capabilities `keep`
/// asks for once it sees the started tracer (what it reads later may depend on what the
/// kernel offered): from then on proclens only reads the fds it holds and what those
/// capabilities allow.
pub fn start_keeping(
    pids: &[u32],
    cgroup: Option<&Path>,
    opts: TracerOptions,
    keep: impl FnOnce(&Tracer) -> Vec<caps::Capability>,
) -> Result<Tracer> {
    procfs::check_pids(pids)?;
    let cgroup = cgroup.map(cgroup::check_exists).transpose()?;
    let copies = opts.copies != super::copies::Want::Off;
    let tracer = Tracer::start(&TracerOptions { cgroup, ..opts })?;
    super::lifecycle::remember_zombies(&tracer);
    if copies && tracer.copies_on() {
        procfs::remember_io_uring_holders();
    }
    tracer.drop_privileges(&keep(&tracer))?;
    Ok(tracer)
}
