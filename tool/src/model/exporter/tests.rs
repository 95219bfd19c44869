use super::*;

fn labels(comm: &str, pid: Option<u32>) -> Labels {
    Labels {
        pid,
        ..Labels::new(comm, &[("cgroup", "/")])
    }
}

#[test]
fn label_sets_without_a_process_expire_from_every_family() {
    let mut st = ExporterState::default();
    let d = Counts {
        voluntary: 1,
        ..Counts::default()
    };
    let row = |comm: &str| LabelledDelta {
        labels: labels(comm, None),
        delta: &d,
        alive: true,
    };
    let zombie = |parent_comm: &str| ZombieLabels {
        parent_comm: parent_comm.into(),
        parent_pid: None,
    };
    // Collection 0: a job and a daemon; the job forks, and holds a zombie.
    st.apply([row("job"), row("daemon")], SystemTotals::default());
    st.apply_extras(ExtrasDelta {
        forks: vec![ForkDelta {
            labels: labels("job", None),
            delta: ForkStats {
                processes: 1,
                ..ForkStats::default()
            },
            alive: true,
        }],
        zombies: Some(vec![zombie("job")]),
        ..ExtrasDelta::default()
    });
    // Collections 1 and 2: only the daemon is left; the zombie was reaped.
    for _ in 0..2 {
        st.apply([row("daemon")], SystemTotals::default());
        st.apply_extras(ExtrasDelta {
            zombies: Some(vec![]),
            ..ExtrasDelta::default()
        });
    }
    assert_eq!(st.zombies.as_ref().unwrap()[&zombie("job")], 0);
    assert_eq!(st.expire(3), 0, "not yet: seen 3 collections ago");
    assert!(st.series.contains_key(&labels("job", None)));
    assert_eq!(st.expire(1), 1);
    assert!(!st.series.contains_key(&labels("job", None)));
    assert!(!st.forks.contains_key(&labels("job", None)));
    assert!(st.zombies.as_ref().unwrap().is_empty());
    assert_eq!(st.series[&labels("daemon", None)].voluntary, 3);
}

#[test]
fn counters_accumulate_across_processes_of_one_label_set() {
    let mut st = ExporterState::default();
    let d1 = Counts {
        voluntary: 3,
        involuntary: 1,
        ..Counts::default()
    };
    let d2 = Counts {
        voluntary: 2,
        ..Counts::default()
    };
    st.apply(
        [
            LabelledDelta {
                labels: labels("sh", None),
                delta: &d1,
                alive: false,
            },
            LabelledDelta {
                labels: labels("sh", None),
                delta: &d2,
                alive: true,
            },
        ],
        SystemTotals {
            switches: 10,
            ..SystemTotals::default()
        },
    );
    st.apply(
        [LabelledDelta {
            labels: labels("sh", None),
            delta: &d2,
            alive: true,
        }],
        SystemTotals {
            switches: 5,
            ..SystemTotals::default()
        },
    );
    let s = &st.series[&labels("sh", None)];
    assert_eq!(
        (s.voluntary, s.involuntary),
        (7, 1),
        "dead processes keep their share"
    );
    assert_eq!(st.system.switches, 15);
    assert_eq!(st.collections, 2);
}

#[test]
fn per_pid_series_of_exited_processes_are_dropped() {
    let mut st = ExporterState::default();
    let d = Counts {
        voluntary: 1,
        ..Counts::default()
    };
    st.apply(
        [
            LabelledDelta {
                labels: labels("a", Some(1)),
                delta: &d,
                alive: true,
            },
            LabelledDelta {
                labels: labels("b", Some(2)),
                delta: &d,
                alive: false,
            },
        ],
        SystemTotals::default(),
    );
    assert!(st.series.contains_key(&labels("a", Some(1))));
    assert!(!st.series.contains_key(&labels("b", Some(2))));
}

