//! The process table against hand-made event sequences.
use proclens_common::{
    event::{EventHeader, kind},
    lifecycle::{Exec, Exit, Fork, Free, Wait, exit_flags},
};
use rustc_hash::FxHashSet;

use super::repair::Missed;
use super::*;

pub(super) const TICK: u64 = 10_000_000;
pub(super) const SEC: u64 = 1_000_000_000;

pub(super) fn t(pid: u32, start_ns: u64) -> TaskRef {
    TaskRef {
        pid,
        tgid: pid,
        start_ns,
    }
}

/// A made-up `task_struct` address for the leader of `t`'s process, unique per test task.
pub(super) fn ptr(t: TaskRef) -> u64 {
    (u64::from(t.pid) << 40) ^ t.start_ns
}

pub(super) fn comm(s: &str) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..s.len()].copy_from_slice(s.as_bytes());
    c
}

pub(super) fn fork(ts: u64, parent: TaskRef, child: TaskRef) -> Event {
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

pub(super) fn exit(ts: u64, task: TaskRef, parent: TaskRef, code: u32, flags: u32) -> Event {
    exit_to(ts, task, parent, code, flags, TaskRef::default())
}

/// An exit whose children the kernel hands to `reaper`.
pub(super) fn exit_to(
    ts: u64,
    task: TaskRef,
    parent: TaskRef,
    code: u32,
    flags: u32,
    reaper: TaskRef,
) -> Event {
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
        reaper,
    })
}

pub(super) fn wait(ts: u64, waiter: TaskRef, target_pid: u32, reaped: Option<TaskRef>) -> Event {
    wait_ptr(ts, waiter, target_pid, reaped.map_or(0, ptr))
}

/// A wait that reaps the zombie whose leader task is at `reaped_ptr` (0: none).
pub(super) fn wait_ptr(ts: u64, waiter: TaskRef, target_pid: u32, reaped_ptr: u64) -> Event {
    Event::Wait(Wait {
        header: EventHeader {
            kind: kind::WAIT,
            tid: waiter.pid,
            ts,
        },
        waiter,
        target_pid,
        _pad: 0,
        reaped_ptr,
    })
}

pub(super) fn exec(ts: u64, task: TaskRef, task_ptr: u64, name: &str) -> Event {
    let mut e = Exec {
        header: EventHeader {
            kind: kind::EXEC,
            tid: task.pid,
            ts,
        },
        task,
        task_ptr,
        ..Default::default()
    };
    e.comm = comm(name);
    e.filename[..name.len() + 5].copy_from_slice(format!("/bin/{name}").as_bytes());
    Event::Exec(Box::new(e))
}

/// The free of the leader task of `task`'s process (the free names only its address).
pub(super) fn free(ts: u64, task: TaskRef) -> Event {
    free_ptr(ts, ptr(task))
}

