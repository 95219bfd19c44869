//! Build support shared by `cargo xtask` and `tool/build.rs`.
pub mod ebpf_build;
pub mod toolchain;
