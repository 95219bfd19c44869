//! The process table against hand-made event sequences.
use proclens_common::{
    event::{EventHeader, kind},
    lifecycle::{Exec, Exit, Free, Wait},
};

use super::*;

const TICK: u64 = 10_000_000;
const SEC: u64 = 1_000_000_000;

fn t(pid: u32, start_ns: u64) -> TaskRef {
    TaskRef {
        pid,
        tgid: pid,
        start_ns,
    }
}

/// A made-up `task_struct` address for the leader of `t`'s process, unique per test task.
fn ptr(t: TaskRef) -> u64 {
    (u64::from(t.pid) << 40) ^ t.start_ns
}

fn comm(s: &str) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..s.len()].copy_from_slice(s.as_bytes());
    c
}

fn fork(ts: u64, parent: TaskRef, child: TaskRef) -> Event {
    Event::Fork(Fork {
        header: EventHeader {
            kind: kind::FORK,
            tid: child.pid,
            ts,
        },
        creator: parent,
        child,
        parent,
        child_ptr: ptr(child),
        comm: comm("child"),
        ..Default::default()
    })
}

fn exit(ts: u64, task: TaskRef, parent: TaskRef, code: u32, flags: u32) -> Event {
    Event::Exit(Exit {
        header: EventHeader {
            kind: kind::EXIT,
            tid: task.pid,
            ts,
        },
        task,
        parent,
        exit_code: code,
        flags,
        leader_ptr: ptr(TaskRef {
            pid: task.tgid,
            ..task
        }),
        comm: comm("child"),
    })
}

/// The free of the leader task of `task`'s process (the free names only its address).
fn free(ts: u64, task: TaskRef) -> Event {
    free_ptr(ts, ptr(task))
}

fn free_ptr(ts: u64, task_ptr: u64) -> Event {
    Event::Free(Free {
        header: EventHeader {
            kind: kind::FREE,
            tid: 0,
            ts,
        },
        task_ptr,
    })
}

/// Applies `ev`, returning what the table noticed.
fn apply(tab: &mut ProcTable, ev: &Event) -> Vec<Notice> {
    let mut notices = Vec::new();
    tab.apply(ev, &mut notices);
    notices
}

fn seeded_parent() -> (ProcTable, TaskRef) {
    let mut tab = ProcTable::new(TICK);
    // The parent was seen in /proc at start-up: its start is known to a tick.
    tab.seed(
        &[
            SeedProc {
                pid: 1,
                ppid: 0,
                start_ticks: 0,
                comm: "init".into(),
                zombie: false,
                exit_code: 0,
            },
            SeedProc {
                pid: 100,
                ppid: 1,
                start_ticks: 5,
                comm: "parent".into(),
                zombie: false,
                exit_code: 0,
            },
        ],
        10 * SEC,
    );
    (tab, t(100, 5 * TICK + 1234))
}

#[test]
fn zombies_are_blamed_on_their_parent_and_age() {
    let (mut tab, parent) = seeded_parent();
    for i in 0..3u32 {
        let child = t(200 + i, 11 * SEC + u64::from(i));
        apply(&mut tab, &fork(11 * SEC + u64::from(i), parent, child));
        apply(
            &mut tab,
            &exit(
                12 * SEC + u64::from(i) * SEC,
                child,
                parent,
                (i + 1) << 8,
                exit_flags::GROUP_DEAD,
            ),
        );
    }
    // At 14.5 s: ages 2.5, 1.5, 0.5 s; min age 1 s keeps two.
    let z = tab.zombies(14 * SEC + SEC / 2, SEC);
    assert_eq!(z.len(), 2);
    assert!(z.iter().all(|z| z.ppid == 100 && z.parent_comm == "parent"));
    assert_eq!(
        (z[0].key.tgid, z[0].status, z[0].age_ns),
        (200, ExitStatus::Code(1), 2 * SEC + SEC / 2)
    );
    assert_eq!((z[1].key.tgid, z[1].status), (201, ExitStatus::Code(2)));
    assert_eq!(
        tab.zombies_per_parent(14 * SEC + SEC / 2, SEC).get(&100),
        Some(&2)
    );
    // The parent was re-keyed from its coarse seed: its fork stats are under the exact key.
    let s = tab.fork_stats(&Key::from(&parent)).unwrap();
    assert_eq!(
        (s.processes, s.threads, s.child_exits, s.child_failures),
        (3, 0, 3, 3)
    );
    // new_zombies reports each once.
    assert_eq!(
        tab.new_zombies(15 * SEC, SEC, |_| KernelState::Zombie)
            .len(),
        3
    );
    assert!(
        tab.new_zombies(16 * SEC, SEC, |_| KernelState::Zombie)
            .is_empty()
    );
    // Reaped: freed, gone, with how long they were dead.
    let n = apply(&mut tab, &free(20 * SEC, t(200, 11 * SEC)));
    assert!(matches!(&n[..], [Notice::Reaped { dead_for_ns: Some(d), .. }] if *d == 8 * SEC));
    apply(&mut tab, &free(20 * SEC, t(201, 11 * SEC + 1)));
    apply(&mut tab, &free(20 * SEC, t(202, 11 * SEC + 2)));
    assert!(tab.zombies(30 * SEC, 0).is_empty());
    assert_eq!(tab.len(), 2, "only init and the parent remain");
    assert_eq!(tab.children_of(100), 0);
}

