//! `/metrics`: the exporter state encoded by prometheus-client (OpenMetrics text), through a
//! custom collector so series come and go with the processes.

use std::sync::{Arc, Mutex};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, text::encode},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::model::exporter::{ExporterState, Labels};

/// Shares the state with the collector task.
#[derive(Debug, Clone, Default)]
pub struct Shared(pub Arc<Mutex<ExporterState>>);

impl Collector for Shared {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let st = self.0.lock().map_err(|_| std::fmt::Error)?;
        encode_state(&st, &mut enc)
    }
}

fn label_vec(l: &Labels) -> Vec<(&'static str, String)> {
    let mut v = vec![("comm", l.comm.clone()), ("cgroup", l.cgroup.clone())];
    if let Some(pid) = l.pid {
        v.push(("pid", pid.to_string()));
    }
    v
}

fn counter_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (Vec<(&'static str, String)>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn seconds_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (Vec<(&'static str, String)>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, ns) in series {
        ConstCounter::new(ns as f64 / 1e9).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn with_kind(l: &Labels, key: &'static str, kind: &str) -> Vec<(&'static str, String)> {
    let mut v = label_vec(l);
    v.push((key, kind.to_string()));
    v
}

fn encode_state(st: &ExporterState, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let s = &st.series;
    counter_family(
        enc,
        "proclens_context_switches",
        "Context switches out of a task, by the kernel's rule: voluntary (blocked) or involuntary (preempted)",
        s.iter().flat_map(|(l, v)| {
            [
                (with_kind(l, "kind", "voluntary"), v.voluntary),
                (with_kind(l, "kind", "involuntary"), v.involuntary),
            ]
        }),
    )?;
    counter_family(
        enc,
        "proclens_switches_in",
        "Switches onto a CPU by where they came from: same_process (address space kept), cross_process (address space changed), idle_or_kernel",
        s.iter().flat_map(|(l, v)| {
            [
                (with_kind(l, "from", "same_process"), v.same_in),
                (with_kind(l, "from", "cross_process"), v.cross_in),
                (with_kind(l, "from", "idle_or_kernel"), v.idle_kernel_in),
            ]
        }),
    )?;
    seconds_family(
        enc,
        "proclens_oncpu_seconds",
        "Time running on a CPU",
        s.iter().map(|(l, v)| (label_vec(l), v.oncpu_ns)),
    )?;
    seconds_family(
        enc,
        "proclens_blocked_seconds",
        "Time blocked (off CPU after a voluntary switch, until woken)",
        s.iter().map(|(l, v)| (label_vec(l), v.blocked_ns)),
    )?;
    seconds_family(
        enc,
        "proclens_runqueue_wait_seconds",
        "Time runnable but waiting for a CPU",
        s.iter().map(|(l, v)| (label_vec(l), v.runq_ns)),
    )?;
    {
        let mut m = enc.encode_descriptor(
            "proclens_runqueue_latency_seconds",
            "Run-queue latency (wakeup or preemption to running), log2 buckets",
            None,
            MetricType::Histogram,
        )?;
        for (l, v) in s {
            let count: u64 = v.runq_hist.iter().sum();
            let mut cumulative = 0;
            let buckets: Vec<(f64, u64)> = v
                .runq_hist
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    cumulative += n;
                    // Bucket i holds [2^i, 2^(i+1)) µs: its upper bound in seconds.
                    ((1u64 << (i + 1)) as f64 / 1e6, cumulative)
                })
                .collect();
            let labels = label_vec(l);
            m.encode_family(&labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    v.runq_ns as f64 / 1e9,
                    count,
                    &buckets,
                    None,
                )?;
        }
    }
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
    counter_family(
        enc,
        "proclens_lost_events",
        "Ring-buffer events lost (reservations that failed, counted in the kernel)",
        std::iter::once((vec![], st.lost_events)),
    )?;
    {
        let mut m = enc.encode_descriptor(
            "proclens_untracked_threads",
            "Threads the per-thread map had no room for",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(st.untracked_threads as i64).encode(m.encode_family(&Vec::<(
            &str,
            String,
        )>::new(
        ))?)?;
    }
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
    Ok(())
}

/// Exposition formats, chosen from the scraper's `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0` (what Prometheus asks for first).
    OpenMetrics,
    /// The classic `text/plain; version=0.0.4` (curl, promtool, older scrapers).
    Text,
}

impl Format {
    pub fn from_accept(accept: Option<&str>) -> Self {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The whole exposition.
pub fn exposition(shared: &Shared, format: Format) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(shared.clone()));
    let mut out = String::new();
    match format {
        Format::OpenMetrics => encode(&mut out, &registry)?,
        Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?,
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        exporter::{LabelledDelta, SystemTotals},
        switches::Counts,
    };

    #[test]
    fn exposition_has_typed_families_and_labels() {
        let shared = Shared::default();
        let mut d = Counts {
            voluntary: 5,
            involuntary: 2,
            same_in: 1,
            oncpu_ns: 1_500_000_000,
            ..Counts::default()
        };
        d.runq_hist[3] = 4;
        shared.0.lock().unwrap().apply(
            [LabelledDelta {
                labels: Labels {
                    comm: "nginx".into(),
                    cgroup: "/web".into(),
                    pid: None,
                },
                delta: &d,
                alive: true,
            }],
            SystemTotals {
                switches: 9,
                same_process: 1,
                cross_process: 3,
                idle_or_kernel: 5,
            },
        );
        let text = exposition(&shared, Format::OpenMetrics).unwrap();
        assert!(
            text.contains("# TYPE proclens_context_switches counter"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"proclens_context_switches_total{comm="nginx",cgroup="/web",kind="voluntary"} 5"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"proclens_oncpu_seconds_total{comm="nginx",cgroup="/web"} 1.5"#),
            "{text}"
        );
        assert!(text.contains(r#"proclens_runqueue_latency_seconds_bucket{le="0.000016",comm="nginx",cgroup="/web"} 4"#) || text.contains(r#"proclens_runqueue_latency_seconds_bucket{comm="nginx",cgroup="/web",le="0.000016"} 4"#), "{text}");
        assert!(
            text.contains(r#"proclens_system_switches_total{kind="cross_process"} 3"#),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"));
        let classic = exposition(&shared, Format::Text).unwrap();
        assert!(
            classic.contains("# TYPE proclens_context_switches_total counter"),
            "{classic}"
        );
        assert!(!classic.contains("# EOF"));
    }

    #[test]
    fn format_follows_accept() {
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
        assert_eq!(Format::from_accept(None), Format::Text);
    }
}
