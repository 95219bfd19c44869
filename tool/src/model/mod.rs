//! Pure aggregation: no I/O, no BPF. Unit-tested from plain values.

pub mod exporter;
pub mod histogram;
pub mod rates;
pub mod run_report;
pub mod switches;
