//! Build support shared by `cargo xtask`, `tool/build.rs` and the image test.
pub mod bpf_stats;
pub mod ebpf_build;
pub mod idle;
pub mod image;
pub mod ldd;
pub mod toolchain;
