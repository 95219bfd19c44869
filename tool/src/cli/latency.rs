//! `proclens latency`: run-queue latency histograms (time from wakeup, or preemption, to
//! running), like bcc's runqlat, every interval.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::ViewArgs;
use crate::{
    collect::{
        extras::ExtrasOptions,
        session::{self, idle_rows},
        tracer::TracerOptions,
    },
    model::histogram::Hist,
    render::latency,
};

#[derive(Args, Debug)]
pub struct LatencyArgs {
    #[command(flatten)]
    pub view: ViewArgs,
    /// One histogram per process instead of one for all selected tasks.
    #[arg(short = 'P', long)]
    pub per_process: bool,
}

pub fn run(args: &LatencyArgs) -> Result<ExitCode> {
    let tracer = args.view.filter.start(TracerOptions::default())?;
    let selection = args.view.filter.selection();
    let mut stdout = std::io::stdout().lock();
    session::run_periodic(
        tracer,
        session::RowKinds::Processes,
        ExtrasOptions::default(),
        args.view.period.interval,
        args.view.period.count,
        |snap| {
            let rows: Vec<_> = snap
                .rows
                .iter()
                .filter(|(r, c)| selection.matches(r.key.tgid, c))
                .collect();
            let mut lines = Vec::new();
            if args.per_process {
                // Processes with waits in the interval; with -p, every requested process.
                let mut hists: Vec<(u32, &str, Hist, u64)> = rows
                    .iter()
                    .filter(|(r, _)| {
                        !args.view.filter.pids.is_empty()
                            || r.delta.runq_hist.iter().any(|&n| n > 0)
                            || r.delta.runq_ns > 0
                    })
                    .map(|(r, c)| (r.key.tgid, c.as_str(), r.delta.runq_hist, r.delta.runq_ns))
                    .collect();
                let missing = idle_rows(
                    args.view
                        .filter
                        .pids
                        .iter()
                        .filter(|p| !hists.iter().any(|(pid, ..)| pid == *p)),
                    &[],
                );
                hists.extend(
                    missing
                        .iter()
                        .map(|(r, c)| (r.key.tgid, c.as_str(), Hist::default(), 0)),
                );
                for (pid, comm, h, runq_ns) in &hists {
                    lines.extend(if args.view.output.json {
                        vec![latency::json(
                            snap.unix_time,
                            snap.elapsed_s,
                            Some(*pid),
                            Some(comm),
                            h,
                            *runq_ns,
                        )]
                    } else {
                        latency::plain(&format!("{} pid {pid} ({comm})", snap.clock), h)
                    });
                }
            } else {
                let mut all: Hist = Default::default();
                let mut runq_ns = 0;
                for (r, _) in &rows {
                    for (a, b) in all.iter_mut().zip(r.delta.runq_hist.iter()) {
                        *a += b;
                    }
                    runq_ns += r.delta.runq_ns;
                }
                lines = if args.view.output.json {
                    vec![latency::json(
                        snap.unix_time,
                        snap.elapsed_s,
                        None,
                        None,
                        &all,
                        runq_ns,
                    )]
                } else {
                    latency::plain(&format!("{} run-queue latency", snap.clock), &all)
                };
            }
            super::write_report(&mut stdout, &lines, args.view.output.json)?;
            Ok(())
        },
    )?;
    Ok(ExitCode::SUCCESS)
}
