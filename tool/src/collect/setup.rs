//! What every concern's kernel set-up has in common: a fixed life (resolve what the running
//! kernel looks like, configure the load-time globals, attach, hand over the maps), the
//! way programs are attached, and what a failed load means, decided on the error's kind.

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::Map,
    programs::{BtfTracePoint, Iter, Program, ProgramError, RawTracePoint, TracePoint},
};

use super::{globals::Globals, object::Object};
use crate::error::Fatal;

/// One concern's kernel set-up, resolved from the running kernel before loading (its
/// `resolve` constructor), then run by [`super::tracer::Tracer::start`] in this order.
/// Its maps are taken by a concern-specific `take` afterwards.
pub trait Setup {
    /// Writes this concern's part of the load-time globals and sizes its maps.
    fn configure<'a>(&'a self, globals: &mut Globals, loader: &mut EbpfLoader<'a>);
    /// The programs this concern attaches to BTF tracepoints, as (program, tracepoint),
    /// in the order it attaches them: loaded for every concern at once, in parallel,
    /// before the first is attached (see [`load_all`]).
    fn btf_tracepoints(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// The iterator programs this concern loads, as (program, target), loaded with the
    /// tracepoints when they can be (a failure is left for the concern to meet again).
    fn iterators(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }
    /// Attaches this concern's programs (loading those not loaded yet), and runs what
    /// must follow.
    fn attach(&self, obj: &mut Object, kernel: &aya::Btf) -> Result<()>;
}

/// Loads every set-up's BTF tracepoint and iterator programs, spread over as many threads
/// as there are CPUs: the verifier is most of a start-up (~300 ms of CPU for `run`'s
/// programs on 6.18), and it checks one program per thread. A tracepoint that fails to
/// load is an error; an iterator is left unloaded (its concern loads it again and says
/// what it does without it).
pub fn load_all(ebpf: &mut Ebpf, setups: &[&dyn Setup], kernel: &aya::Btf) -> Result<()> {
    let tracepoints: Vec<(String, String)> =
        setups.iter().flat_map(|s| s.btf_tracepoints()).collect();
    let iterators: Vec<(&str, &str)> = setups.iter().flat_map(|s| s.iterators()).collect();
    let queue: Vec<(&str, &mut Program)> = ebpf
        .programs_mut()
        .filter(|(name, _)| {
            tracepoints.iter().any(|(p, _)| p == name) || iterators.iter().any(|(p, _)| p == name)
        })
        .collect();
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(queue.len());
    let queue = std::sync::Mutex::new(queue);
    let work = || -> Result<()> {
        loop {
            let Some((name, prog)) = queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop()
            else {
                return Ok(());
            };
            if let Some((_, tracepoint)) = tracepoints.iter().find(|(p, _)| p == name) {
                let prog: &mut BtfTracePoint = prog.try_into()?;
                prog.load(tracepoint, kernel).map_err(|e| {
                    load_error(
                        &anyhow::Error::new(e)
                            .context(format!("loading tp_btf/{tracepoint} ({name})")),
                    )
                })?;
            } else if let Some((_, target)) = iterators.iter().find(|(p, _)| *p == name)
                && let Ok(prog) = <&mut Iter>::try_from(prog)
            {
                let _ = prog.load(target, kernel);
            }
        }
    };
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..workers)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("proclens-load".into())
                    .spawn_scoped(s, work)
                    .ok()
            })
            .collect();
        let mine = work();
        helpers
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a loading thread panicked")))
            })
            .chain(std::iter::once(mine))
            .collect::<Result<()>>()
    })
}

/// Loads iterator `prog` for `target` unless [`load_all`] has.
pub fn load_iter(prog: &mut Iter, target: &str, kernel: &aya::Btf) -> Result<(), ProgramError> {
    if prog.fd().is_ok() {
        return Ok(());
    }
    prog.load(target, kernel)
}

/// Attaches each of `planned` (program, tracepoint) in its order.
pub fn attach_btf_tracepoints(
    ebpf: &mut Ebpf,
    planned: &[(String, String)],
    kernel: &aya::Btf,
) -> Result<()> {
    for (name, tracepoint) in planned {
        attach_btf_tracepoint_as(ebpf, name, tracepoint, kernel)?;
    }
    Ok(())
}

/// Loads the program `name` and attaches it to the BTF tracepoint `tracepoint` (a second
/// program on a tracepoint another concern also uses).
pub fn attach_btf_tracepoint_as(
    ebpf: &mut Ebpf,
    name: &str,
    tracepoint: &str,
    kernel: &aya::Btf,
) -> Result<()> {
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the BPF object"))?
        .try_into()?;
    let what = if name == tracepoint {
        format!("tp_btf/{name}")
    } else {
        format!("tp_btf/{tracepoint} ({name})")
    };
    // Loaded already when it was planned (`load_all`).
    if prog.fd().is_err() {
        prog.load(tracepoint, kernel)
            .map_err(|e| load_error(&anyhow::Error::new(e).context(format!("loading {what}"))))?;
    }
    prog.attach().with_context(|| format!("attaching {what}"))?;
    Ok(())
}

