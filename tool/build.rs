//! Builds the eBPF programs (tool-ebpf) for bpfel-unknown-none and leaves the object in
//! `$OUT_DIR/proclens.bpf.o` for `include_bytes_aligned!`. The route (rustup nightly +
//! rust-src, or a distribution's prebuilt BPF core) is chosen by `proclens_xtask`.
fn main() {
    if let Err(e) = proclens_xtask::ebpf_build::build_script() {
        println!("cargo::error={e:#}");
        std::process::exit(1);
    }
}
