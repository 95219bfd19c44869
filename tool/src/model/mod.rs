//! Pure aggregation: no I/O, no BPF. Unit-tested from plain values.

pub mod attribution;
pub mod copies;
pub mod copy_report;
pub mod event;
pub mod exit_status;
pub mod exporter;
pub mod fdtables;
pub mod forks;
pub mod histogram;
pub mod irq;
pub mod open_period;
pub mod parent_info;
pub mod proctable;
pub mod rates;
pub mod run_blocked;
pub mod run_report;
pub mod run_sections;
pub mod run_totals;
pub mod selection;
pub mod spare;
pub mod switches;
pub mod syscalls;
pub mod waits;
