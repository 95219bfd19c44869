//! Everything that talks to the kernel: privileges, BTF, one set-up per concern
//! (load-time globals, programs, maps), the driver that reads the event rings, signals and
//! ticks for every view, and the /proc reads that complete the kernel's figures. Data flows
//! one way: kernel → collect → model → render.

pub mod btf;
pub mod cgroup;
pub mod command;
pub mod copies;
pub mod driver;
pub mod events;
pub mod extras;
pub mod filter;
pub mod forks;
pub mod globals;
pub mod gone;
pub mod irq;
pub mod life_session;
pub mod lifecycle;
pub mod log;
pub mod object;
pub mod parents;
pub mod percpu;
pub mod privilege;
pub mod procfs;
pub mod rings;
pub mod run;
pub mod session;
pub mod setup;
pub mod start;
pub mod switch;
pub mod tracefs;
pub mod tracer;
pub mod waits;
