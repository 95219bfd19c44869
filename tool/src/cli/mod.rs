//! Command-line interface: one file per subcommand behind this dispatcher. Every flag is
//! documented once, in its doc comment, which feeds `--help`.

mod copies;
mod docs;
mod forks;
mod irq;
mod latency;
mod run;
mod serve;
mod top;
mod tui;
mod waits;
mod zombies;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::{
    collect::{
        copies::Want,
        extras::ExtrasOptions,
        lifecycle::LifecycleOptions,
        session::{self, RowKinds, Snapshot},
        tracer::{Tracer, TracerOptions},
    },
    error::EXIT_CODES_HELP,
};

#[derive(Parser, Debug)]
#[allow(
    clippy::doc_markdown,
    reason = "the doc comments are the --help text, printed as written"
)]
#[command(
    name = "proclens",
    version,
    about = "What your processes pay the kernel: context switches, process lifecycle and copy paths, traced with eBPF.",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Diagnostics on standard error at this level and above: off, error, warn, info,
    /// debug or trace (default: as RUST_LOG says, else off). At debug the BPF programs
    /// say what they could not record (a full map, a lost event, a stale entry); at off
    /// the verifier removes their log calls, which then cost nothing.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<log::LevelFilter>,
}

#[derive(Subcommand, Debug)]
#[allow(
    clippy::doc_markdown,
    reason = "the doc comments are the --help text, printed as written"
)]
pub enum Command {
    /// Per-process context switches every interval, like `pidstat -w` (cswch/s, nvcswch/s).
    #[command(after_long_help = top::FIGURES)]
    Top(top::TopArgs),
    /// Run-queue latency histograms (wakeup or preemption to running), like runqlat.
    Latency(latency::LatencyArgs),
    /// Hard IRQs and softirqs per CPU and per kind (count, time, durations), like
    /// hardirqs/softirqs, and the time they took from each process they interrupted.
    Irq(irq::IrqArgs),
    /// Run a command and report what it and all its descendants paid the kernel, from its
    /// first instruction to its exit (perf stat / strace -c style). Exits with its code.
    /// Everything is traced, as `copies` does, for the command's cgroup: its syscalls cost
    /// what `copies` says, and every other syscall on the machine enters the programs up
    /// to the cgroup check while it runs.
    Run(run::RunArgs),
    /// Per-process copy paths and mode switches: bytes/s by syscall and fd kinds (read/write
    /// through user space vs sendfile/splice/tee/copy_file_range inside the kernel),
    /// syscalls/s, zero-copy share, and what sendfile would save.
    Copies(copies::CopiesArgs),
    /// Prometheus/OpenMetrics exporter: serves /metrics (and /healthz) for a scraper.
    /// Counts every syscall per process, as `top --syscalls` does: every syscall of a
    /// traced process runs a program (a process writing and reading back one byte through
    /// a pipe took 1.35-1.58x as long per syscall on the machines measured; with --copies
    /// 2.1-2.5x: BENCHMARKS.md, exporter).
    Serve(serve::ServeArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(docs::CompletionsArgs),
    /// Print the man page (roff) on stdout.
    #[command(hide = true)]
    Man(docs::ManArgs),
    /// What forks cost after they return: copy-on-write faults in parents and children,
    /// time in fork/vfork/clone, the fds each exec inherits without close-on-exec, and
    /// which open file descriptions and fd tables processes share.
    Forks(forks::ForksArgs),
    /// Where processes block: per process, the syscalls its blocked time went to (epoll,
    /// poll, futex, read, nanosleep...), and what its select, poll and epoll calls cost
    /// (fds handed in and returned per call), like offcputime by syscall, all the time.
    Waits(waits::WaitsArgs),
    /// Zombie processes grouped by the parent that fails to reap them; `--watch` streams
    /// zombies, reaps and orphan re-parentings; `--check` is a health check for scripts.
    Zombies(zombies::ZombiesArgs),
}

/// The flags of every interval view (`top`, `latency`, `irq`, `copies`, `forks`): which
/// tasks, how often, in what form. Flattened, so `--help` lists them as the view's own.
#[derive(Args, Debug, Clone)]
pub struct ViewArgs {
    #[command(flatten)]
    pub filter: Filter,
    #[command(flatten)]
    pub period: Period,
    #[command(flatten)]
    pub output: Output,
}

/// Selecting processes; shared by the views. Every filter is compared in the kernel,
/// first thing in every syscall and switch program: a task filtered out runs those
/// programs only up to a compare or a lookup, and nothing reaches proclens about it
/// (lifecycle events are filtered by the cgroup only: the process table needs the
/// parents and children of the processes shown). The kernel still enters the programs:
/// with syscall programs attached, another process's syscall costs 30-170 ns on the
/// machines measured (BENCHMARKS.md, filters).
#[derive(Args, Debug, Clone, Default)]
pub struct Filter {
    /// Only this process (repeatable). proclens exits with code 4 if it does not exist.
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Only processes whose command name contains NAME (at most 15 bytes, as the kernel
    /// keeps names). A thread whose own name contains it is traced too.
    #[arg(long = "comm", value_name = "NAME", value_parser = parse_comm)]
    pub comm: Option<String>,
    /// Only tasks in this cgroup v2 (and below it): a path under the cgroup2 mount, or
    /// relative to it.
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroup: Option<std::path::PathBuf>,
    /// Include proclens's own threads.
    #[arg(long = "include-self")]
    pub include_self: bool,
    #[command(flatten)]
    pub table: ThreadTable,
}

/// The size of the kernel's thread table; shared by the views that trace switches.
#[derive(Args, Debug, Clone, Default)]
#[allow(
    clippy::doc_markdown,
    reason = "the doc comments are the --help text, printed as written"
)]
pub struct ThreadTable {
    /// Threads the kernel side can account at once (its thread table, preallocated at
    /// ~300 bytes a thread). Default: as many as this machine can run at once
    /// (kernel.threads-max, and no more than kernel.pid_max), at most 65536. A traced
    /// thread beyond it is counted once as an untracked thread instead (`untracked
    /// threads`), and is accounted nowhere. Views that trace no switches ignore it.
    #[arg(long = "max-threads", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_threads: Option<u32>,
}

