//! The merge against the kernel's ring discipline: events stamped, reserved and committed
//! on CPUs that share rings, read by drains at any moment.
use std::collections::VecDeque;

use proclens_common::{
    event::{EventHeader, kind},
    lifecycle::Free,
};
use proptest::prelude::*;

use super::*;

/// An event that says only when it was stamped and which one it is.
fn at(ts: u64, id: u64) -> Event {
    Event::Free(Free {
        header: EventHeader {
            kind: kind::FREE,
            tid: 0,
            ts,
        },
        task_ptr: id,
    })
}

fn id(e: &Event) -> u64 {
    match e {
        Event::Free(f) => f.task_ptr,
        _ => unreachable!(),
    }
}

fn released(held: &mut [VecDeque<Event>], mark: u64) -> Vec<u64> {
    let mut out = Vec::new();
    release(held, mark, |e| out.push(id(&e)));
    out
}

#[test]
fn the_earliest_head_goes_first_and_ties_keep_ring_order() {
    let ev = |ts| at(ts, ts);
    let heads = |v: &[Option<Event>]| earliest(v.iter().map(Option::as_ref));
    assert_eq!(heads(&[]), None);
    assert_eq!(heads(&[None, None]), None);
    assert_eq!(
        heads(&[Some(ev(7)), None, Some(ev(5)), Some(ev(9))]),
        Some(2)
    );
    assert_eq!(heads(&[None, Some(ev(5)), Some(ev(5))]), Some(1));
}

/// A child's exit, read in the same drain as its parent's fork or before it, waits until
/// the watermark has passed it; the fork, stamped earlier, goes first.
#[test]
fn nothing_passes_the_watermark() {
    // Ring 0: the fork (stamped 10). Ring 1: the child's exit (20), read already.
    let mut held = vec![VecDeque::from([at(10, 1)]), VecDeque::from([at(20, 2)])];
    assert_eq!(released(&mut held, 15), [1]);
    assert_eq!(
        released(&mut held, 20),
        Vec::<u64>::new(),
        "20 is not before 20"
    );
    assert_eq!(released(&mut held, 21), [2]);
    // One ring behaves alike.
    let mut one = vec![VecDeque::from([at(5, 1), at(9, 2)])];
    assert_eq!(released(&mut one, 6), [1]);
    assert_eq!(released(&mut one, 100), [2]);
}

/// A ring shared by several CPUs is not in time order: a fork stamped with its child's
/// start time, earlier than a record another CPU reserved before it. The merge keeps
/// each ring's order and never lets an event pass a head still beyond the watermark.
#[test]
fn a_ring_out_of_time_order_keeps_its_order() {
    let mut held = vec![
        VecDeque::from([at(10, 1), at(5, 2)]),
        VecDeque::from([at(7, 3), at(12, 4)]),
    ];
    assert_eq!(released(&mut held, 11), [3, 1, 2]);
    assert_eq!(released(&mut held, 13), [4]);
    let mut blocked = vec![
        VecDeque::from([at(25, 1), at(5, 2)]),
        VecDeque::from([at(7, 3)]),
    ];
    assert_eq!(released(&mut blocked, 20), [3], "5 waits behind 25");
}

/// One event as the kernel makes it: stamped, then reserved in its CPU's ring, then
/// committed (reservation order is the ring's order; a reader stops at the first record
/// not yet committed).
#[derive(Debug, Clone)]
struct Made {
    cpu: usize,
    stamp: u64,
    reserve: u64,
    commit: u64,
}

fn made() -> impl Strategy<Value = Made> {
    (0usize..16, 0u64..2_000, 0u64..30, 0u64..30, 0u64..600).prop_map(
        |(cpu, stamp, to_reserve, to_commit, early)| {
            // A fork's stamp (its child's start) may come long before its reservation.
            let stamp_at = stamp;
            let reserve = stamp + to_reserve + if cpu % 3 == 0 { early } else { 0 };
            Made {
                cpu,
                stamp: stamp_at,
                reserve,
                commit: reserve + to_commit,
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the CPUs, rings and drain times: when an event is handed over, every
    /// event committed before it was stamped (all it can follow from) has been handed over
    /// already; and once the CPUs are idle, everything is handed over.
    #[test]
    fn proptest_events_never_come_before_what_they_follow_from(
        events in prop::collection::vec(made(), 1..60),
        rings in prop_oneof![Just(1usize), Just(2), Just(4), Just(8)],
        drains in prop::collection::vec(0u64..2_800, 1..30),
    ) {
        // Each ring's records in reservation order.
        let mut queues: Vec<Vec<(usize, &Made)>> = vec![Vec::new(); rings];
        let mut order: Vec<(usize, &Made)> = events.iter().enumerate().collect();
        order.sort_by_key(|(i, m)| (m.reserve, *i));
        for (i, m) in order {
            queues[m.cpu % rings].push((i, m));
        }
        let mut read = vec![0usize; rings];
        let mut empty_at = vec![0u64; rings];
        let mut held: Vec<VecDeque<Event>> = vec![VecDeque::new(); rings];
        let mut out: Vec<usize> = Vec::new();
        let mut drains = drains;
        drains.sort_unstable();
        drains.push(10_000);
        for t0 in drains {
            let mut t = t0;
            for _ in 0..2 {
                for r in 0..rings {
                    while let Some((i, m)) = queues[r].get(read[r]) {
                        if m.commit > t {
                            break;
                        }
                        held[r].push_back(at(m.stamp, *i as u64));
                        read[r] += 1;
                        t += 1;
                    }
                    // The clock, then the check: empty if nothing reserved by now is unread.
                    let now = t;
                    if queues[r].get(read[r]).is_none_or(|(_, m)| m.reserve > now) {
                        empty_at[r] = now;
                    }
                    t += 1;
                }
            }
            let mark = *empty_at.iter().min().unwrap();
            release(&mut held, mark, |e| out.push(id(&e) as usize));
        }
        prop_assert_eq!(out.len(), events.len(), "everything is handed over in the end");
        let pos: Vec<usize> = {
            let mut p = vec![0; events.len()];
            for (k, i) in out.iter().enumerate() {
                p[*i] = k;
            }
            p
        };
        for (e, m) in events.iter().enumerate() {
            for (x, n) in events.iter().enumerate() {
                if n.commit < m.stamp {
                    prop_assert!(
                        pos[x] < pos[e],
                        "event {e} {m:?} came before {x} {n:?}, committed before it was stamped"
                    );
                }
            }
        }
    }
}
