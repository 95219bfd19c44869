//! Pure aggregation: no I/O, no BPF. Unit-tested from plain values.

pub mod exporter;
pub mod copies;
pub mod copy_report;
pub mod histogram;
pub mod rates;
pub mod run_report;
pub mod switches;
pub mod syscalls;
