//! `/metrics`: the exporter state encoded by prometheus-client (OpenMetrics text), through a
//! custom collector so series come and go with the processes.

use std::sync::{Arc, Mutex};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, text::encode},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::model::{
    copies::{Class, kind_name, op_name},
    exporter::{ExporterState, Labels},
};

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
    encode_extras(st, enc)?;
    encode_irq(st, enc)?;
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

/// Syscalls, copy paths, forks, zombies and the kernel's drop counters.
fn encode_extras(st: &ExporterState, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    if st.syscalls_counted {
        counter_family(
            enc,
            "proclens_syscalls",
            "Syscalls made (each one a user->kernel mode switch)",
            st.syscalls.iter().map(|(l, v)| (label_vec(l), *v)),
        )?;
    }
    if st.copies_counted {
        let path_labels = |l: &Labels, k: &crate::model::exporter::PathKey| {
            let mut v = label_vec(l);
            v.extend([
                ("syscall", op_name(k.op).to_string()),
                ("class", Class::of(k.op).as_str().to_string()),
                ("src", kind_name(k.src).to_string()),
                ("dst", kind_name(k.dst).to_string()),
            ]);
            v
        };
        let paths = || {
            st.copies
                .iter()
                .flat_map(|(l, ps)| ps.iter().map(move |(k, c)| (l, k, c)))
        };
        counter_family(
            enc,
            "proclens_copy_bytes",
            "Bytes moved by copy-family syscalls (their return values) by syscall, class (user_copy: through a user buffer; in_kernel: sendfile/splice/tee/copy_file_range; user_pages: vmsplice; mmap: mapped length) and fd kind on each side",
            paths().map(|(l, k, c)| (path_labels(l, k), c.bytes)),
        )?;
        counter_family(
            enc,
            "proclens_copy_calls",
            "Successful copy-family syscalls, labelled as proclens_copy_bytes",
            paths().map(|(l, k, c)| (path_labels(l, k), c.calls)),
        )?;
        counter_family(
            enc,
            "proclens_copy_errors",
            "Failed copy-family syscalls, labelled as proclens_copy_bytes",
            paths().map(|(l, k, c)| (path_labels(l, k), c.errors)),
        )?;
    }
    counter_family(
        enc,
        "proclens_forks",
        "Tasks created, by the creating process: kind=process (fork, clone without CLONE_THREAD) or thread",
        st.forks.iter().flat_map(|(l, f)| {
            [
                (with_kind(l, "kind", "process"), f.processes),
                (with_kind(l, "kind", "thread"), f.threads),
            ]
        }),
    )?;
    counter_family(
        enc,
        "proclens_child_exits",
        "Child processes that died, by parent",
        st.forks.iter().map(|(l, f)| (label_vec(l), f.child_exits)),
    )?;
    counter_family(
        enc,
        "proclens_child_failures",
        "Child processes that exited with a non-zero code or were killed by a signal, by parent",
        st.forks
            .iter()
            .map(|(l, f)| (label_vec(l), f.child_failures)),
    )?;
    if let Some(zombies) = &st.zombies {
        let mut m = enc.encode_descriptor(
            "proclens_zombies",
            "Zombies held now (children dead for at least 1 s and not waited for), by parent command",
            None,
            MetricType::Gauge,
        )?;
        for (l, n) in zombies {
            let mut labels = vec![("parent_comm", l.parent_comm.clone())];
            if let Some(pid) = l.parent_pid {
                labels.push(("parent_pid", pid.to_string()));
            }
            ConstGauge::new(*n as i64).encode(m.encode_family(&labels)?)?;
        }
    }
    counter_family(
        enc,
        "proclens_dropped",
        "What the kernel side could not record, by reason: ringbuf_full (events lost), thread_map_full (threads untracked), inflight_map_full and copy_map_full (copy calls unaccounted), syscall_map_full (syscalls uncounted)",
        st.drops
            .named()
            .into_iter()
            .map(|(k, v)| (vec![("reason", k.to_string())], v)),
    )?;
    Ok(())
}

