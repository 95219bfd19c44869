//! `proclens irq`: hard IRQs and softirqs per CPU and per kind every interval, like
//! bcc's hardirqs and softirqs, and the processes they took the time from.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::ViewArgs;
use crate::{
    collect::{
        copies::Want,
        extras::ExtrasOptions,
        session::{RowKinds, Snapshot},
        tracer::TracerOptions,
    },
    model::{
        irq::{Taken, VictimRow},
        proctable::Key,
    },
    render::irq::Frame,
};

#[derive(Args, Debug)]
pub struct IrqArgs {
    /// `-p`, `--comm` select the victims shown; `--cgroup` charges (in the kernel) only the
    /// tasks inside it. The per-CPU and per-kind figures are the whole machine's.
    #[command(flatten)]
    pub view: ViewArgs,
    /// One row per CPU in the softirq and hard IRQ tables instead of their sums over the
    /// CPUs (the JSON lines are always per CPU).
    #[arg(short = 'P', long)]
    pub per_cpu: bool,
    /// Also print each softirq vector's and hard IRQ's histogram of handler durations
    /// (log2 buckets of ns; the JSON lines always carry them).
    #[arg(short = 'd', long)]
    pub dist: bool,
}

pub fn run(args: &IrqArgs) -> Result<ExitCode> {
    let tracer = args.view.filter.start(TracerOptions {
        switches: false,
        irq: Want::Required,
        ..TracerOptions::default()
    })?;
    super::print_periodic(
        tracer,
        RowKinds::Processes,
        ExtrasOptions::default(),
        &args.view.period,
        &args.view.output,
        |snap, out| {
            let Some(frame) = frame(args, &snap) else {
                anyhow::bail!("interrupts are not traced");
            };
            out.print(&frame)
        },
    )
}

fn frame<'a>(args: &IrqArgs, snap: &'a Snapshot) -> Option<Frame<'a>> {
    let irq = snap.irq.as_ref()?;
    let selection = args.view.filter.selection();
    let comm = |v: &VictimRow| irq.comms.get(&v.key).map_or("?", String::as_str);
    let mut victims: Vec<VictimRow> = irq
        .interval
        .victims
        .iter()
        .filter(|v| !v.delta.is_zero() || args.view.filter.pids.contains(&v.key.tgid))
        .filter(|v| selection.matches(v.key.tgid, comm(v)))
        .cloned()
        .collect();
    // A requested process that no interrupt has hit yet: a row of zeros.
    for &pid in &args.view.filter.pids {
        if !victims.iter().any(|v| v.key.tgid == pid) {
            victims.push(VictimRow {
                key: Key {
                    tgid: pid,
                    start_ns: 0,
                },
                kernel_comm: String::new(),
                delta: Taken::default(),
                total: Taken::default(),
            });
        }
    }
    Some(Frame {
        unix_time: snap.unix_time,
        clock: &snap.clock,
        elapsed_s: snap.elapsed_s,
        per_cpu: args.per_cpu,
        dist: args.dist,
        irq,
        victims,
        untracked_irqs: snap.health.irq_untracked,
        uncharged: snap.health.victim_map_full,
    })
}
