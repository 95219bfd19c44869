use super::*;

pub(super) fn labels(comm: &str, pid: Option<u32>) -> Labels {
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

pub(super) fn sendfile_path(bytes: u64) -> copies::PathRow {
    use proclens_common::copies::{fd_kind, op};
    let delta = copies::Counts {
        bytes,
        calls: 1,
        errors: 0,
        ..Default::default()
    };
    copies::PathRow {
        op: op::SENDFILE64,
        src: fd_kind::FILE,
        dst: fd_kind::SOCKET,
        flags: 0,
        delta,
        total: delta,
    }
}

pub(super) fn proc_delta(
    l: Labels,
    syscalls: u64,
    paths: &[copies::PathRow],
    alive: bool,
) -> ProcDelta<'_> {
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

#[test]
fn interrupt_totals_are_replaced_and_stolen_time_accumulates() {
    let mut st = ExporterState::default();
    let soft = |ns| Taken {
        soft: 1,
        soft_ns: ns,
        ..Taken::default()
    };
    let totals = |n| IrqTotals {
        softirqs: BTreeMap::from([((1, "NET_RX"), (n, n * 1000))]),
        ..IrqTotals::default()
    };
    let stolen = |l: Labels, ns, alive| StolenDelta {
        labels: l,
        delta: soft(ns),
        alive,
    };
    st.apply_irq(
        totals(5),
        vec![
            stolen(labels("spin", None), 100, true),
            stolen(labels("spin", None), 50, false),
            stolen(labels("gone", Some(3)), 7, false),
        ],
    );
    st.apply_irq(totals(9), vec![stolen(labels("spin", None), 10, true)]);
    assert_eq!(st.irq.as_ref().unwrap().softirqs[&(1, "NET_RX")], (9, 9000));
    assert_eq!(st.irq_stolen[&labels("spin", None)].soft_ns, 160);
    assert!(!st.irq_stolen.contains_key(&labels("gone", Some(3))));
}

fn blocked_delta(l: Labels, syscalls: &[(&'static str, u64, u64)], alive: bool) -> BlockedDelta {
    BlockedDelta {
        labels: l,
        syscalls: syscalls
            .iter()
            .map(|&(s, ns, switches)| (s, Blocked { ns, switches }))
            .collect(),
        alive,
    }
}

/// Issue 21: blocked time by syscall accumulates per label set and syscall label; a
/// process's last interval (it has gone) stays in its label set's counters, and a
/// per-pid series goes with its process.
#[test]
fn blocked_time_by_syscall_accumulates_and_outlives_its_processes() {
    let mut st = ExporterState::default();
    assert!(!st.blocked_in_counted);
    st.apply_blocked(vec![
        blocked_delta(labels("web", None), &[("epoll_wait", 100, 2)], true),
        blocked_delta(
            labels("web", None),
            &[("epoll_wait", 10, 1), ("futex", 5, 1)],
            false,
        ),
        blocked_delta(labels("job", Some(9)), &[("nanosleep", 7, 1)], true),
    ]);
    st.apply_blocked(vec![
        blocked_delta(labels("web", None), &[("epoll_wait", 1, 1)], true),
        blocked_delta(labels("job", Some(9)), &[("nanosleep", 3, 1)], false),
        blocked_delta(labels("idle", None), &[], true),
    ]);
    let web = &st.blocked_in[&labels("web", None)];
    assert_eq!(
        web["epoll_wait"],
        Blocked {
            ns: 111,
            switches: 4
        }
    );
    assert_eq!(web["futex"], Blocked { ns: 5, switches: 1 });
    assert!(
        !st.blocked_in.contains_key(&labels("job", Some(9))),
        "a per-pid series goes after its last interval"
    );
    assert!(!st.blocked_in.contains_key(&labels("idle", None)));
    assert!(!st.touched.contains_key(&labels("idle", None)));
    assert!(st.blocked_in_counted);
    // It expires with the label set's other families.
    st.apply([], SystemTotals::default());
    st.apply([], SystemTotals::default());
    assert_eq!(st.expire(1), 1);
    assert!(st.blocked_in.is_empty());
}