fn parse_comm(s: &str) -> Result<String, String> {
    if s.len() > 15 {
        return Err(format!(
            "`{s}` is {} bytes; command names are at most 15, so it would match nothing",
            s.len()
        ));
    }
    Ok(s.to_string())
}

impl Filter {
    /// What the views select among the rows: `-p` and `--comm`.
    pub fn selection(&self) -> crate::model::selection::Selection {
        crate::model::selection::Selection {
            pids: self.pids.clone(),
            comm: self.comm.clone(),
        }
    }

    /// Checks the pids and cgroup, then starts the tracer with `opts` (its filters and
    /// `--include-self` taken from here) and drops privileges.
    pub fn start(&self, opts: TracerOptions) -> anyhow::Result<Tracer> {
        self.start_keeping(opts, |_| Vec::new())
    }

    /// [`Filter::start`], keeping the capabilities `keep` names for the started tracer.
    pub fn start_keeping(
        &self,
        opts: TracerOptions,
        keep: impl FnOnce(&Tracer) -> Vec<caps::Capability>,
    ) -> anyhow::Result<Tracer> {
        crate::collect::start::start_keeping(
            &self.pids,
            self.cgroup.as_deref(),
            TracerOptions {
                include_self: self.include_self,
                max_threads: self.table.max_threads,
                pids: self.pids.clone(),
                comm: self.comm.clone(),
                ..opts
            },
            keep,
        )
    }
}