/// Loads the program `name` and attaches it to the raw tracepoint `tracepoint`.
pub fn attach_raw_tracepoint(ebpf: &mut Ebpf, name: &str, tracepoint: &str) -> Result<()> {
    let prog: &mut RawTracePoint = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the BPF object"))?
        .try_into()?;
    prog.load()
        .map_err(|e| load_error(&anyhow::Error::new(e).context(format!("loading {name}"))))?;
    prog.attach(tracepoint)
        .with_context(|| format!("attaching {name} to raw tracepoint {tracepoint}"))?;
    Ok(())
}

/// Loads the classic tracepoint program `name` and attaches it to `category/<each of
/// tracepoints>`. The links are taken and kept by the object, so they are detached in
/// parallel (see `Object`).
pub fn attach_tracepoints(
    obj: &mut Object,
    name: &str,
    category: &str,
    tracepoints: &[String],
) -> Result<()> {
    let prog: &mut TracePoint = obj
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the BPF object"))?
        .try_into()?;
    prog.load().with_context(|| format!("loading {name}"))?;
    let mut links = Vec::new();
    for tp in tracepoints {
        let id = prog
            .attach(category, tp)
            .with_context(|| format!("attaching {name} to {category}/{tp}"))?;
        links.push(prog.take_link(id)?);
    }
    for link in links {
        obj.keep(link);
    }
    Ok(())
}

/// Takes the map `name` out of the object.
pub fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<Map> {
    ebpf.take_map(name)
        .with_context(|| format!("map {name} missing from the BPF object"))
}

/// Whether the program `name` (a probe of the object, never attached) passes the
/// verifier: the kernel's answer to "may these programs call this helper?". A refusal
/// by the verifier is `false`; any other failure (privileges) is an error.
pub fn verifier_accepts(ebpf: &mut Ebpf, name: &str) -> Result<bool> {
    let prog: &mut RawTracePoint = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the BPF object"))?
        .try_into()?;
    match prog.load() {
        // Unloaded again: it has answered, and it never runs.
        Ok(()) => Ok(prog.unload().is_ok()),
        Err(ProgramError::LoadError { io_error, .. }) if !is_privilege(&io_error) => Ok(false),
        Err(e) => Err(load_error(
            &anyhow::Error::new(e).context(format!("loading the probe {name}")),
        )),
    }
}

fn is_privilege(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

/// Maps a load failure to its cause, by the errno the kernel returned (found among the
/// error's sources): EPERM or EACCES is a privilege problem (exit code 3); anything else
/// is a kernel that cannot run the programs (exit code 5).
pub fn load_error(err: &anyhow::Error) -> anyhow::Error {
    let privilege = err
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(is_privilege);
    let text = format!("{err:#}");
    if privilege {
        return Fatal::Privilege(format!(
            "the kernel refused to load the BPF programs: {text}"
        ))
        .into();
    }
    Fatal::KernelUnsupported(format!(
        "the kernel could not load proclens's BPF programs: {text}"
    ))
    .into()
}

/// Loads the object with every set-up's globals and configuration; `loader` is a fresh
/// [`EbpfLoader::new`] (which parses the kernel's BTF: made beforehand on another
/// thread, see [`Tracer::start`](super::tracer::Tracer::start)).
pub fn load(loader: EbpfLoader<'static>, object: &[u8], setups: &[&dyn Setup]) -> Result<Object> {
    let mut loader: EbpfLoader<'_> = loader;
    let mut globals = Globals::default();
    for s in setups {
        s.configure(&mut globals, &mut loader);
    }
    globals.apply(&mut loader);
    let ebpf = loader
        .load(object)
        .map_err(|e| load_error(&anyhow::Error::new(e)))?;
    Ok(Object::new(ebpf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_error_is_classified_by_its_errno() {
        let load = |errno| {
            let e = ProgramError::SyscallError(aya::sys::SyscallError {
                call: "bpf_prog_load",
                io_error: std::io::Error::from_raw_os_error(errno),
            });
            crate::error::exit_code(&load_error(&anyhow::Error::new(e).context("loading x")))
        };
        assert_eq!(load(libc::EPERM), std::process::ExitCode::from(3));
        assert_eq!(load(libc::EACCES), std::process::ExitCode::from(3));
        assert_eq!(load(libc::EINVAL), std::process::ExitCode::from(5));
        // Text that merely mentions a permission is not a privilege error.
        let text = anyhow::anyhow!("Operation not permitted, says the log");
        assert_eq!(
            crate::error::exit_code(&load_error(&text)),
            std::process::ExitCode::from(5)
        );
    }
}
