//! proclens: what your processes pay the kernel, traced with eBPF.

mod cli;
mod collect;
mod error;
mod model;
mod render;

use std::{io::ErrorKind, process::ExitCode};

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // A closed stdout (`proclens top | head`) is how a pipe ends, not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("proclens: {e:#}");
            error::exit_code(&e)
        }
    }
}