fn sendfile_path(bytes: u64) -> copies::PathRow {
    use proclens_common::copies::{fd_kind, op};
    let delta = copies::Counts {
        bytes,
        calls: 1,
        errors: 0,
    };
    copies::PathRow {
        op: op::SENDFILE64,
        src: fd_kind::FILE,
        dst: fd_kind::SOCKET,
        delta,
        total: delta,
    }
}

fn proc_delta<'a>(
    l: Labels,
    syscalls: u64,
    paths: &'a [copies::PathRow],
    alive: bool,
) -> ProcDelta<'a> {
    ProcDelta {
        labels: l,
        syscalls,
        paths,
        alive,
    }
}

#[test]
fn syscalls_and_copy_paths_accumulate_per_label_set() {
    let mut st = ExporterState::default();
    let (a, b) = ([sendfile_path(100)], [sendfile_path(23)]);
    st.apply_extras(ExtrasDelta {
        procs: Some(vec![
            proc_delta(labels("web", None), 5, &a, false),
            proc_delta(labels("web", None), 2, &b, true),
            proc_delta(labels("idle", None), 0, &[], true),
        ]),
        copies: true,
        ..ExtrasDelta::default()
    });
    st.apply_extras(ExtrasDelta {
        procs: Some(vec![proc_delta(labels("web", None), 1, &b, true)]),
        copies: true,
        ..ExtrasDelta::default()
    });
    assert_eq!(st.syscalls[&labels("web", None)], 8);
    assert!(
        !st.syscalls.contains_key(&labels("idle", None)),
        "a process that did nothing creates no series"
    );
    let paths = &st.copies[&labels("web", None)];
    assert_eq!(paths.len(), 1);
    let c = paths.values().next().unwrap();
    assert_eq!(
        (c.bytes, c.calls),
        (146, 3),
        "the exited process keeps its share"
    );
    assert!(st.syscalls_counted && st.copies_counted);
}

#[test]
fn per_pid_series_of_exited_processes_leave_every_family() {
    let mut st = ExporterState::default();
    let p = [sendfile_path(1)];
    let fork = ForkStats {
        processes: 2,
        ..ForkStats::default()
    };
    st.apply_extras(ExtrasDelta {
        procs: Some(vec![
            proc_delta(labels("a", Some(1)), 1, &p, true),
            proc_delta(labels("b", Some(2)), 1, &p, true),
        ]),
        copies: true,
        forks: vec![ForkDelta {
            labels: labels("b", Some(2)),
            delta: fork,
            alive: true,
        }],
        ..ExtrasDelta::default()
    });
    assert!(st.forks.contains_key(&labels("b", Some(2))));
    st.apply_extras(ExtrasDelta {
        procs: Some(vec![proc_delta(labels("b", Some(2)), 3, &p, false)]),
        copies: true,
        ..ExtrasDelta::default()
    });
    for gone in [
        st.syscalls.contains_key(&labels("b", Some(2))),
        st.copies.contains_key(&labels("b", Some(2))),
        st.forks.contains_key(&labels("b", Some(2))),
    ] {
        assert!(!gone);
    }
    assert_eq!(st.syscalls[&labels("a", Some(1))], 1);
}