#[test]
fn prune_drops_what_the_kernel_no_longer_has() {
    let (mut tab, parent) = seeded_parent();
    let gone = t(800, 11 * SEC);
    apply(&mut tab, &fork(11 * SEC, parent, gone));
    apply(&mut tab, &fork(11 * SEC, gone, t(801, 11 * SEC + 1)));
    assert_eq!(tab.len(), 4);
    assert_eq!(tab.prune(|k| k.tgid != 800), 1);
    assert_eq!(tab.len(), 3);
    assert!(tab.all_fork_stats().all(|(k, _)| k.tgid != 800));
}

#[test]
fn autoreaped_children_are_never_zombies() {
    let (mut tab, parent) = seeded_parent();
    let child = t(300, 11 * SEC);
    apply(&mut tab, &fork(11 * SEC, parent, child));
    apply(
        &mut tab,
        &exit(
            11 * SEC,
            child,
            parent,
            0,
            exit_flags::GROUP_DEAD | exit_flags::AUTOREAP,
        ),
    );
    assert!(tab.zombies(100 * SEC, 0).is_empty());
    assert!(
        tab.new_zombies(100 * SEC, 0, |_| KernelState::Zombie)
            .is_empty()
    );
}

#[test]
fn pid_reuse_before_free_keeps_processes_apart() {
    let (mut tab, parent) = seeded_parent();
    let old = t(400, 11 * SEC);
    let new = t(400, 11 * SEC + 500);
    apply(&mut tab, &fork(11 * SEC, parent, old));
    apply(
        &mut tab,
        &exit(11 * SEC + 100, old, parent, 9, exit_flags::GROUP_DEAD),
    );
    // Reaped (not yet freed) and the pid already reused.
    apply(&mut tab, &fork(11 * SEC + 500, parent, new));
    assert_eq!(tab.live_by_pid(400), Some(Key::from(&new)));
    apply(&mut tab, &free(11 * SEC + 900, old));
    assert!(
        tab.get(&Key::from(&new)).is_some_and(|p| p.death.is_none()),
        "the new process survives the old one's free"
    );
    assert!(tab.get(&Key::from(&old)).is_none());
    // The old one died of SIGKILL.
    assert_eq!(
        ExitStatus::from_raw(9),
        ExitStatus::Signal {
            signal: 9,
            core_dumped: false
        }
    );
}

#[test]
fn zombies_present_at_start_up_are_reported_with_a_lower_bound_age() {
    let mut tab = ProcTable::new(TICK);
    tab.seed(
        &[
            SeedProc {
                pid: 50,
                ppid: 1,
                start_ticks: 3,
                comm: "lazy".into(),
                zombie: false,
                exit_code: 0,
            },
            SeedProc {
                pid: 51,
                ppid: 50,
                start_ticks: 4,
                comm: "z".into(),
                zombie: true,
                exit_code: 7 << 8,
            },
        ],
        10 * SEC,
    );
    let z = tab.zombies(11 * SEC, SEC);
    assert_eq!(z.len(), 1);
    assert_eq!(
        (z[0].key.tgid, z[0].ppid, z[0].parent_comm.as_str()),
        (51, 50, "lazy")
    );
    assert_eq!(
        (z[0].status, z[0].age_ns, z[0].age_exact),
        (ExitStatus::Code(7), SEC, false)
    );
    // No event named its task, so its free matches nothing; that free (among others)
    // makes the caller ask /proc, which no longer shows it.
    assert!(apply(&mut tab, &free(12 * SEC, t(51, 4 * TICK + 77))).is_empty());
    assert_eq!(tab.take_unmatched_free(), Some(12 * SEC));
    assert_eq!(tab.take_unmatched_free(), None, "taken");
    assert!(tab.release_seeded_zombies(12 * SEC, |_| false).is_empty());
    let n = tab.release_seeded_zombies(12 * SEC, |k| k.tgid == 51);
    assert!(matches!(
        &n[..],
        [Notice::Reaped {
            dead_for_ns: None,
            at_ns,
            ..
        }] if *at_ns == 12 * SEC
    ));
    assert!(tab.zombies(13 * SEC, 0).is_empty());
    // With no zombie from the seed left, unmatched frees (threads') ask nothing.
    apply(&mut tab, &free_ptr(14 * SEC, 0xdead));
    assert_eq!(tab.take_unmatched_free(), None);
}

