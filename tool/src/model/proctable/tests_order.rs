//! Events out of order, the kernel's re-parenting, and the repair after lost events.
use proclens_common::lifecycle::exit_flags;

use super::repair::Missed;
use super::tests::*;
use super::*;

const DEAD: u32 = exit_flags::GROUP_DEAD;

#[test]
fn a_free_before_its_fork_leaves_nothing() {
    let (mut tab, parent) = seeded_parent();
    let child = t(500, 11 * SEC);
    let before = tab.len();
    assert!(apply(&mut tab, &free(12 * SEC, child)).is_empty());
    assert!(apply(&mut tab, &fork(11 * SEC, parent, child)).is_empty());
    assert_eq!(
        tab.len(),
        before,
        "the fork does not bring the freed task back"
    );
    assert_eq!(
        tab.fork_stats(&Key::from(&parent)).map(|s| s.processes),
        Some(1),
        "the fork still counts for its parent"
    );
}

#[test]
fn an_exec_before_its_fork_is_completed_by_the_fork() {
    let (mut tab, parent) = seeded_parent();
    let child = t(501, 11 * SEC);
    apply(&mut tab, &exec(11 * SEC + 5, child, ptr(child), "sleep"));
    assert_eq!(
        tab.get(&Key::from(&child)).unwrap().ppid,
        0,
        "no parent known yet"
    );
    apply(&mut tab, &fork(11 * SEC, parent, child));
    let p = tab.get(&Key::from(&child)).unwrap();
    assert_eq!(
        (
            p.ppid,
            p.parent,
            p.comm.as_str(),
            p.exe.as_deref(),
            p.forked
        ),
        (
            100,
            Some(Key::from(&parent)),
            "sleep",
            Some("/bin/sleep"),
            true
        )
    );
    apply(&mut tab, &exit(12 * SEC, child, parent, 0, DEAD));
    assert_eq!(tab.zombies(14 * SEC, SEC)[0].parent_comm, "parent");
    apply(&mut tab, &free(15 * SEC, child));
    assert_eq!(tab.len(), 2, "no leak");
}

#[test]
fn an_exit_and_free_before_the_fork_leave_nothing() {
    let (mut tab, parent) = seeded_parent();
    let child = t(502, 11 * SEC);
    apply(&mut tab, &exit(12 * SEC, child, parent, 0, DEAD));
    assert_eq!(tab.len(), 3, "the exit makes the entry");
    apply(&mut tab, &free(13 * SEC, child));
    assert_eq!(tab.len(), 2);
    apply(&mut tab, &fork(11 * SEC, parent, child));
    assert_eq!(tab.len(), 2, "the late fork brings nothing back");
    assert!(tab.zombies(20 * SEC, 0).is_empty());
}

#[test]
fn a_late_fork_of_a_freed_task_is_ignored_and_a_reused_address_is_a_new_process() {
    let (mut tab, parent) = seeded_parent();
    let child = t(503, 11 * SEC);
    // Its exec, exit and free all came before its fork.
    apply(&mut tab, &exec(11 * SEC + 1, child, ptr(child), "true"));
    apply(&mut tab, &exit(11 * SEC + 2, child, parent, 0, DEAD));
    apply(&mut tab, &free(11 * SEC + 3, child));
    apply(&mut tab, &fork(11 * SEC, parent, child));
    assert!(tab.get(&Key::from(&child)).is_none());
    assert_eq!(tab.len(), 2);
    // The same address given to a task forked after the free is another process.
    let Event::Fork(mut f) = fork(12 * SEC, parent, t(504, 12 * SEC)) else {
        unreachable!()
    };
    f.child_ptr = ptr(child);
    apply(&mut tab, &Event::Fork(f));
    assert_eq!(
        tab.live_by_pid(504),
        Some(Key {
            tgid: 504,
            start_ns: 12 * SEC
        })
    );
}

#[test]
fn an_exit_before_its_fork_stays_dead() {
    let (mut tab, parent) = seeded_parent();
    let child = t(505, 11 * SEC);
    apply(&mut tab, &exit(12 * SEC, child, parent, 0, DEAD));
    assert!(apply(&mut tab, &fork(11 * SEC, parent, child)).is_empty());
    let p = tab.get(&Key::from(&child)).unwrap();
    assert!(p.death.is_some(), "the fork does not bring it back to life");
    assert!(p.forked);
    apply(&mut tab, &free(13 * SEC, child));
    assert!(tab.get(&Key::from(&child)).is_none(), "freed: no leak");
}

/// A subreaper S forks P, P forks Z; Z dies, then P dies without waiting: the kernel
/// hands Z to S (the exit event names S), and the zombie is S's to reap.
#[test]
fn a_zombie_orphaned_under_a_subreaper_is_blamed_on_the_subreaper() {
    let (mut tab, s) = seeded_parent();
    let p = t(600, 11 * SEC);
    let z = t(601, 11 * SEC + 1);
    let live = t(602, 11 * SEC + 2);
    apply(&mut tab, &fork(11 * SEC, s, p));
    apply(&mut tab, &fork(11 * SEC + 1, p, z));
    apply(&mut tab, &fork(11 * SEC + 2, p, live));
    apply(&mut tab, &exit(12 * SEC, z, p, 0, DEAD));
    assert_eq!(tab.zombies(13 * SEC, SEC)[0].ppid, 600);
    let n = apply(&mut tab, &exit_to(13 * SEC, p, s, 0, DEAD, s));
    assert_eq!(
        n,
        vec![Notice::Orphaned {
            parent: Key::from(&p),
            parent_comm: "child".into(),
            children: vec![Key::from(&z), Key::from(&live)],
            heir: Some(Heir {
                tgid: 100,
                key: Some(Key::from(&s)),
                comm: "parent".into()
            }),
        }]
    );
    let zs = tab.zombies(14 * SEC, SEC);
    let blamed: Vec<(u32, u32, &str)> = zs
        .iter()
        .map(|z| (z.key.tgid, z.ppid, z.parent_comm.as_str()))
        .collect();
    // P is a zombie of S's too now.
    assert_eq!(blamed, [(601, 100, "parent"), (600, 100, "parent")]);
    assert_eq!(tab.zombies_per_parent(14 * SEC, SEC).get(&100), Some(&2));
    assert_eq!(tab.get(&Key::from(&live)).unwrap().ppid, 100);
    assert_eq!(tab.children_of(100), 3);
    // S waits: it reaps what it inherited.
    apply(&mut tab, &wait(15 * SEC, s, 0, Some(z)));
    assert!(
        tab.zombies(15 * SEC, 0)
            .iter()
            .all(|x| x.key != Key::from(&z))
    );
}