#[test]
fn forks_accumulate_and_zombies_are_a_gauge_per_parent_command() {
    let mut st = ExporterState::default();
    let z = |c: &str, pid: Option<u32>| ZombieLabels {
        parent_comm: c.into(),
        parent_pid: pid,
    };
    let fork = ForkStats {
        processes: 3,
        threads: 1,
        child_exits: 2,
        child_failures: 1,
        waits: 0,
    };
    let forks = || {
        vec![ForkDelta {
            labels: labels("sh", None),
            delta: fork,
            alive: true,
        }]
    };
    st.apply_extras(ExtrasDelta {
        forks: forks(),
        zombies: Some(vec![z("sh", None), z("sh", None), z("x", Some(9))]),
        ..ExtrasDelta::default()
    });
    st.apply_extras(ExtrasDelta {
        forks: forks(),
        zombies: Some(vec![z("sh", None)]),
        ..ExtrasDelta::default()
    });
    let f = st.forks[&labels("sh", None)];
    assert_eq!(
        (f.processes, f.threads, f.child_exits, f.child_failures),
        (6, 2, 4, 2)
    );
    let zs = st.zombies.as_ref().unwrap();
    assert_eq!(zs[&z("sh", None)], 1);
    assert!(
        !zs.contains_key(&z("x", Some(9))),
        "per-pid parents go at 0"
    );
    st.apply_extras(ExtrasDelta {
        zombies: Some(vec![]),
        ..ExtrasDelta::default()
    });
    assert_eq!(st.zombies.as_ref().unwrap()[&z("sh", None)], 0);
    assert!(!st.syscalls_counted, "no syscall rows: not counted");
}

mod guard {
    use super::*;
    use crate::model::exporter::cardinality::{OTHER, RESERVE, SET_SERIES};

    /// The smallest cap with room for `n` series of new label sets (beside the fixed
    /// families, the catch-all's room and the tenth kept for folds), and not for 3 more.
    fn cap_for(n: usize) -> usize {
        let base = 3 + 1 + 1 + 5 + HostGauges::SERIES + host::SELF_SERIES + RESERVE + n;
        let max = (base..).find(|m| m - m / 10 >= base).unwrap();
        assert!(max - max / 10 < base + 3);
        max
    }