#[test]
fn a_child_both_seeded_and_forked_is_one_process() {
    let (mut tab, parent) = seeded_parent();
    // Born after attaching, before the scan: /proc showed it, and its fork is queued.
    let child = t(600, 10 * SEC - 3);
    tab.seed(
        &[SeedProc {
            pid: 600,
            ppid: 100,
            start_ticks: child.start_ns / TICK,
            comm: "c".into(),
            zombie: false,
            exit_code: 0,
        }],
        10 * SEC,
    );
    assert_eq!(tab.len(), 3);
    apply(&mut tab, &fork(10 * SEC - 3, parent, child));
    assert_eq!(tab.len(), 3, "no duplicate entry");
    apply(
        &mut tab,
        &exit(11 * SEC, child, parent, 0, exit_flags::GROUP_DEAD),
    );
    apply(&mut tab, &free(12 * SEC, child));
    assert_eq!(tab.len(), 2, "no leak");
}

#[test]
fn statistics_of_a_process_unknown_to_the_table_go_with_its_free() {
    let mut tab = ProcTable::new(TICK);
    let ghost = t(700, 5 * SEC);
    apply(&mut tab, &fork(6 * SEC, ghost, t(701, 6 * SEC)));
    assert_eq!(tab.all_fork_stats().count(), 1);
    // Its exit names its leader task, so its free finds it.
    apply(
        &mut tab,
        &exit(6 * SEC + 5, ghost, t(1, 0), 0, exit_flags::GROUP_DEAD),
    );
    apply(&mut tab, &free(7 * SEC, ghost));
    assert_eq!(tab.all_fork_stats().count(), 0);
}

#[test]
fn a_thread_that_execs_takes_over_the_leader_and_the_old_leaders_free_kills_nothing() {
    let (mut tab, parent) = seeded_parent();
    let p = t(900, 11 * SEC);
    apply(&mut tab, &fork(11 * SEC, parent, p));
    let (old_leader, new_leader) = (ptr(p), 0xbeef_0000);
    let exec = |tab: &mut ProcTable| {
        let mut e = Exec {
            header: EventHeader {
                kind: kind::EXEC,
                tid: 900,
                ts: 12 * SEC,
            },
            task: p,
            old_pid: 905,
            task_ptr: new_leader,
            ..Default::default()
        };
        e.comm = comm("newprog");
        apply(tab, &Event::Exec(Box::new(e)));
    };
    // The old leader is released during the exec; its free may come before the exec's
    // event (an RCU grace period can pass while the new program loads) or after it.
    assert!(apply(&mut tab, &free_ptr(12 * SEC, old_leader)).is_empty());
    assert!(tab.get(&Key::from(&p)).is_some_and(|q| q.death.is_none()));
    exec(&mut tab);
    assert!(apply(&mut tab, &free_ptr(12 * SEC, old_leader)).is_empty());
    assert_eq!(tab.live_by_pid(900), Some(Key::from(&p)));
    assert_eq!(tab.get(&Key::from(&p)).unwrap().comm, "newprog");
    // Its death and free go by the new leader.
    let Event::Exit(mut x) = exit(13 * SEC, p, parent, 0, exit_flags::GROUP_DEAD) else {
        unreachable!()
    };
    x.leader_ptr = new_leader;
    apply(&mut tab, &Event::Exit(x));
    let n = apply(&mut tab, &free_ptr(14 * SEC, new_leader));
    assert!(matches!(&n[..], [Notice::Reaped { .. }]));
    assert!(tab.get(&Key::from(&p)).is_none());
}

