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

/// The userspace logger behind `--log-level`/`RUST_LOG`, which also prints the BPF
/// programs' records (aya-log): `proclens: LEVEL: TARGET: message`, one line each.
fn init_logging(level: Option<log::LevelFilter>) {
    use std::io::Write as _;
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off"));
    if let Some(l) = level {
        // proclens's own lines and its programs' (whose records carry the BPF crate's
        // module path, `proclens::…`); the libraries only warn (RUST_LOG opens them up).
        b.filter_level(l.min(log::LevelFilter::Warn))
            .filter_module("proclens", l);
    }
    b.format(|buf, r| {
        writeln!(
            buf,
            "proclens: {}: {}: {}",
            r.level().as_str().to_ascii_lowercase(),
            r.target(),
            r.args()
        )
    });
    // Only fails when a logger is already set, which nothing else does.
    let _ = b.try_init();
}

fn main() -> ExitCode {
    // One heap for every thread: the ring reader allocates the events the views' thread
    // frees, and a second arena kept what a fork storm left in it (7.5 MiB after a 30 s
    // storm, which malloc_trim did not give back).
    // SAFETY: mallopt before any thread starts.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    init_logging(cli.log_level);
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