/// Interrupts by CPU and kind, and the time they took from each label set: only when
/// they are traced. Label values are bounded by the machine (CPUs, vectors, IRQ lines)
/// and, for the stolen time, by the label sets every other family has.
fn encode_irq(st: &ExporterState, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let Some(irq) = &st.irq else {
        return Ok(());
    };
    let soft = |(cpu, v): &(u32, &str)| vec![("cpu", cpu.to_string()), ("vector", v.to_string())];
    let hard = |(cpu, row, name): &(u32, String, String)| {
        vec![
            ("cpu", cpu.to_string()),
            ("irq", row.clone()),
            ("name", name.clone()),
        ]
    };
    counter_family(
        enc,
        "proclens_softirqs",
        "Softirqs run, by CPU and vector (as /proc/softirqs counts them)",
        irq.softirqs.iter().map(|(k, v)| (soft(k), v.0)),
    )?;
    seconds_family(
        enc,
        "proclens_softirq_seconds",
        "Time in softirq handlers, by CPU and vector (hard IRQs nested in them left out)",
        irq.softirqs.iter().map(|(k, v)| (soft(k), v.1)),
    )?;
    counter_family(
        enc,
        "proclens_hardirqs",
        "Hard IRQs handled, by CPU, /proc/interrupts row (IRQ line or x86 system vector) and name",
        irq.hardirqs.iter().map(|(k, v)| (hard(k), v.0)),
    )?;
    seconds_family(
        enc,
        "proclens_hardirq_seconds",
        "Time in hard IRQ handlers, by CPU, /proc/interrupts row and name",
        irq.hardirqs.iter().map(|(k, v)| (hard(k), v.1)),
    )?;
    seconds_family(
        enc,
        "proclens_irq_stolen_seconds",
        "Interrupt time taken from processes: hard IRQs and softirqs that ran while one of them was current (kind=hard|soft; ksoftirqd's own softirqs are not a loss)",
        st.irq_stolen.iter().flat_map(|(l, t)| {
            [
                (with_kind(l, "kind", "hard"), t.hard_ns),
                (with_kind(l, "kind", "soft"), t.soft_ns),
            ]
        }),
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

    #[test]
    fn extras_families_carry_their_labels() {
        use crate::model::{
            copies::{Counts as CopyCounts, PathRow},
            exporter::{ExtrasDelta, ForkDelta, KernelDrops, ProcDelta, ZombieLabels},
            proctable::ForkStats,
        };
        use proclens_common::copies::{fd_kind, op};
        let shared = Shared::default();
        let l = Labels {
            comm: "nginx".into(),
            cgroup: "/web".into(),
            pid: None,
        };
        let c = CopyCounts {
            bytes: 4096,
            calls: 2,
            errors: 1,
        };
        let paths = [PathRow {
            op: op::SENDFILE64,
            src: fd_kind::FILE,
            dst: fd_kind::SOCKET,
            delta: c,
            total: c,
        }];
        shared.0.lock().unwrap().apply_extras(ExtrasDelta {
            procs: Some(vec![ProcDelta {
                labels: l.clone(),
                syscalls: 7,
                paths: &paths,
                alive: true,
            }]),
            copies: true,
            forks: vec![ForkDelta {
                labels: l,
                delta: ForkStats {
                    processes: 3,
                    threads: 4,
                    child_exits: 2,
                    child_failures: 1,
                    waits: 2,
                },
                alive: true,
            }],
            zombies: Some(vec![ZombieLabels {
                parent_comm: "nginx".into(),
                parent_pid: None,
            }]),
            drops: KernelDrops {
                copy_map_full: 5,
                ..KernelDrops::default()
            },
        });
        let text = exposition(&shared, Format::Text).unwrap();
        for want in [
            r#"proclens_syscalls_total{comm="nginx",cgroup="/web"} 7"#,
            r#"proclens_copy_bytes_total{comm="nginx",cgroup="/web",syscall="sendfile",class="in_kernel",src="file",dst="socket"} 4096"#,
            r#"proclens_copy_calls_total{comm="nginx",cgroup="/web",syscall="sendfile",class="in_kernel",src="file",dst="socket"} 2"#,
            r#"proclens_copy_errors_total{comm="nginx",cgroup="/web",syscall="sendfile",class="in_kernel",src="file",dst="socket"} 1"#,
            r#"proclens_forks_total{comm="nginx",cgroup="/web",kind="process"} 3"#,
            r#"proclens_forks_total{comm="nginx",cgroup="/web",kind="thread"} 4"#,
            r#"proclens_child_exits_total{comm="nginx",cgroup="/web"} 2"#,
            r#"proclens_child_failures_total{comm="nginx",cgroup="/web"} 1"#,
            r#"proclens_zombies{parent_comm="nginx"} 1"#,
            r#"proclens_dropped_total{reason="copy_map_full"} 5"#,
            r#"proclens_dropped_total{reason="ringbuf_full"} 0"#,
            "# TYPE proclens_zombies gauge",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }

    #[test]
    fn families_not_collected_are_not_shown() {
        let text = exposition(&Shared::default(), Format::Text).unwrap();
        for absent in [
            "proclens_syscalls",
            "proclens_copy_bytes",
            "proclens_zombies",
            "proclens_softirqs",
            "proclens_irq_stolen",
        ] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
        assert!(text.contains("# TYPE proclens_dropped_total counter"));
    }

    #[test]
    fn interrupt_families_by_cpu_kind_and_label_set() {
        use std::collections::BTreeMap;

        use crate::model::{
            exporter::{IrqTotals, StolenDelta},
            irq::Taken,
        };
        let shared = Shared::default();
        shared.0.lock().unwrap().apply_irq(
            IrqTotals {
                softirqs: BTreeMap::from([((1, "NET_RX"), (40, 2_500_000_000))]),
                hardirqs: BTreeMap::from([(
                    (0, "LOC".to_string(), "Local timer interrupts".to_string()),
                    (250, 500_000_000),
                )]),
            },
            vec![StolenDelta {
                labels: Labels {
                    comm: "spin".into(),
                    cgroup: "/".into(),
                    pid: None,
                },
                delta: Taken {
                    hard: 1,
                    hard_ns: 1_000_000,
                    soft: 2,
                    soft_ns: 250_000_000,
                },
                alive: true,
            }],
        );
        let text = exposition(&shared, Format::Text).unwrap();
        for want in [
            r#"proclens_softirqs_total{cpu="1",vector="NET_RX"} 40"#,
            r#"proclens_softirq_seconds_total{cpu="1",vector="NET_RX"} 2.5"#,
            r#"proclens_hardirqs_total{cpu="0",irq="LOC",name="Local timer interrupts"} 250"#,
            r#"proclens_hardirq_seconds_total{cpu="0",irq="LOC",name="Local timer interrupts"} 0.5"#,
            r#"proclens_irq_stolen_seconds_total{comm="spin",cgroup="/",kind="soft"} 0.25"#,
            r#"proclens_irq_stolen_seconds_total{comm="spin",cgroup="/",kind="hard"} 0.001"#,
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }
}
