//! Pure aggregation: no I/O, no BPF. Unit-tested from plain values.

pub mod histogram;
pub mod proctable;
pub mod rates;
pub mod switches;
