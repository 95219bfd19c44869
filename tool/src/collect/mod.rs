//! Everything that talks to the kernel: privileges, tracefs, BTF, loading and attaching the
//! eBPF programs, and reading their maps and ring buffer. Data flows one way:
//! kernel → collect → model → render.

pub mod btf;
pub mod cgroup;
pub mod copies;
pub mod events;
pub mod extras;
pub mod lifecycle;
pub mod object;
pub mod privilege;
pub mod procfs;
pub mod rings;
pub mod session;
pub mod thread_slots;
pub mod tracefs;
pub mod tracer;