#[test]
fn live_processes_gone_unseen_are_swept_and_named_ones_kept() {
    let (mut tab, parent) = seeded_parent();
    // 100 (the parent) was only seeded: no event named its task. A child forked in view
    // was named by its fork.
    let child = t(950, 11 * SEC);
    apply(&mut tab, &fork(11 * SEC, parent, child));
    assert_eq!(
        tab.sweep_unnamed(|k| k.tgid == 950),
        0,
        "named: its free will come"
    );
    assert_eq!(tab.sweep_unnamed(|k| k.tgid == 100), 1);
    assert!(tab.get(&Key::from(&parent)).is_none());
    assert_eq!(tab.len(), 2, "init and the child");
    // A named process whose leader's free came while it seemed alive (its exit was
    // outside a cgroup filter, or lost) is unnamed from then on, and swept.
    apply(&mut tab, &free(12 * SEC, child));
    assert_eq!(tab.sweep_unnamed(|k| k.tgid == 950), 1);
    assert_eq!(tab.len(), 1);
}

#[test]
fn a_parent_dying_with_live_children_orphans_them() {
    let (mut tab, parent) = seeded_parent();
    let mid = t(500, 11 * SEC);
    let grandchild = t(501, 11 * SEC + 1);
    apply(&mut tab, &fork(11 * SEC, parent, mid));
    apply(&mut tab, &fork(11 * SEC + 1, mid, grandchild));
    let n = apply(
        &mut tab,
        &exit(12 * SEC, mid, parent, 0, exit_flags::GROUP_DEAD),
    );
    assert_eq!(
        n,
        vec![Notice::Orphaned {
            parent: Key::from(&mid),
            parent_comm: "child".into(),
            children: vec![Key::from(&grandchild)]
        }]
    );
    assert_eq!(tab.reparent(Key::from(&grandchild), 1), tab.live_by_pid(1));
    assert_eq!(tab.get(&Key::from(&grandchild)).unwrap().ppid, 1);
    // Thread exits (not group-dead) and waits change no process.
    let th = TaskRef {
        pid: 502,
        tgid: 100,
        start_ns: parent.start_ns,
    };
    assert!(apply(&mut tab, &exit(13 * SEC, th, t(1, 0), 0, 0)).is_empty());
    apply(
        &mut tab,
        &Event::Wait(Wait {
            header: EventHeader {
                kind: kind::WAIT,
                tid: 100,
                ts: 0,
            },
            waiter: parent,
            target_pid: 0,
            _pad: 0,
        }),
    );
    assert_eq!(tab.fork_stats(&Key::from(&parent)).unwrap().waits, 1);
}

#[test]
fn released_but_unfreed_processes_are_swept_after_the_grace() {
    let mut table = ProcTable::new(TICK);
    let parent = t(100, 5 * SEC);
    for (pid, start) in [(101, 6 * SEC), (102, 7 * SEC)] {
        apply(&mut table, &fork(start, parent, t(pid, start)));
        apply(
            &mut table,
            &exit(8 * SEC, t(pid, start), parent, 0, exit_flags::GROUP_DEAD),
        );
    }
    // 102 is still a zombie in the kernel's view; 101 was reaped (gone from /proc).
    let released = |k: &Key| k.tgid == 101;
    assert!(table.sweep_released(9 * SEC, 2 * SEC, released).is_empty());
    assert_eq!(table.len(), 2, "within the grace nothing goes");
    let n = table.sweep_released(11 * SEC, 2 * SEC, released);
    assert!(
        n.is_empty(),
        "101 was never reported as a zombie: no notice"
    );
    assert_eq!(table.len(), 1);
    assert_eq!(table.zombies(11 * SEC, 0).len(), 1, "the real zombie stays");
    // A reported zombie gets its reaped notice when swept.
    assert_eq!(
        table
            .new_zombies(11 * SEC, SEC, |_| KernelState::Zombie)
            .len(),
        1
    );
    let n = table.sweep_released(12 * SEC, 2 * SEC, |_| true);
    assert!(matches!(
        n.as_slice(),
        [Notice::Reaped { proc: p, dead_for_ns: Some(d), .. }] if p.key.tgid == 102 && *d == 4 * SEC
    ));
    assert!(table.is_empty());
}

