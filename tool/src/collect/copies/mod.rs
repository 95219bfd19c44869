//! Copy paths and syscall counts: their layouts resolved from the running kernel
//! ([`layout`]), the programs attached and their per-CPU maps read and pruned ([`maps`]).

mod layout;
mod maps;
mod setup;

#[cfg(test)]
pub use layout::FdOffsets;
pub use maps::{CopyMaps, gone_processes};
pub(crate) use maps::{gone_keys, remove_where, summed};
pub use setup::{CopySetup, Want};
