//! The loaded BPF object, whose programs are all detached at once when it is dropped.
//!
//! Detaching a tracepoint link makes the kernel wait until no CPU can still be running its
//! program (an RCU grace period: ~70 ms on this VM) before the call returns. aya detaches
//! one program after another when the object is dropped, so every exit paid that wait per
//! link: `run` with copy accounting (~30 links) sat ~3 s after printing its report.
//! Detached from one thread per program, the waits overlap.

use std::ops::{Deref, DerefMut};

use aya::{Ebpf, programs::Program};

/// An [`Ebpf`] that detaches and unloads its programs in parallel on drop.
pub struct Object {
    ebpf: Ebpf,
    /// Links taken from their programs (a program attached to many tracepoints), each
    /// detached on its own thread.
    links: Vec<Box<dyn Send>>,
}

impl Object {
    pub fn new(ebpf: Ebpf) -> Self {
        Self {
            ebpf,
            links: Vec::new(),
        }
    }

    /// Keeps `link` (owned, taken from its program) until the object is dropped.
    pub fn keep(&mut self, link: impl Send + 'static) {
        self.links.push(Box::new(link));
    }
}

impl Deref for Object {
    type Target = Ebpf;
    fn deref(&self) -> &Ebpf {
        &self.ebpf
    }
}

impl DerefMut for Object {
    fn deref_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        let links = std::mem::take(&mut self.links);
        // A thread that cannot be started drops its closure: a link is then detached in
        // place, a program by `Ebpf`'s own drop.
        let detacher = || std::thread::Builder::new().name("proclens-detach".into());
        std::thread::scope(|s| {
            for link in links {
                let _ = detacher().spawn_scoped(s, move || drop(link));
            }
            for (_, prog) in self.ebpf.programs_mut() {
                let _ = detacher().spawn_scoped(s, move || unload(prog));
            }
        });
    }
}

/// Detaches the program's links and closes it (a program never loaded is left alone).
fn unload(prog: &mut Program) {
    let _ = match prog {
        Program::BtfTracePoint(p) => p.unload(),
        Program::TracePoint(p) => p.unload(),
        Program::RawTracePoint(p) => p.unload(),
        // The kinds proclens does not use: `Ebpf`'s drop handles them.
        _ => Ok(()),
    };
}
