//! The cardinality cap's tests: what folds where, what is counted, what stays under the cap.

use super::{
    tests::{labels, proc_delta, sendfile_path},
    *,
};
use crate::model::{
    exporter::cardinality::{BLOCKED_SERIES, OTHER, RESERVE, SET_SERIES},
    parent_info::CgroupPids,
};

/// The smallest cap with room for `n` series of new label sets (beside the fixed
/// families, the catch-all's room and the tenth kept for folds), and not for 3 more.
#[allow(
    clippy::maybe_infinite_iter,
    reason = "m - m / 10 grows without bound, so the search ends"
)]
fn cap_for(n: usize) -> usize {
    let base =
        3 + 1 + 1 + KernelDrops::REASONS + HostGauges::SERIES + host::SELF_SERIES + RESERVE + n;
    let max = (base..).find(|m| m - m / 10 >= base).unwrap();
    assert!(max - max / 10 < base + 3);
    max
}

fn row(l: Labels, d: &Counts) -> LabelledDelta<'_> {
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
        names
            .iter()
            .map(|n| row(Labels::new(n, &[("cgroup", cgroup)]), &d)),
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
        st.series
            .contains_key(&Labels::new(OTHER, &[("cgroup", "/a")])),
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

fn shown_cgroups(st: &ExporterState) -> Vec<&str> {
    st.zombie_cgroups
        .iter()
        .map(|c| c.cgroup.as_str())
        .collect()
}

#[test]
fn zombie_cgroups_past_the_cap_are_left_out_fewest_pids_left_first() {
    let max = cap_for(2);
    let mut st = ExporterState::with_max_series(max);
    let c = |name: &str, current, max| CgroupPids {
        cgroup: name.into(),
        current,
        max,
    };
    st.apply_extras(ExtrasDelta {
        zombie_cgroups: vec![
            c("/unlimited", 5, None),
            c("/roomy", 5, Some(1000)),
            c("/tight", 60, Some(64)),
            c("/tight", 60, Some(64)),
        ],
        ..ExtrasDelta::default()
    });
    // Two series for a limited cgroup, one for an unlimited one: the tight one first,
    // and not all three (five series).
    let shown = shown_cgroups(&st);
    assert!(shown[0] == "/tight" && shown.len() < 3, "{shown:?}");
    assert!(st.series_count() <= max, "{} > {max}", st.series_count());
    // What comes after in the same collection counts them: new label sets fold.
    let d = Counts {
        voluntary: 1,
        ..Counts::default()
    };
    let names: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
    st.apply(
        names
            .iter()
            .map(|n| row(Labels::new(n, &[("cgroup", "/x")]), &d)),
        SystemTotals::default(),
    );
    assert!(st.series_count() <= max, "{} > {max}", st.series_count());
    // Without a cap, all of them, once each.
    let mut st = ExporterState::default();
    st.apply_extras(ExtrasDelta {
        zombie_cgroups: vec![c("/a", 1, None), c("/b", 9, Some(10)), c("/a", 1, None)],
        ..ExtrasDelta::default()
    });
    assert_eq!(shown_cgroups(&st), ["/b", "/a"]);
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

/// Issue 21: the syscalls blocked in are charged one by one as they show up; past the cap
/// they go to the catch-all under the same syscall label, which has room for them all.
#[test]
fn syscalls_blocked_in_past_the_cap_go_to_the_catch_all() {
    let max = cap_for(SET_SERIES + BLOCKED_SERIES);
    let mut st = ExporterState::with_max_series(max);
    let b = |ns| Blocked { ns, switches: 1 };
    let web = labels("web", None);
    st.apply_blocked(vec![BlockedDelta {
        labels: web.clone(),
        syscalls: vec![("epoll_wait", b(10)), ("futex", b(3))],
        alive: true,
    }]);
    // The set and its first syscall fit, its second does not.
    assert_eq!(st.blocked_in[&web].len(), 1, "{:?}", st.blocked_in);
    assert_eq!(st.blocked_in[&web]["epoll_wait"], b(10));
    let other = Labels::new(OTHER, &[("cgroup", OTHER)]);
    assert_eq!(st.blocked_in[&other]["futex"], b(3));
    assert!(st.series_count() <= max, "{} > {max}", st.series_count());
    // Every label of every set past the cap: still under it, nothing lost.
    let all: Vec<(&'static str, Blocked)> = (0..u32::from(u16::MAX))
        .map(blocked::syscall_label)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|l| (l, b(1)))
        .collect();
    for name in ["db", "cache", "web"] {
        st.apply_blocked(vec![BlockedDelta {
            labels: labels(name, None),
            syscalls: all.clone(),
            alive: true,
        }]);
    }
    assert!(st.series_count() <= max, "{} > {max}", st.series_count());
    let total: u64 = st
        .blocked_in
        .values()
        .flat_map(|s| s.values())
        .map(|b| b.ns)
        .sum();
    assert_eq!(
        total,
        13 + 3 * all.len() as u64,
        "no blocked time lost by folding"
    );
}
