//! The families without process labels, always present: the machine's switches and
//! processes, what the kernel side could not record, and proclens's own cost.

use prometheus_client::{
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
};

use super::{counter_family, gauge, gauge_family, seconds_family};
use crate::model::exporter::{ExporterState, SCRAPE_BUCKETS, ScrapeDurations, SelfGauges};

pub(super) fn encode(
    st: &ExporterState,
    me: &SelfGauges,
    scrapes: &ScrapeDurations,
    enc: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let sys = &st.system;
    counter_family(
        enc,
        "proclens_system_switches",
        "All context switches on the machine by kind (same_process, cross_process, idle_or_kernel)",
        [
            ("same_process", sys.same_process),
            ("cross_process", sys.cross_process),
            ("idle_or_kernel", sys.idle_or_kernel),
        ]
        .into_iter()
        .map(|(k, v)| (vec![("kind", k.to_string())], v)),
    )?;
    let h = &st.host;
    gauge(
        enc,
        "proclens_system_processes",
        "Processes on the machine (thread-group leaders in /proc, zombies included)",
        h.processes,
    )?;
    gauge(
        enc,
        "proclens_system_threads",
        "Threads on the machine (the kernel's nr_threads)",
        h.threads,
    )?;
    gauge(
        enc,
        "proclens_system_zombies",
        "Zombie processes on the machine, of any age (0 when there are none)",
        h.zombies,
    )?;
    gauge(
        enc,
        "proclens_system_pid_headroom",
        "Tasks that can still be created before fork fails: min(kernel.pid_max, kernel.threads-max) less the threads that exist",
        h.pid_headroom,
    )?;
    counter_family(
        enc,
        "proclens_lost_events",
        "Ring-buffer events lost (reservations that failed, counted in the kernel)",
        std::iter::once((vec![], st.lost_events)),
    )?;
    gauge(
        enc,
        "proclens_untracked_threads",
        "Threads the per-thread map had no room for",
        st.untracked_threads,
    )?;
    counter_family(
        enc,
        "proclens_dropped",
        "What the kernel side could not record, by reason: ringbuf_full (events lost), thread_map_full (threads untracked), inflight_map_full and copy_map_full (copy calls unaccounted), syscall_map_full (syscalls uncounted), wait_map_full (blocks not charged to their syscall), ready_map_full (readiness calls uncounted)",
        st.drops
            .named()
            .into_iter()
            .map(|(k, v)| (vec![("reason", k.to_string())], v)),
    )?;
    counter_family(
        enc,
        "proclens_bpf_program_runs",
        "Runs of proclens's BPF programs (kernel bpf_stats; 0 unless kernel.bpf_stats_enabled=1)",
        st.programs
            .iter()
            .map(|p| (vec![("program", p.name.clone())], p.run_count)),
    )?;
    seconds_family(
        enc,
        "proclens_bpf_program_run_time_seconds",
        "Time spent in proclens's BPF programs (kernel bpf_stats; 0 unless kernel.bpf_stats_enabled=1)",
        st.programs
            .iter()
            .map(|p| (vec![("program", p.name.clone())], p.run_time_ns)),
    )?;
    encode_self(st, me, scrapes, enc)
}

/// proclens's own cost and the cardinality cap's figures.
fn encode_self(
    st: &ExporterState,
    me: &SelfGauges,
    scrapes: &ScrapeDurations,
    enc: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    counter_family(
        enc,
        "process_cpu_seconds",
        "Total user and system CPU time spent by proclens in seconds",
        std::iter::once((vec![], me.cpu_seconds)),
    )?;
    gauge(
        enc,
        "process_resident_memory_bytes",
        "proclens's resident memory size in bytes",
        me.resident_bytes,
    )?;
    gauge(
        enc,
        "process_virtual_memory_bytes",
        "proclens's virtual memory size in bytes",
        me.virtual_bytes,
    )?;
    gauge(
        enc,
        "process_open_fds",
        "proclens's open file descriptors",
        me.open_fds,
    )?;
    gauge(
        enc,
        "process_max_fds",
        "proclens's limit on open file descriptors",
        me.max_fds,
    )?;
    gauge_family(
        enc,
        "process_start_time_seconds",
        "When proclens started, in seconds since the epoch",
        std::iter::once((vec![], me.start_time_seconds)),
    )?;
    gauge(enc, "process_threads", "proclens's threads", me.threads)?;
    gauge(
        enc,
        "proclens_tracked_processes",
        "Processes in proclens's process table (from /proc at start, then the lifecycle events)",
        st.tracked_processes,
    )?;
    counter_family(
        enc,
        "proclens_table_repairs",
        "Process-table entries the checks against /proc corrected (forks or exits the events never brought)",
        std::iter::once((vec![], st.table_repairs)),
    )?;
    gauge(
        enc,
        "proclens_label_sets",
        "Label sets in the per-process families",
        st.label_sets() as u64,
    )?;
    gauge(
        enc,
        "proclens_series",
        "Series in this exposition, this one included",
        st.series_count() as u64,
    )?;
    gauge(
        enc,
        "proclens_max_series",
        "The cap on series (--max-series) past which label sets fold into comm=\"other\"",
        st.guard.max_series.min(i64::MAX as usize) as u64,
    )?;
    counter_family(
        enc,
        "proclens_folded_label_sets",
        "Label sets folded into comm=\"other\" (or every label \"other\") by the --max-series cap, each counted once while it keeps showing up",
        std::iter::once((vec![], st.guard.folded_total)),
    )?;
    let mut m = enc.encode_descriptor(
        "proclens_scrape_duration_seconds",
        "Time proclens took to read its own figures and encode /metrics, per scrape, before this one",
        None,
        MetricType::Histogram,
    )?;
    let buckets: Vec<(f64, u64)> = SCRAPE_BUCKETS
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .zip(scrapes.buckets)
        .collect();
    m.encode_family(&super::LabelVec::new())?
        .encode_histogram::<NoLabelSet>(scrapes.sum_seconds, scrapes.count, &buckets, None)?;
    Ok(())
}
