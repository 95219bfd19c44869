//! Copy paths and syscall counts: their layouts resolved from the running kernel
//! ([`layout`]), the programs attached and their per-CPU maps read and pruned ([`maps`]).

mod layout;
mod maps;

pub use layout::CopyConfig;
#[cfg(test)]
pub use layout::FdOffsets;
pub use maps::{CopyMaps, attach_copies, attach_syscalls, gone_processes, size_maps};