#[test]
fn released_candidates_are_forgotten_and_dying_ones_asked_again() {
    let (mut tab, parent) = seeded_parent();
    let kids: Vec<TaskRef> = (0..3u32)
        .map(|i| t(300 + i, 11 * SEC + u64::from(i)))
        .collect();
    for k in &kids {
        apply(&mut tab, &fork(11 * SEC, parent, *k));
        apply(
            &mut tab,
            &exit(12 * SEC, *k, parent, 0, exit_flags::GROUP_DEAD),
        );
    }
    // 300 is a zombie, 301 already reaped (its free is late), 302 still being reaped.
    let asked = std::cell::RefCell::new(Vec::new());
    let state = |k: &Key| {
        asked.borrow_mut().push(k.tgid);
        match k.tgid {
            300 => KernelState::Zombie,
            301 => KernelState::Released,
            _ => KernelState::Dying,
        }
    };
    let z = tab.new_zombies(14 * SEC, SEC, state);
    assert_eq!(z.iter().map(|z| z.key.tgid).collect::<Vec<_>>(), [300]);
    assert_eq!(*asked.borrow(), [300, 301, 302]);
    assert!(tab.get(&Key::from(&kids[1])).is_none(), "301 is forgotten");
    // Next time only the dying one is asked about again.
    asked.borrow_mut().clear();
    assert!(tab.new_zombies(15 * SEC, SEC, state).is_empty());
    assert_eq!(*asked.borrow(), [302]);
    // 301's late free matches nothing; 300's gives its reaped notice.
    assert!(apply(&mut tab, &free(16 * SEC, kids[1])).is_empty());
    let n = apply(&mut tab, &free(16 * SEC, kids[0]));
    assert!(matches!(&n[..], [Notice::Reaped { proc, .. }] if proc.key.tgid == 300));
}

/// Every free makes a reaped notice; it says whether the zombie was reported, by which
/// readers that show only those (`zombies`, `top`) keep theirs.
#[test]
fn reap_notices_say_whether_the_zombie_was_reported() {
    let (mut tab, parent) = seeded_parent();
    let (quick, slow) = (t(400, 11 * SEC), t(401, 11 * SEC + 1));
    for k in [quick, slow] {
        apply(&mut tab, &fork(11 * SEC, parent, k));
        apply(
            &mut tab,
            &exit(12 * SEC, k, parent, 0, exit_flags::GROUP_DEAD),
        );
    }
    let n = apply(&mut tab, &free(12 * SEC + 1000, quick));
    assert!(
        matches!(&n[..], [Notice::Reaped { proc, .. }] if proc.key.tgid == 400 && !proc.reported)
    );
    assert_eq!(
        tab.new_zombies(14 * SEC, SEC, |_| KernelState::Zombie)
            .len(),
        1
    );
    let n = apply(&mut tab, &free(15 * SEC, slow));
    assert!(
        matches!(&n[..], [Notice::Reaped { proc, .. }] if proc.key.tgid == 401 && proc.reported)
    );
    assert_eq!(tab.len(), 2, "both freed all the same");
}

/// Events of two CPUs merged by time per drain: one read a moment late comes a drain
/// after what followed it.
#[test]
fn an_exit_before_its_fork_stays_dead_and_a_fork_after_its_parents_exit_is_an_orphan() {
    let (mut tab, parent) = seeded_parent();
    let child = t(500, 11 * SEC);
    apply(
        &mut tab,
        &exit(12 * SEC, child, parent, 0, exit_flags::GROUP_DEAD),
    );
    assert!(apply(&mut tab, &fork(11 * SEC, parent, child)).is_empty());
    let p = tab.get(&Key::from(&child)).unwrap();
    assert!(p.death.is_some(), "the fork does not bring it back to life");
    let n = apply(&mut tab, &free(13 * SEC, child));
    assert!(matches!(&n[..], [Notice::Reaped { .. }]));
    assert!(tab.get(&Key::from(&child)).is_none(), "freed: no leak");

    // The parent's exit came first: its child, forked just before, is an orphan.
    let mid = t(600, 14 * SEC);
    let grandchild = t(601, 15 * SEC);
    apply(&mut tab, &fork(14 * SEC, parent, mid));
    apply(
        &mut tab,
        &exit(16 * SEC, mid, parent, 0, exit_flags::GROUP_DEAD),
    );
    let n = apply(&mut tab, &fork(15 * SEC, mid, grandchild));
    assert!(
        matches!(&n[..], [Notice::Orphaned { parent, children, .. }]
            if *parent == Key::from(&mid) && children[..] == [Key::from(&grandchild)]),
        "{n:?}"
    );
}
