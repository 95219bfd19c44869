//! After fork: copy-on-write faults, the fork-family calls' time, the fds that cross exec
//! and what fd tables share. What the running kernel offers is resolved part by part
//! ([`layout`]); the programs are attached and their maps read and pruned ([`maps`]); the
//! fd tables come from the task-file iterator or /proc ([`fdtables`]); [`collector`]
//! turns it all into one report's figures.

mod collector;
pub mod fdtables;
mod layout;
mod maps;
mod setup;

pub use collector::{AfterFork, ForksCollector};
pub use fdtables::{FdSource, FdTables};
pub use layout::Timing as ForkTiming;
pub use maps::ForksMaps;
pub use setup::{Available, ForksSetup};
