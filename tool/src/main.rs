//! proclens: what your processes pay the kernel, traced with eBPF.

mod cli;
mod collect;
mod error;
mod model;
mod render;

use std::{io::ErrorKind, process::ExitCode};

use clap::{Parser as _, error::ErrorKind as ClapKind};

/// Help and version go to stdout with exit 0; an argument error is one line on stderr
/// and exit code 2.
fn usage_error(e: &clap::Error) -> ExitCode {
    if matches!(
        e.kind(),
        ClapKind::DisplayHelp
            | ClapKind::DisplayVersion
            | ClapKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ClapKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let text = e.render().to_string();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("bad arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("proclens: {first} (see --help)");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
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
