//! Pure aggregation: no I/O, no BPF. Unit-tested from plain values.

pub mod copies;
pub mod copy_report;
pub mod event;
pub mod exit_status;
pub mod exporter;
pub mod histogram;
pub mod irq;
pub mod proctable;
pub mod rates;
pub mod run_report;
pub mod run_sections;
pub mod selection;
pub mod switches;
pub mod syscalls;