/// Interval and count, shared by the periodic views.
#[derive(Args, Debug, Clone)]
pub struct Period {
    /// Seconds between reports (fractions allowed, from 0.01 to a year).
    #[arg(short = 'i', long, value_name = "SECS", default_value = "1", value_parser = parse_interval)]
    pub interval: f64,
    /// Stop after N reports (default: until Ctrl-C).
    #[arg(short = 'c', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

/// Output format, shared by all views.
#[derive(Args, Debug, Clone, Default)]
pub struct Output {
    /// One JSON object per line (NDJSON) instead of text; schemas in docs/guide.md.
    #[arg(long)]
    pub json: bool,
}

/// Writes one interval's report: its lines, then (in the plain format) a blank line to
/// part it from the next; flushed, so a pipe sees each report as it is made.
pub(crate) fn write_report(
    out: &mut impl std::io::Write,
    lines: &[String],
    json: bool,
) -> std::io::Result<()> {
    for l in lines {
        writeln!(out, "{l}")?;
    }
    if !json {
        writeln!(out)?;
    }
    out.flush()
}

/// What the process-table views, `top` (lines and live table) and `serve`, trace:
/// switches, the lifecycle (the zombies column), every syscall per process with
/// `--syscalls` (the syscalls/s column), and interrupts (the irq% column), the latter left
/// out with a warning where the kernel cannot time them.
pub(crate) fn table_tracing() -> TracerOptions {
    TracerOptions {
        syscalls: true,
        irq: Want::IfAvailable,
        ..TracerOptions::default()
    }
}

/// Their process table (`top`'s zombies column, serve's zombie gauges), its zombies
/// limited to `--cgroup`.
pub(crate) fn table_extras(filter: &Filter) -> ExtrasOptions {
    ExtrasOptions {
        lifecycle: Some(LifecycleOptions {
            exits_filtered: filter.cgroup.is_some(),
            ..LifecycleOptions::default()
        }),
        cgroup: filter.cgroup.clone(),
        ..ExtrasOptions::default()
    }
}

/// Where a line view writes its reports: stdout, as JSON lines or text.
pub(crate) struct Printer {
    out: std::io::StdoutLock<'static>,
    json: bool,
}

impl Printer {
    /// Writes one interval's report, as [`write_report`] does.
    pub(crate) fn print(&mut self, report: &impl crate::render::Report) -> anyhow::Result<()> {
        let lines = if self.json {
            report.json_lines()
        } else {
            report.plain_lines()
        };
        Ok(write_report(&mut self.out, &lines, self.json)?)
    }
}

/// The line views' run: every interval's snapshot handed to `on_tick` with the printer,
/// until `--count` reports or a signal.
pub(crate) fn print_periodic(
    tracer: Tracer,
    kinds: RowKinds,
    extras: ExtrasOptions,
    period: &Period,
    output: &Output,
    mut on_tick: impl FnMut(Snapshot, &mut Printer) -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    let mut printer = Printer {
        out: std::io::stdout().lock(),
        json: output.json,
    };
    session::run_periodic(
        tracer,
        kinds,
        extras,
        period.interval,
        period.count,
        |snap| on_tick(snap, &mut printer),
    )?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn parse_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!(
            "interval must be greater than 0 seconds, got `{s}`"
        ));
    }
    if v < 0.01 {
        return Err(format!("interval must be at least 0.01 seconds, got `{s}`"));
    }
    // A year at most: a timer of more would not fit the runtime's clock.
    if v > 365.0 * 86_400.0 {
        return Err(format!(
            "interval must be at most a year (31536000 seconds), got `{s}`"
        ));
    }
    Ok(v)
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Top(args) => top::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Latency(args) => latency::run(&args),
        Command::Irq(args) => irq::run(&args),
        Command::Serve(args) => serve::run(args),
        Command::Completions(args) => Ok(docs::completions(&args)),
        Command::Man(args) => docs::man(&args),
        Command::Copies(args) => copies::run(&args),
        Command::Waits(args) => waits::run(&args),
        Command::Zombies(args) => zombies::run(&args),
        Command::Forks(args) => forks::run(&args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn interval_must_be_positive() {
        for bad in ["0", "-1", "0.0", "nan", "inf", "abc", "0.001"] {
            assert!(
                Cli::try_parse_from(["proclens", "top", "--interval", bad]).is_err(),
                "{bad}"
            );
        }
        let ok = Cli::try_parse_from([
            "proclens", "top", "-i", "0.5", "-c", "3", "-p", "1", "-p", "2",
        ])
        .unwrap();
        let Command::Top(t) = ok.command else {
            panic!("not top")
        };
        assert!((t.view.period.interval - 0.5).abs() < f64::EPSILON);
        assert_eq!(t.view.period.count, Some(3));
        assert_eq!(t.view.filter.pids, vec![1, 2]);
    }

    #[test]
    fn count_zero_is_rejected() {
        assert!(Cli::try_parse_from(["proclens", "top", "--count", "0"]).is_err());
    }

    #[test]
    fn copies_arguments() {
        let ok = Cli::try_parse_from([
            "proclens",
            "copies",
            "-p",
            "7",
            "--interval",
            "0.5",
            "--count",
            "2",
            "--json",
            "--syscalls",
        ])
        .unwrap();
        let Command::Copies(c) = ok.command else {
            panic!("not copies")
        };
        assert_eq!(c.view.filter.pids, vec![7]);
        assert_eq!(c.view.period.count, Some(2));
        assert!(c.view.output.json);
        assert_eq!(c.syscalls, Some(10));
        let ok = Cli::try_parse_from(["proclens", "copies", "--syscalls", "3"]).unwrap();
        let Command::Copies(c) = ok.command else {
            panic!("not copies")
        };
        assert_eq!(c.syscalls, Some(3));
        assert_eq!(
            Cli::try_parse_from(["proclens", "copies"])
                .map(|c| matches!(c.command, Command::Copies(ref a) if a.syscalls.is_none()))
                .ok(),
            Some(true)
        );
        for bad in [
            &["proclens", "copies", "--syscalls", "0"][..],
            &["proclens", "copies", "-i", "0"],
            &["proclens", "copies", "-p", "x"],
        ] {
            let err = Cli::try_parse_from(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn argument_errors_exit_with_2() {
        let err = Cli::try_parse_from(["proclens", "top", "--interval", "-3"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