pub(super) fn free_ptr(ts: u64, task_ptr: u64) -> Event {
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
pub(super) fn apply(tab: &mut ProcTable, ev: &Event) -> Vec<Notice> {
    let mut notices = Vec::new();
    tab.apply(ev, &mut notices);
    notices
}

pub(super) fn seed(pid: u32, ppid: u32, start_ticks: u64, name: &str) -> SeedProc {
    SeedProc {
        pid,
        ppid,
        start_ticks,
        comm: name.into(),
        ..Default::default()
    }
}

pub(super) fn seeded_parent() -> (ProcTable, TaskRef) {
    let mut tab = ProcTable::new(TICK);
    // The parent was seen in /proc at start-up: its start is known to a tick.
    tab.seed(
        &[seed(1, 0, 0, "init"), seed(100, 1, 5, "parent")],
        10 * SEC,
    );
    (tab, t(100, 5 * TICK + 1234))
}

pub(super) fn pids(of: &[u32]) -> FxHashSet<u32> {
    of.iter().copied().collect()
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
        (z[0].key.tgid, z[0].status, z[0].age_ns, z[0].age_exact()),
        (200, ExitStatus::Code(1), 2 * SEC + SEC / 2, true)
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
    let mut n = Vec::new();
    assert_eq!(
        tab.new_zombies(15 * SEC, SEC, |_| KernelState::Zombie, &mut n)
            .len(),
        3
    );
    assert!(
        tab.new_zombies(16 * SEC, SEC, |_| KernelState::Zombie, &mut n)
            .is_empty()
    );
    // The parent waits: each wait names the zombie it reaps, and that is the reap time,
    // not the free that comes later.
    let n = apply(&mut tab, &wait(20 * SEC, parent, 0, Some(t(200, 11 * SEC))));
    assert!(
        matches!(&n[..], [Notice::Reaped { dead_for_ns: Some(d), at_ns, .. }] if *d == 8 * SEC && *at_ns == 20 * SEC),
        "{n:?}"
    );
    assert_eq!(
        tab.zombies(20 * SEC, 0).len(),
        2,
        "reaped: no zombie any more"
    );
    assert!(
        apply(&mut tab, &free(25 * SEC, t(200, 11 * SEC))).is_empty(),
        "its reap was told already"
    );
    // waitpid(201): the kernel names no task (no walk for one pid); it reaps 201.
    let n = apply(&mut tab, &wait(21 * SEC, parent, 201, None));
    assert!(
        matches!(&n[..], [Notice::Reaped { proc, at_ns, .. }] if proc.key.tgid == 201 && *at_ns == 21 * SEC),
        "{n:?}"
    );
    // A waitpid() of another process for the same pid reaps nothing of this one's.
    assert!(apply(&mut tab, &wait(21 * SEC, t(1, 0), 202, None)).is_empty());
    // Freed without a wait seen: reaped by the free at the latest.
    apply(&mut tab, &free(25 * SEC, t(201, 11 * SEC + 1)));
    let n = apply(&mut tab, &free(26 * SEC, t(202, 11 * SEC + 2)));
    assert!(matches!(&n[..], [Notice::Reaped { at_ns, .. }] if *at_ns == 26 * SEC));
    assert!(tab.zombies(30 * SEC, 0).is_empty());
    assert_eq!(tab.len(), 2, "only init and the parent remain");
    assert_eq!(tab.children_of(100), 0);
    assert_eq!(tab.fork_stats(&Key::from(&parent)).unwrap().waits, 2);
}

#[test]
fn a_parent_blocked_in_wait_reaps_as_the_child_dies() {
    let (mut tab, parent) = seeded_parent();
    let (a, b) = (t(300, 11 * SEC), t(301, 11 * SEC + 1));
    apply(&mut tab, &fork(11 * SEC, parent, a));
    apply(&mut tab, &fork(11 * SEC + 1, parent, b));
    // waitpid(301) blocks: a's death does not wake it for a, b's does.
    apply(&mut tab, &wait(12 * SEC, parent, 301, None));
    let waiting = exit_flags::GROUP_DEAD | exit_flags::PARENT_WAITING;
    apply(&mut tab, &exit(13 * SEC, a, parent, 0, waiting));
    let n = apply(&mut tab, &exit(14 * SEC, b, parent, 0, waiting));
    assert_eq!(
        tab.zombies(20 * SEC, 0).len(),
        1,
        "a is a zombie, b was reaped"
    );
    let reaped_b = tab.get(&Key::from(&b)).unwrap().reaped_ns;
    assert_eq!(reaped_b, Some(14 * SEC));
    // b's reap is told, as never reported: the reader decides whether it wants it.
    assert!(
        matches!(&n[..], [Notice::Reaped { proc, dead_for_ns: Some(0), .. }] if !proc.reported),
        "{n:?}"
    );
}

#[test]
fn a_reap_by_an_untraced_parent_counts_once_the_death_is_in() {
    let (mut tab, parent) = seeded_parent();
    let child = t(300, 11 * SEC);
    apply(&mut tab, &fork(11 * SEC, parent, child));
    // Before its death: nothing to reap.
    let mut n = Vec::new();
    tab.reaped_unseen(300, 12 * SEC, &mut n);
    assert!(n.is_empty() && tab.get(&Key::from(&child)).unwrap().reaped_ns.is_none());
    apply(
        &mut tab,
        &exit(13 * SEC, child, parent, 0, exit_flags::GROUP_DEAD),
    );
    assert_eq!(tab.zombies(14 * SEC, 0).len(), 1);
    tab.reaped_unseen(300, 14 * SEC, &mut n);
    tab.reaped_unseen(300, 15 * SEC, &mut n);
    assert!(tab.zombies(16 * SEC, 0).is_empty());
    assert_eq!(
        tab.get(&Key::from(&child)).unwrap().reaped_ns,
        Some(14 * SEC)
    );
    assert_eq!(n.len(), 1, "one reap: {n:?}");
    // Its free, later, adds nothing.
    let later = apply(&mut tab, &free(16 * SEC, child));
    assert!(later.is_empty(), "{later:?}");
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
    let mut n = Vec::new();
    assert!(
        tab.new_zombies(100 * SEC, 0, |_| KernelState::Zombie, &mut n)
            .is_empty()
    );
    assert_eq!(
        tab.get(&Key::from(&child)).unwrap().reaped_ns,
        Some(11 * SEC)
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
    apply(&mut tab, &wait(11 * SEC + 200, parent, 0, Some(old)));
    // Reaped (not yet freed) and the pid already reused.
    apply(&mut tab, &fork(11 * SEC + 500, parent, new));
    assert_eq!(tab.live_by_pid(400), Some(Key::from(&new)));
    apply(&mut tab, &free(11 * SEC + 900, old));
    assert!(
        tab.get(&Key::from(&new)).is_some_and(|p| p.death.is_none()),
        "the new process survives the old one's free"
    );
    assert!(tab.get(&Key::from(&old)).is_none());
    assert_eq!(
        ExitStatus::from_raw(9),
        ExitStatus::Signal {
            signal: 9,
            core_dumped: false
        }
    );
}

#[test]
fn zombies_present_at_start_up_are_dated_by_the_kernel_or_from_start_up() {
    let mut tab = ProcTable::new(TICK);
    let kernel = KernelSeed {
        start_ns: 4 * TICK + 77,
        task: 0xa51,
        died_ns: Some(6 * SEC),
    };
    tab.seed(
        &[
            seed(50, 1, 3, "lazy"),
            SeedProc {
                zombie: true,
                exit_code: 7 << 8,
                kernel: Some(kernel),
                ..seed(51, 50, 4, "z")
            },
            SeedProc {
                zombie: true,
                exit_code: 3 << 8,
                ..seed(52, 50, 4, "y")
            },
        ],
        10 * SEC,
    );
    let z = tab.zombies(11 * SEC, SEC);
    assert_eq!(z.len(), 2);
    let (dated, lower) = (&z[0], &z[1]);
    assert_eq!(
        (dated.key, dated.ppid, dated.parent_comm.as_str()),
        (
            Key {
                tgid: 51,
                start_ns: 4 * TICK + 77
            },
            50,
            "lazy"
        )
    );
    assert_eq!(
        (dated.status, dated.age_ns, dated.dated),
        (ExitStatus::Code(7), 5 * SEC, Dated::LastRan)
    );
    assert!(!dated.age_exact());
    assert_eq!(
        (lower.key.tgid, lower.age_ns, lower.dated),
        (52, SEC, Dated::AtLeast)
    );
    // The kernel named the dated one's task: its parent's wait names it too.
    let mut n = Vec::new();
    tab.new_zombies(11 * SEC, SEC, |_| KernelState::Zombie, &mut n);
    let mut n = apply(&mut tab, &wait_ptr(12 * SEC, t(50, 3 * TICK), 0, 0xa51));
    assert!(
        matches!(&n[..], [Notice::Reaped { proc, dead_for_ns: None, .. }] if proc.key.tgid == 51)
    );
    // The other one's reap is found by the check against /proc: 52 is no longer listed.
    let r = tab.check_pids(13 * SEC, &pids(&[50, 51]), 2 * SEC, Missed::Repair, &mut n);
    assert_eq!(r, 0, "a reap is no repair");
    assert!(tab.zombies(13 * SEC, 0).is_empty());
    assert!(
        matches!(n.last(), Some(Notice::Reaped { proc, at_ns, .. }) if proc.key.tgid == 52 && *at_ns == 13 * SEC)
    );
}

#[test]
fn a_child_both_seeded_and_forked_is_one_process() {
    let (mut tab, parent) = seeded_parent();
    // Born after attaching, before the scan: /proc showed it, and its fork is queued.
    let child = t(600, 10 * SEC - 3);
    tab.seed(&[seed(600, 100, child.start_ns / TICK, "c")], 10 * SEC);
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
    // The old leader is released during the exec; its free may come before the exec's
    // event (an RCU grace period can pass while the new program loads) or after it.
    assert!(apply(&mut tab, &free_ptr(12 * SEC, old_leader)).is_empty());
    assert!(tab.get(&Key::from(&p)).is_some_and(|q| q.death.is_none()));
    apply(&mut tab, &exec(12 * SEC + 1, p, new_leader, "newprog"));
    assert!(apply(&mut tab, &free_ptr(12 * SEC + 2, old_leader)).is_empty());
    assert_eq!(tab.live_by_pid(900), Some(Key::from(&p)));
    assert_eq!(tab.get(&Key::from(&p)).unwrap().comm, "newprog");
    // Its death and free go by the new leader.
    let Event::Exit(mut x) = exit(13 * SEC, p, parent, 0, exit_flags::GROUP_DEAD) else {
        unreachable!()
    };
    x.leader_ptr = new_leader;
    apply(&mut tab, &Event::Exit(x));
    apply(&mut tab, &free_ptr(14 * SEC, new_leader));
    assert!(tab.get(&Key::from(&p)).is_none());
}

/// The check every period: live processes /proc no longer lists are gone (a repair:
/// their exit never came), or expected gone under a cgroup filter.
#[test]
fn live_processes_gone_unseen_are_repaired() {
    let (mut tab, parent) = seeded_parent();
    let child = t(950, 11 * SEC);
    apply(&mut tab, &fork(11 * SEC, parent, child));
    let mut n = Vec::new();
    // A process forked after the scan is not judged by it.
    let late = t(951, 13 * SEC);
    apply(&mut tab, &fork(13 * SEC, parent, late));
    assert_eq!(
        tab.check_pids(12 * SEC, &pids(&[1, 100]), 2 * SEC, Missed::Repair, &mut n),
        1
    );
    assert!(tab.get(&Key::from(&child)).is_none());
    assert!(tab.get(&Key::from(&late)).is_some());
    assert_eq!(
        tab.check_pids(
            14 * SEC,
            &pids(&[1, 951]),
            2 * SEC,
            Missed::Expected,
            &mut n
        ),
        0,
        "under a filter, exits outside it are not seen: no repair"
    );
    assert!(tab.get(&Key::from(&parent)).is_none());
    assert_eq!(tab.repairs(), 1);
    assert!(n.is_empty());
}

/// The kernel frees a reaped task lazily (seconds later); the table lets it go a grace
/// after its reap once /proc no longer lists it.
#[test]
fn reaped_but_unfreed_processes_go_after_the_grace() {
    let (mut tab, parent) = seeded_parent();
    let (a, b) = (t(101, 11 * SEC), t(102, 11 * SEC + 1));
    for k in [a, b] {
        apply(&mut tab, &fork(11 * SEC, parent, k));
        apply(
            &mut tab,
            &exit(12 * SEC, k, parent, 0, exit_flags::GROUP_DEAD),
        );
    }
    apply(&mut tab, &wait(12 * SEC, parent, 0, Some(a)));
    let mut n = Vec::new();
    let listed = pids(&[1, 100, 102]);
    assert_eq!(
        tab.check_pids(13 * SEC, &listed, 2 * SEC, Missed::Repair, &mut n),
        0
    );
    assert_eq!(tab.len(), 4, "within the grace nothing goes");
    tab.check_pids(15 * SEC, &listed, 2 * SEC, Missed::Repair, &mut n);
    assert!(
        tab.get(&Key::from(&a)).is_none(),
        "reaped at 12 s, gone by 15 s"
    );
    assert_eq!(tab.zombies(15 * SEC, 0).len(), 1, "the real zombie stays");
    // A zombie whose pid a live process holds was reaped unseen (a pid is not reused
    // while its zombie exists).
    let reuser = t(102, 16 * SEC);
    apply(&mut tab, &fork(16 * SEC, parent, reuser));
    tab.check_pids(17 * SEC, &listed, 2 * SEC, Missed::Repair, &mut n);
    assert!(tab.zombies(17 * SEC, 0).is_empty());
    assert_eq!(tab.repairs(), 0);
}

#[test]
fn released_candidates_are_reaped_and_dying_ones_asked_again() {
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
    // 300 is a zombie, 301 already reaped (unseen), 302 still being reaped.
    let asked = std::cell::RefCell::new(Vec::new());
    let state = |k: &Key| {
        asked.borrow_mut().push(k.tgid);
        match k.tgid {
            300 => KernelState::Zombie,
            301 => KernelState::Released,
            _ => KernelState::Dying,
        }
    };
    let mut n = Vec::new();
    let z = tab.new_zombies(14 * SEC, SEC, state, &mut n);
    assert_eq!(z.iter().map(|z| z.key.tgid).collect::<Vec<_>>(), [300]);
    assert_eq!(*asked.borrow(), [300, 301, 302]);
    assert_eq!(
        tab.get(&Key::from(&kids[1])).unwrap().reaped_ns,
        Some(14 * SEC)
    );
    assert!(
        matches!(&n[..], [Notice::Reaped { proc, .. }] if proc.key.tgid == 301 && !proc.reported),
        "301's reap is told as never reported: {n:?}"
    );
    // Next time only the dying one is asked about again.
    asked.borrow_mut().clear();
    assert!(tab.new_zombies(15 * SEC, SEC, state, &mut n).is_empty());
    assert_eq!(*asked.borrow(), [302]);
    // 301's late free tells nothing more; 300's gives its reaped notice, as reported.
    assert!(apply(&mut tab, &free(16 * SEC, kids[1])).is_empty());
    let n = apply(&mut tab, &free(16 * SEC, kids[0]));
    assert!(
        matches!(&n[..], [Notice::Reaped { proc, .. }] if proc.key.tgid == 300 && proc.reported)
    );
}
