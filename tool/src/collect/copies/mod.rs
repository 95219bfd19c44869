//! Copy paths and syscall counts: their layouts resolved from the running kernel
//! ([`layout`]), the programs attached and their per-CPU maps read and pruned ([`maps`]).

mod batch;
mod layout;
pub(crate) mod maps;
mod setup;

#[cfg(test)]
pub use layout::FdOffsets;
pub use maps::CopyMaps;
pub use setup::{CopySetup, Want};
