use super::*;
use crate::model::exporter::Labels;
use crate::model::parent_info::CgroupPids;
use crate::model::{
    exporter::{LabelledDelta, SystemTotals},
    switches::Counts,
};
use proclens_common::switch::RUNQ_BUCKETS;

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
    shared.state.lock().unwrap().apply(
        [LabelledDelta {
            labels: Labels::new("nginx", &[("cgroup", "/web")]),
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
    let text = exposition(&shared, Format::OpenMetrics, SelfGauges::default()).unwrap();
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
    assert!(
        text.contains(r#"proclens_system_switches_total{kind="cross_process"} 3"#),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));
    let classic = exposition(&shared, Format::Text, SelfGauges::default()).unwrap();
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
    let l = Labels::new("nginx", &[("cgroup", "/web")]);
    let c = CopyCounts {
        bytes: 4096,
        calls: 2,
        errors: 1,
        ..Default::default()
    };
    let paths = [PathRow {
        op: op::SENDFILE64,
        src: fd_kind::FILE,
        dst: fd_kind::SOCKET,
        flags: 0,
        delta: c,
        total: c,
    }];
    shared.state.lock().unwrap().apply_extras(ExtrasDelta {
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
        zombie_cgroups: vec![
            CgroupPids {
                cgroup: "/web".into(),
                current: 12,
                max: Some(64),
            },
            CgroupPids {
                cgroup: "/batch".into(),
                current: 3,
                max: None,
            },
        ],
        drops: KernelDrops {
            copy_map_full: 5,
            ..KernelDrops::default()
        },
    });
    let text = exposition(&shared, Format::Text, SelfGauges::default()).unwrap();
    for want in [
        r#"proclens_syscalls_total{comm="nginx",cgroup="/web"} 7"#,
        r#"proclens_copy_bytes_total{comm="nginx",cgroup="/web",syscall="sendfile",class="zero_copy",src="file",dst="socket"} 4096"#,
        r#"proclens_copy_calls_total{comm="nginx",cgroup="/web",syscall="sendfile",class="zero_copy",src="file",dst="socket"} 2"#,
        r#"proclens_copy_errors_total{comm="nginx",cgroup="/web",syscall="sendfile",class="zero_copy",src="file",dst="socket"} 1"#,
        r#"proclens_forks_total{comm="nginx",cgroup="/web",kind="process"} 3"#,
        r#"proclens_forks_total{comm="nginx",cgroup="/web",kind="thread"} 4"#,
        r#"proclens_child_exits_total{comm="nginx",cgroup="/web"} 2"#,
        r#"proclens_child_failures_total{comm="nginx",cgroup="/web"} 1"#,
        r#"proclens_zombies{parent_comm="nginx"} 1"#,
        r#"proclens_zombie_cgroup_pids{cgroup="/web"} 12"#,
        r#"proclens_zombie_cgroup_pids{cgroup="/batch"} 3"#,
        r#"proclens_zombie_cgroup_pids_max{cgroup="/web"} 64"#,
        r#"proclens_dropped_total{reason="copy_map_full"} 5"#,
        r#"proclens_dropped_total{reason="ringbuf_full"} 0"#,
        "# TYPE proclens_zombies gauge",
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
    assert!(
        !text.contains(r#"proclens_zombie_cgroup_pids_max{cgroup="/batch"}"#),
        "no limit, no series:\n{text}"
    );
}

#[test]
fn families_not_collected_are_not_shown() {
    let text = exposition(&Shared::default(), Format::Text, SelfGauges::default()).unwrap();
    for absent in [
        "proclens_syscalls",
        "proclens_copy_bytes",
        "proclens_zombies",
        "proclens_softirqs",
        "proclens_irq_stolen",
        "proclens_blocked_in",
    ] {
        assert!(!text.contains(absent), "{absent} in\n{text}");
    }
    assert!(text.contains("# TYPE proclens_dropped_total counter"));
}

/// The `le` bound and value of each `_bucket` line of the one histogram series in `text`
/// whose name starts with `name`.
fn buckets(text: &str, name: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
        .map(|l| {
            let le = l.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
            (
                le.to_string(),
                l.rsplit(' ').next().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

fn sample(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("{prefix} missing from\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Issue 18: the buckets were made cumulative twice (bash read `_count` 9 but buckets 6,
/// 12, 18, ...) and OpenMetrics had no `+Inf` bucket.
#[test]
fn runqueue_buckets_are_cumulative_once_and_end_with_inf_equal_to_count() {
    let shared = Shared::default();
    let mut d = Counts::default();
    d.runq_hist[0] = 6; // < 2 us
    d.runq_hist[2] = 2; // [4, 8) us
    d.runq_hist[RUNQ_BUCKETS - 1] = 1; // >= 2^26 us
    d.runq_ns = 70_000_000_000;
    shared.state.lock().unwrap().apply(
        [LabelledDelta {
            labels: Labels::new("bash", &[("cgroup", "/")]),
            delta: &d,
            alive: true,
        }],
        SystemTotals::default(),
    );
    for format in [Format::OpenMetrics, Format::Text] {
        let text = exposition(&shared, format, SelfGauges::default()).unwrap();
        let b = buckets(&text, "proclens_runqueue_latency_seconds");
        assert_eq!(b.len(), RUNQ_BUCKETS, "{format:?}: {b:?}");
        let values: Vec<u64> = b.iter().map(|(_, v)| *v).collect();
        let mut want = vec![6, 6, 8];
        want.resize(RUNQ_BUCKETS - 1, 8);
        want.push(9);
        assert_eq!(values, want, "{format:?}");
        assert_eq!(b.last().unwrap().0, "+Inf", "{format:?}");
        assert_eq!(b[0].0.parse::<f64>().unwrap(), 2e-6);
        assert_eq!(b[RUNQ_BUCKETS - 2].0.parse::<f64>().unwrap(), 67.108_864);
        assert_eq!(sample(&text, "proclens_runqueue_latency_seconds_count{"), 9);
    }
}

/// `proclens_series` is the number of sample lines of the exposition it is in.
#[test]
fn series_gauge_counts_every_sample_line() {
    use crate::model::{
        copies::{Counts as CopyCounts, PathRow},
        exporter::{
            Blocked, BlockedDelta, ExtrasDelta, ForkDelta, ProcDelta, ProgramCost, ZombieLabels,
        },
        proctable::ForkStats,
    };
    use proclens_common::copies::{fd_kind, op};
    let shared = Shared::default();
    {
        let mut st = shared.state.lock().unwrap();
        let d = Counts {
            voluntary: 1,
            ..Counts::default()
        };
        let rows = ["a", "b"].map(|c| LabelledDelta {
            labels: Labels::new(c, &[("cgroup", "/"), ("systemd_unit", "x.service")]),
            delta: &d,
            alive: true,
        });
        st.apply(rows, SystemTotals::default());
        st.programs = vec![ProgramCost {
            name: "sched_switch".into(),
            run_time_ns: 1,
            run_count: 1,
        }];
        let c = CopyCounts {
            bytes: 1,
            calls: 1,
            errors: 0,
            ..Default::default()
        };
        let paths = [PathRow {
            op: op::READ,
            src: fd_kind::FILE,
            dst: fd_kind::USER,
            flags: 0,
            delta: c,
            total: c,
        }];
        st.apply_extras(ExtrasDelta {
            procs: Some(vec![ProcDelta {
                labels: Labels::new("a", &[("cgroup", "/"), ("systemd_unit", "x.service")]),
                syscalls: 3,
                paths: &paths,
                alive: true,
            }]),
            copies: true,
            forks: vec![ForkDelta {
                labels: Labels::new("c", &[("cgroup", "/"), ("systemd_unit", "")]),
                delta: ForkStats {
                    processes: 1,
                    ..ForkStats::default()
                },
                alive: true,
            }],
            zombies: Some(vec![ZombieLabels {
                parent_comm: "c".into(),
                parent_pid: None,
            }]),
            zombie_cgroups: vec![CgroupPids {
                cgroup: "/c".into(),
                current: 2,
                max: Some(10),
            }],
            ..ExtrasDelta::default()
        });
        st.apply_blocked(vec![BlockedDelta {
            labels: Labels::new("b", &[("cgroup", "/"), ("systemd_unit", "x.service")]),
            syscalls: vec![
                ("futex", Blocked { ns: 5, switches: 1 }),
                ("other", Blocked { ns: 7, switches: 2 }),
            ],
            alive: true,
        }]);
    }
    shared.scrapes.lock().unwrap().observe(0.002);
    for format in [Format::OpenMetrics, Format::Text] {
        let text = exposition(&shared, format, SelfGauges::default()).unwrap();
        let lines = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        assert_eq!(
            sample(&text, "proclens_series "),
            lines as u64,
            "{format:?}\n{text}"
        );
        assert_eq!(sample(&text, "proclens_scrape_duration_seconds_count "), 1);
    }
}

#[test]
fn self_and_host_gauges_are_always_shown() {
    let text = exposition(
        &Shared::default(),
        Format::Text,
        SelfGauges {
            cpu_seconds: 1.5,
            resident_bytes: 4096,
            ..SelfGauges::default()
        },
    )
    .unwrap();
    for want in [
        "process_cpu_seconds_total 1.5",
        "process_resident_memory_bytes 4096",
        "proclens_system_zombies 0",
        "proclens_system_processes 0",
        "proclens_system_threads 0",
        "proclens_system_pid_headroom 0",
        "proclens_folded_label_sets_total 0",
        "proclens_scrape_duration_seconds_bucket{le=\"+Inf\"} 0",
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
}

#[test]
fn interrupt_families_by_cpu_kind_and_label_set() {
    use std::collections::BTreeMap;

    use crate::model::{
        exporter::{IrqTotals, StolenDelta},
        irq::Taken,
    };
    let shared = Shared::default();
    shared.state.lock().unwrap().apply_irq(
        IrqTotals {
            softirqs: BTreeMap::from([((1, "NET_RX"), (40, 2_500_000_000))]),
            hardirqs: BTreeMap::from([(
                (0, "LOC".to_string(), "Local timer interrupts".to_string()),
                (250, 500_000_000),
            )]),
        },
        vec![StolenDelta {
            labels: Labels::new("spin", &[("cgroup", "/")]),
            delta: Taken {
                hard: 1,
                hard_ns: 1_000_000,
                soft: 2,
                soft_ns: 250_000_000,
            },
            alive: true,
        }],
    );
    let text = exposition(&shared, Format::Text, SelfGauges::default()).unwrap();
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

#[test]
fn families_are_encoded_once_per_collection_and_format() {
    let shared = Shared::default();
    let collect = |comm: &str| {
        let d = Counts {
            voluntary: 1,
            ..Counts::default()
        };
        shared.state.lock().unwrap().apply(
            [LabelledDelta {
                labels: Labels::new(comm, &[("cgroup", "/")]),
                delta: &d,
                alive: true,
            }],
            SystemTotals::default(),
        );
    };
    let has = |text: &str, comm: &str| text.contains(&format!("comm=\"{comm}\""));
    collect("first");
    let om = exposition(&shared, Format::OpenMetrics, SelfGauges::default()).unwrap();
    assert!(has(&om, "first") && om.ends_with("# EOF\n"));
    assert_eq!(om.matches("# EOF").count(), 1, "{om}");
    // Between collections the families are the last collection's, in either format.
    shared.state.lock().unwrap().series.clear();
    let again = exposition(&shared, Format::OpenMetrics, SelfGauges::default()).unwrap();
    assert!(has(&again, "first"), "{again}");
    let text = exposition(&shared, Format::Text, SelfGauges::default()).unwrap();
    assert!(!text.contains("# EOF") && text.contains("# TYPE proclens_context_switches_total"));
    // A collection shows its own.
    collect("second");
    let next = exposition(&shared, Format::OpenMetrics, SelfGauges::default()).unwrap();
    assert!(has(&next, "second") && !has(&next, "first"), "{next}");
    let text = exposition(&shared, Format::Text, SelfGauges::default()).unwrap();
    assert!(has(&text, "second") && !has(&text, "first"), "{text}");
}

/// Issue 21: blocked time by the syscall each block began in, a series per label set and
/// syscall label, in seconds and switches; a label set's figures of a process that has
/// gone stay in its counters.
#[test]
fn blocked_in_families_by_label_set_and_syscall() {
    use crate::model::exporter::{Blocked, BlockedDelta};
    let shared = Shared::default();
    let l = Labels::new("nginx", &[("cgroup", "/web")]);
    let row = |syscall, ns, switches, alive| BlockedDelta {
        labels: l.clone(),
        syscalls: vec![(syscall, Blocked { ns, switches })],
        alive,
    };
    {
        let mut st = shared.state.lock().unwrap();
        st.apply_blocked(vec![
            row("epoll_wait", 1_500_000_000, 3, true),
            row("nanosleep", 10_000_000, 1, false),
        ]);
        st.apply_blocked(vec![row("epoll_wait", 500_000_000, 1, true)]);
    }
    for format in [Format::OpenMetrics, Format::Text] {
        let text = exposition(&shared, format, SelfGauges::default()).unwrap();
        for want in [
            r#"proclens_blocked_in_seconds_total{comm="nginx",cgroup="/web",syscall="epoll_wait"} 2.0"#,
            r#"proclens_blocked_in_seconds_total{comm="nginx",cgroup="/web",syscall="nanosleep"} 0.01"#,
            r#"proclens_blocked_in_switches_total{comm="nginx",cgroup="/web",syscall="epoll_wait"} 4"#,
            r#"proclens_blocked_in_switches_total{comm="nginx",cgroup="/web",syscall="nanosleep"} 1"#,
        ] {
            assert!(text.contains(want), "{format:?}: {want} not in\n{text}");
        }
    }
    let text = exposition(&shared, Format::Text, SelfGauges::default()).unwrap();
    assert!(text.contains("# TYPE proclens_blocked_in_seconds_total counter"));
    assert!(text.contains("# TYPE proclens_blocked_in_switches_total counter"));
}
