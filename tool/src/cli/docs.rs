//! Shell completions and the man page, generated from the clap definitions so every flag
//! is documented once.

use std::{io::Write as _, process::ExitCode};

use anyhow::Result;
use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

use super::Cli;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to generate completions for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn completions(args: &CompletionsArgs) -> ExitCode {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "proclens", &mut std::io::stdout());
    ExitCode::SUCCESS
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// A subcommand's page (`proclens-top(1)`) instead of the main one.
    pub subcommand: Option<String>,
}

/// The man page (roff) on stdout: `proclens man > proclens.1`, `proclens man top`.
pub fn man(args: &ManArgs) -> Result<ExitCode> {
    let root = Cli::command();
    let cmd = match &args.subcommand {
        None => root,
        Some(name) => root
            .find_subcommand(name)
            .cloned()
            .map(|c| {
                let full = format!("proclens-{name}");
                c.name(full)
            })
            .ok_or_else(|| anyhow::anyhow!("no subcommand `{name}`"))?,
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    std::io::stdout().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_documents_every_subcommand_and_the_exit_codes() {
        let mut out = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut out)
            .unwrap();
        let page = String::from_utf8(out).unwrap();
        assert!(
            page.starts_with(".ie") || page.contains(".TH proclens"),
            "{}",
            &page[..200.min(page.len())]
        );
        for sub in ["top", "run", "latency"] {
            assert!(page.contains(sub), "man page lacks {sub}");
        }
        assert!(page.contains("Exit codes"));
    }

    #[test]
    fn completions_name_the_subcommands() {
        let mut cmd = Cli::command();
        let mut out = Vec::new();
        clap_complete::generate(Shell::Bash, &mut cmd, "proclens", &mut out);
        let script = String::from_utf8(out).unwrap();
        for sub in ["top", "run", "latency", "--interval", "--cgroup"] {
            assert!(script.contains(sub), "bash completion lacks {sub}");
        }
    }
}
