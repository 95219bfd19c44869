//! The lifecycle against this machine's /proc.
use proclens_common::{
    event::{EventHeader, ThreadExit, kind},
    lifecycle::{Fork, TaskRef},
};

use super::*;

/// This very process, as the events name it (its start known to a tick).
fn me(life: &Lifecycle) -> TaskRef {
    let me = procfs::stat(std::process::id()).unwrap();
    TaskRef {
        pid: me.pid,
        tgid: me.pid,
        start_ns: me.start_ticks * life.tick_ns,
    }
}

#[test]
fn lifecycle_events_are_applied_and_thread_exits_left() {
    let mut life = Lifecycle::start(&LifecycleOptions::default());
    // This very process is in the seed; one fork of it adds a child.
    let me_ref = me(&life);
    let before = life.table.len();
    let exit = |tid| ThreadExit {
        header: EventHeader {
            kind: kind::THREAD_EXIT,
            tid,
            ts: 0,
        },
        ..Default::default()
    };
    let fork = Fork {
        header: EventHeader {
            kind: kind::FORK,
            tid: u32::MAX - 1,
            ts: 1,
        },
        creator: me_ref,
        child: TaskRef {
            pid: u32::MAX - 1,
            tgid: u32::MAX - 1,
            start_ns: u64::MAX / 2,
        },
        parent: me_ref,
        ..Default::default()
    };
    let events = [
        Event::ThreadExit(Box::new(exit(1))),
        Event::Fork(fork),
        Event::ThreadExit(Box::new(exit(2))),
    ];
    let taken: Vec<bool> = events.iter().map(|e| life.apply_one(e)).collect();
    life.end_batch();
    assert_eq!(
        taken,
        [false, true, false],
        "thread exits are the switch model's"
    );
    assert_eq!(life.table.len(), before + 1);
    assert_eq!(
        life.forked,
        Forked {
            processes: 1,
            threads: 0
        }
    );
    assert_eq!(
        life.table
            .fork_stats_of_pid(me_ref.pid)
            .map(|s| s.processes),
        Some(1)
    );
    assert!(life.take_notices().is_empty());
}

/// The periodic check: a scan judges the table only once the stream's watermark has
/// passed it, and the made-up child (no such pid in /proc) is then found gone.
#[test]
fn the_check_waits_for_the_watermark_then_repairs() {
    let mut life = Lifecycle::start(&LifecycleOptions::default());
    let me_ref = me(&life);
    let child = TaskRef {
        pid: u32::MAX - 2,
        tgid: u32::MAX - 2,
        start_ns: 1,
    };
    life.apply_one(&Event::Fork(Fork {
        header: EventHeader {
            kind: kind::FORK,
            tid: child.pid,
            ts: 1,
        },
        creator: me_ref,
        child,
        parent: me_ref,
        ..Default::default()
    }));
    let before = life.table.len();
    life.last_scan = Instant::now().checked_sub(REPAIR_PERIOD).unwrap();
    life.check(0, 0, || None);
    let at = life
        .scan
        .as_ref()
        .map(Scan::at_ns)
        .expect("a scan was taken");
    life.check(0, at, || None);
    assert_eq!(
        life.table.len(),
        before,
        "not judged before the watermark passed it"
    );
    life.check(0, at + 1, || None);
    assert!(life.scan.is_none());
    assert!(life.table.get(&Key::from(&child)).is_none());
    assert!(life.table.repairs() >= 1);
    // Lost events: the next scan is the full one.
    life.check(5, at + 1, || None);
    assert!(matches!(life.scan, Some(Scan::Full(..))));
}

/// The table tells every reap; a view that wants only its reported zombies' keeps those,
/// and what else it was told, in order.
#[test]
fn reaps_are_kept_as_the_options_say() {
    use crate::model::proctable::ReapedProc;
    let key = |tgid| Key { tgid, start_ns: 1 };
    let reap = |tgid, reported| Notice::Reaped {
        proc: ReapedProc {
            key: key(tgid),
            comm: "c".into(),
            ppid: 1,
            parent: None,
            death: None,
            reported,
        },
        dead_for_ns: None,
        at_ns: 2,
    };
    let orphaned = Notice::Orphaned {
        parent: key(9),
        parent_comm: "p".into(),
        children: vec![key(10)],
        heir: None,
    };
    let told = [
        reap(1, false),
        reap(2, true),
        orphaned.clone(),
        reap(3, false),
    ];
    for (reaps, want) in [
        (Reaps::All, told.to_vec()),
        (Reaps::Reported, vec![reap(2, true), orphaned.clone()]),
    ] {
        let mut life = Lifecycle::start(&LifecycleOptions {
            seed: Seed::Pids(Vec::new()),
            reaps,
            ..LifecycleOptions::default()
        });
        life.notices.push(reap(4, true));
        life.notices.extend(told.iter().cloned());
        life.keep_wanted(1);
        let mut want = want;
        want.insert(0, reap(4, true));
        assert_eq!(life.take_notices(), want, "{reaps:?}");
    }
}
