use proclens_common::{
    event::{EventHeader, ThreadExit},
    lifecycle::{Exit, TaskRef, exit_flags::GROUP_DEAD},
    switch::ThreadSwitches,
};

use super::*;

fn exit(tid: u32, tgid: u32, flags: u32) -> Event {
    Event::Exit(Exit {
        task: TaskRef {
            pid: tid,
            tgid,
            start_ns: 0,
        },
        flags,
        ..Exit::default()
    })
}

fn switched_out(tid: u32, tgid: u32) -> Event {
    Event::ThreadExit(Box::new(ThreadExit {
        header: EventHeader {
            tid,
            ..EventHeader::default()
        },
        stats: ThreadSwitches {
            tgid,
            ..ThreadSwitches::default()
        },
        ..ThreadExit::default()
    }))
}

#[test]
fn the_end_is_in_once_every_exited_thread_has_switched_out() {
    let mut l = Leader::default();
    // A child of the command exits; its parent (the leader) exits and switches out
    // before the child's last switch is read.
    l.note(&exit(11, 11, GROUP_DEAD), 10);
    l.note(&exit(10, 10, GROUP_DEAD), 10);
    l.note(&switched_out(10, 10), 10);
    assert!(l.done());
    assert!(!l.all_switched_out(), "{l:?}");
    l.note(&switched_out(11, 11), 10);
    assert!(l.all_switched_out(), "{l:?}");
    // The two in either order, and a thread id used again, balance out.
    l.note(&switched_out(12, 11), 10);
    l.note(&exit(12, 11, 0), 10);
    l.note(&exit(12, 12, GROUP_DEAD), 10);
    assert!(!l.all_switched_out());
    l.note(&switched_out(12, 12), 10);
    assert!(l.all_switched_out() && l.unswitched.is_empty(), "{l:?}");
    // A last switch whose exit was lost does not stand in for another process's
    // thread with the same id.
    l.note(&switched_out(13, 11), 10);
    l.note(&exit(13, 13, GROUP_DEAD), 10);
    assert!(!l.all_switched_out(), "{l:?}");
}

#[test]
fn the_leader_is_done_only_with_its_last_switch_and_its_process_death() {
    let mut l = Leader::default();
    // A thread of the command dies first: not its process's death.
    l.note(&exit(10, 10, 0), 10);
    l.note(&switched_out(10, 10), 10);
    assert!(!l.done());
    l.note(&exit(13, 10, GROUP_DEAD), 10);
    assert!(l.done());
}