/// A pid namespace's init I: a grandchild orphaned inside goes to I (the exit names it);
/// when I itself dies, its children stay its own (the kernel kills and reaps them).
#[test]
fn a_pid_namespace_init_inherits_and_keeps_its_orphans() {
    let (mut tab, outside) = seeded_parent();
    let init = t(700, 11 * SEC);
    let p = t(701, 11 * SEC + 1);
    let z = t(702, 11 * SEC + 2);
    apply(&mut tab, &fork(11 * SEC, outside, init));
    apply(&mut tab, &fork(11 * SEC + 1, init, p));
    apply(&mut tab, &fork(11 * SEC + 2, p, z));
    apply(&mut tab, &exit(12 * SEC, z, p, 0, DEAD));
    apply(&mut tab, &exit_to(12 * SEC + 1, p, init, 0, DEAD, init));
    let blame: Vec<u32> = tab.zombies(14 * SEC, SEC).iter().map(|z| z.ppid).collect();
    assert_eq!(blame, [700, 700]);
    // The init dies: it is its own heir; its children do not move.
    let n = apply(&mut tab, &exit_to(15 * SEC, init, outside, 9, DEAD, init));
    assert!(matches!(&n[..], [Notice::Orphaned { heir: Some(h), .. }] if h.tgid == 700));
    assert!(
        tab.zombies(16 * SEC, 0)
            .iter()
            .any(|x| x.key == Key::from(&z) && x.ppid == 700)
    );
}

/// The kernel could not be read for the heir: the notice asks the caller, which reads
/// the new parent and re-parents.
#[test]
fn an_unknown_heir_is_left_to_the_caller() {
    let (mut tab, parent) = seeded_parent();
    let mid = t(800, 11 * SEC);
    let grandchild = t(801, 11 * SEC + 1);
    apply(&mut tab, &fork(11 * SEC, parent, mid));
    apply(&mut tab, &fork(11 * SEC + 1, mid, grandchild));
    let n = apply(&mut tab, &exit(12 * SEC, mid, parent, 0, DEAD));
    assert!(
        matches!(&n[..], [Notice::Orphaned { heir: None, children, .. }] if children[..] == [Key::from(&grandchild)])
    );
    assert_eq!(
        tab.get(&Key::from(&grandchild)).unwrap().ppid,
        800,
        "not moved"
    );
    assert_eq!(tab.reparent(Key::from(&grandchild), 1), tab.live_by_pid(1));
    assert_eq!(tab.get(&Key::from(&grandchild)).unwrap().ppid, 1);
}

/// After lost events, the full check: a process whose exit was lost is a zombie (dated
/// from the check, a lower bound); one whose exit and free were lost is gone; one whose
/// fork and exit were lost is added; one whose parent's exit was lost has its new parent.
#[test]
fn a_check_after_lost_events_repairs_what_they_carried() {
    let (mut tab, parent) = seeded_parent();
    let (lost_exit, lost_all, reparented) = (t(900, 11 * SEC), t(901, 11 * SEC), t(902, 11 * SEC));
    for k in [lost_exit, lost_all, reparented] {
        apply(&mut tab, &fork(11 * SEC, parent, k));
    }
    let tick = |k: TaskRef| k.start_ns / TICK;
    let scan = [
        seed(1, 0, 0, "init"),
        seed(100, 1, 5, "parent"),
        SeedProc {
            zombie: true,
            exit_code: 4 << 8,
            ..seed(900, 100, tick(lost_exit), "child")
        },
        seed(902, 1, tick(reparented), "child"),
        SeedProc {
            zombie: true,
            ..seed(903, 100, 1150, "unseen")
        },
    ];
    let mut n = Vec::new();
    let repairs = tab.reconcile(12 * SEC, &scan, Missed::Repair, &mut n);
    assert_eq!(repairs, 4);
    assert_eq!(tab.repairs(), 4);
    assert!(tab.get(&Key::from(&lost_all)).is_none());
    assert_eq!(tab.get(&Key::from(&reparented)).unwrap().ppid, 1);
    let zs = tab.zombies(15 * SEC, 0);
    let found: Vec<(u32, u64, Dated, ExitStatus)> = zs
        .iter()
        .map(|z| (z.key.tgid, z.age_ns, z.dated, z.status))
        .collect();
    assert_eq!(
        found,
        [
            (900, 3 * SEC, Dated::AtLeast, ExitStatus::Code(4)),
            (903, 3 * SEC, Dated::AtLeast, ExitStatus::Code(0)),
        ]
    );
    assert_eq!(zs[1].parent_comm, "parent");
    // Nothing more to repair the second time.
    assert_eq!(tab.reconcile(13 * SEC, &scan, Missed::Repair, &mut n), 0);
}