    fn row<'a>(l: Labels, d: &'a Counts) -> LabelledDelta<'a> {
        LabelledDelta {
            labels: l,
            delta: d,
            alive: true,
        }
    }

    /// One interval in which each of `names` switched once, made a syscall and forked.
    fn interval(st: &mut ExporterState, names: &[String], cgroup: &str) {
        let d = Counts {
            voluntary: 1,
            ..Counts::default()
        };
        st.apply(
            names.iter().map(|n| row(Labels::new(n, &[("cgroup", cgroup)]), &d)),
            SystemTotals::default(),
        );
        st.apply_extras(ExtrasDelta {
            procs: Some(
                names
                    .iter()
                    .map(|n| proc_delta(Labels::new(n, &[("cgroup", cgroup)]), 1, &[], true))
                    .collect(),
            ),
            forks: names
                .iter()
                .map(|n| ForkDelta {
                    labels: Labels::new(n, &[("cgroup", cgroup)]),
                    delta: ForkStats {
                        processes: 1,
                        ..ForkStats::default()
                    },
                    alive: true,
                })
                .collect(),
            zombies: Some(vec![]),
            ..ExtrasDelta::default()
        });
    }

    #[test]
    fn distinct_names_beyond_the_cap_fold_into_other_and_are_counted_once() {
        let max = 2_000;
        let mut st = ExporterState::with_max_series(max);
        let names: Vec<String> = (0..5_000).map(|i| format!("n{i:04}")).collect();
        interval(&mut st, &names, "/job");
        // Seen again: nothing is counted twice.
        interval(&mut st, &names, "/job");
        assert!(st.series_count() <= max, "{} series", st.series_count());
        let admitted = st
            .series
            .keys()
            .filter(|l| l.comm.as_deref() != Some(OTHER))
            .count();
        assert!(admitted > 0 && admitted < 5_000);
        assert_eq!(st.guard.folded_total, (5_000 - admitted) as u64);
        // The folded sets' figures are all there, in comm="other" of the same cgroup.
        let other = Labels::new(OTHER, &[("cgroup", "/job")]);
        assert_eq!(st.series[&other].voluntary, 2 * (5_000 - admitted) as u64);
        assert_eq!(st.syscalls[&other], 2 * (5_000 - admitted) as u64);
        assert_eq!(st.forks[&other].processes, 2 * (5_000 - admitted) as u64);
        let total: u64 = st.series.values().map(|c| c.voluntary).sum();
        assert_eq!(total, 10_000, "no switch lost by folding");
    }

    #[test]
    fn a_full_cap_folds_new_cgroups_into_the_catch_all() {
        let max = 1_000;
        let mut st = ExporterState::with_max_series(max);
        // Fill the cap from one cgroup, then come from many.
        let names: Vec<String> = (0..100).map(|i| format!("a{i}")).collect();
        interval(&mut st, &names, "/a");
        for c in 0..50 {
            interval(&mut st, &[format!("b{c}")], &format!("/c{c}"));
        }
        assert!(st.series_count() <= max, "{} series", st.series_count());
        let all_other = Labels::new(OTHER, &[("cgroup", OTHER)]);
        assert!(st.series.contains_key(&all_other), "{:?}", st.series.keys());
        assert!(
            st.series.contains_key(&Labels::new(OTHER, &[("cgroup", "/a")])),
            "the first cgroup to overflow keeps its own catch-all"
        );
        let total: u64 = st.series.values().map(|c| c.voluntary).sum();
        assert_eq!(total, 150, "every switch is somewhere");
    }

    #[test]
    fn copy_paths_past_the_cap_go_to_the_catch_all_by_syscall() {
        use proclens_common::copies::{fd_kind, op};
        let max = cap_for(SET_SERIES);
        let mut st = ExporterState::with_max_series(max);
        let p = [sendfile_path(10)];
        let mut read = sendfile_path(5);
        read.op = op::READ;
        let q = [read];
        st.apply_extras(ExtrasDelta {
            procs: Some(vec![proc_delta(labels("web", None), 1, &p, true)]),
            copies: true,
            ..ExtrasDelta::default()
        });
        // The only set fits, its path does not: bytes go to the catch-all.
        assert!(st.syscalls.contains_key(&labels("web", None)));
        let other = Labels::new(OTHER, &[("cgroup", OTHER)]);
        let key = PathKey {
            op: op::SENDFILE64,
            src: fd_kind::UNKNOWN,
            dst: fd_kind::UNKNOWN,
        };
        assert_eq!(st.copies[&other][&key].bytes, 10);
        st.apply_extras(ExtrasDelta {
            procs: Some(vec![proc_delta(labels("db", None), 1, &q, true)]),
            copies: true,
            ..ExtrasDelta::default()
        });
        assert!(st.series_count() <= max, "{} > {max}", st.series_count());
        assert_eq!(st.guard.folded_total, 1, "db folded");
    }

    #[test]
    fn zombie_parents_past_the_cap_read_other() {
        let max = cap_for(2);
        let mut st = ExporterState::with_max_series(max);
        let z = |c: &str| ZombieLabels {
            parent_comm: c.into(),
            parent_pid: None,
        };
        st.apply_extras(ExtrasDelta {
            zombies: Some(vec![z("a"), z("b"), z("c"), z("d"), z("d")]),
            ..ExtrasDelta::default()
        });
        let zs = st.zombies.as_ref().unwrap();
        assert_eq!((zs[&z("a")], zs[&z("b")], zs[&z("other")]), (1, 1, 3));
        assert_eq!(st.guard.folded_total, 2, "c and d");
        assert!(st.series_count() <= max);
    }

    #[test]
    fn folded_sets_are_counted_again_after_they_expire() {
        let mut st = ExporterState::with_max_series(1_000);
        let names: Vec<String> = (0..100).map(|i| format!("n{i}")).collect();
        interval(&mut st, &names, "/");
        let folded = st.guard.folded_total;
        assert!(folded > 0);
        interval(&mut st, &[], "/");
        interval(&mut st, &[], "/");
        st.expire(1);
        interval(&mut st, &names, "/");
        assert_eq!(st.guard.folded_total, 2 * folded);
    }
}
