//! `proclens zombies`: current zombies grouped by parent (default), a live stream of
//! zombie/reap/orphan events (`--watch`), or a health check (`--check`).

use std::{io::Write, process::ExitCode, time::Duration};

use anyhow::Result;
use clap::Args;

use super::Output;
use crate::{
    collect::{
        life_session::{Happened, LifeSession, Watched},
        session::clock_now,
    },
    render::zombies as render,
};

#[derive(Args, Debug)]
#[allow(
    clippy::doc_markdown,
    reason = "the doc comments are the --help text, printed as written"
)]
pub struct ZombiesArgs {
    /// A dead process counts as a zombie once its parent has left it unreaped this long
    /// (seconds, fractions allowed, >= 0). Without --watch, proclens answers at once: the
    /// kernel tells when the zombies older than proclens last ran, during which they died
    /// (a task iterator, Linux 5.8+ with sched_info). Where it cannot, their ages count
    /// from start-up and proclens observes for --min-age before it reports.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_min_age)]
    pub min_age: f64,
    /// Stream events until Ctrl-C: a zombie appeared (reached --min-age), a zombie was
    /// reaped (and after how long), an orphan was re-parented (and to whom), plus a stats
    /// line every --interval with fork statistics per parent and the lost-event count.
    #[arg(long, conflicts_with = "check")]
    pub watch: bool,
    /// Health check: print the zombies, then exit 0 when at most --max zombies at least
    /// --min-age old exist, 1 otherwise.
    #[arg(long)]
    pub check: bool,
    /// With --check: how many zombies are tolerated.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "check")]
    pub max: u64,
    /// With --watch: seconds between stats lines (> 0).
    #[arg(short = 'i', long, value_name = "SECS", default_value = "1", value_parser = super::parse_interval)]
    pub interval: f64,
    #[command(flatten)]
    pub output: Output,
}

fn parse_min_age(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("minimum age must be 0 seconds or more, got `{s}`"));
    }
    if v > 86_400.0 * 365.0 {
        return Err(format!("minimum age `{s}` is longer than a year"));
    }
    Ok(v)
}

pub fn run(args: &ZombiesArgs) -> Result<ExitCode> {
    let tracer = LifeSession::tracer()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let min_age = Duration::from_secs_f64(args.min_age);
    rt.block_on(async move {
        if args.watch {
            let interval = Duration::from_secs_f64(args.interval);
            let mut out = std::io::stdout().lock();
            LifeSession::watching(tracer, interval)?
                .watch(min_age, |w| print(&mut out, watched(args.output.json, &w)))
                .await?;
            return Ok(ExitCode::SUCCESS);
        }
        let mut session = LifeSession::start(tracer)?;
        let (zombies, ctx) = session.zombies(min_age).await?;
        let lost = session.lost()?;
        let (time, _) = clock_now();
        let lines = if args.output.json {
            render::snapshot_json(time, &zombies, &ctx, lost, args.min_age)
        } else {
            render::snapshot_plain(&zombies, &ctx, lost, args.min_age)
        };
        print(&mut std::io::stdout().lock(), lines)?;
        if args.check && zombies.len() as u64 > args.max {
            eprintln!(
                "proclens: {} zombies at least {}s old (at most {} allowed)",
                zombies.len(),
                args.min_age,
                args.max
            );
            return Ok(ExitCode::from(1));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Writes `lines`, if any, and flushes them.
fn print(out: &mut impl Write, lines: Vec<String>) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    for l in lines {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    Ok(())
}

/// `--watch`'s lines for what one poll or tick found: reaps, orphans, zombies that
/// appeared, then the statistics line at an interval's end.
fn watched(json: bool, w: &Watched) -> Vec<String> {
    let (time, clock) = clock_now();
    let lost = w.lost;
    let mut lines: Vec<String> = w
        .happened
        .iter()
        .map(|h| match h {
            Happened::Reaped {
                proc,
                parent_comm,
                dead_for_ns,
            } => render::reaped(json, time, &clock, proc, parent_comm, *dead_for_ns, lost),
            Happened::Orphan {
                pid,
                comm,
                old_ppid,
                old_parent_comm,
                new_ppid,
                new_parent_comm,
            } => {
                let o = render::Orphan {
                    pid: *pid,
                    comm,
                    old_ppid: *old_ppid,
                    old_parent_comm,
                    new_ppid: *new_ppid,
                    new_parent_comm,
                };
                render::orphan(json, time, &clock, &o, lost)
            }
            Happened::Appeared {
                zombie,
                parent_zombies,
            } => render::appeared(
                json,
                time,
                &clock,
                zombie,
                *parent_zombies,
                &w.context,
                lost,
            ),
        })
        .collect();
    if let Some(s) = &w.stats {
        let parents = s
            .parents
            .iter()
            .map(|p| render::ParentStats {
                pid: p.key.tgid,
                comm: &p.comm,
                total: p.total,
                delta: p.delta,
                children: p.children,
            })
            .collect();
        lines.extend(render::stats(
            json,
            &render::Stats {
                time,
                clock: &clock,
                interval_s: s.interval_s,
                lost,
                tracked: s.tracked,
                repairs: s.repairs,
                zombies: s.zombies,
                parents,
            },
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<super::ZombiesArgs, clap::Error> {
        let mut v = vec!["proclens", "zombies"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).map(|c| match c.command {
            Command::Zombies(z) => z,
            other => panic!("parsed as {other:?}"),
        })
    }

    #[test]
    fn defaults_and_flags() {
        let z = parse(&[]).unwrap();
        assert!((z.min_age - 1.0).abs() < f64::EPSILON);
        assert!(!z.watch && !z.check && z.max == 0 && !z.output.json);
        let z = parse(&["--check", "--max", "3", "--min-age", "0.5", "--json"]).unwrap();
        assert!(z.check && z.max == 3 && z.output.json && (z.min_age - 0.5).abs() < f64::EPSILON);
        assert!(parse(&["--min-age", "0"]).is_ok());
    }

    #[test]
    fn bad_arguments_are_rejected_with_2() {
        for bad in [
            &["--min-age", "-1"][..],
            &["--min-age", "nan"],
            &["--min-age", "abc"],
            &["--max", "2"],
            &["--watch", "--check"],
            &["--check", "--max", "-1"],
            &["--watch", "--interval", "0"],
        ] {
            let err = parse(bad)
                .err()
                .unwrap_or_else(|| panic!("accepted {bad:?}"));
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }
}
