//! The thread table: each traced thread's accounting, in its slot of the direct-mapped
//! `THREAD_SLOTS` table when it holds that slot (most threads), else in the `THREADS` hash
//! (see [`find_or_make`]); and the marks that count each thread the table had no room for
//! once (see [`untracked`]).
//!
//! Entries are made by a traced thread's first switch out (`switch`), by a wakeup where
//! wakeups are timed, and, for threads that already existed, by the seed iterator when
//! tracing starts (`iter`). They are freed at the thread's last switch, whatever the
//! filter (see [`forget`]).

use aya_ebpf::programs::BtfTracePointContext;
use proclens_common::{
    counters,
    event::{EventHeader, ThreadExit, kind as event_kind},
    switch::{ThreadSlot, ThreadSwitches, flags, slot_of},
};

use crate::{
    config,
    maps::{SLOT_CLAIMS, THREAD_SLOTS, THREADS, UNTRACKED, count, send},
    task::{comm, field},
};

const BPF_NOEXIST: u64 = 1;
const EEXIST: i64 = 17;

/// The slot `tid` may own, when slots are in use.
#[inline(always)]
fn slot(tid: u32) -> Option<&'static mut ThreadSlot> {
    if config::thread_slots_used() == 0 {
        return None;
    }
    // SAFETY: array values live as long as the map; see `find_or_make` for who writes.
    THREAD_SLOTS
        .get_ptr_mut(slot_index(tid))
        .map(|s| unsafe { &mut *s })
}

/// Its index: `slot_of(tid)`, within the slots in use (all but in tests).
#[inline(always)]
fn slot_index(tid: u32) -> u32 {
    slot_of(tid) & config::thread_slots_used().wrapping_sub(1)
}

/// `tid`'s entry (see [`find`]), else a new one filled in by `fill`, in its slot when that
/// is free, else in `THREADS`; with whether it was made now. `None` when `THREADS` is
/// full: the caller counts the thread (see [`untracked`]) where it is its own to count.
///
/// A thread's entry is written by its own switches out, which happen on one CPU at a time,
/// by its wakeups (timing wakeups only, see `switch::try_wakeup`) and, once, by the seed
/// iterator; claiming a slot is arbitrated by `SLOT_CLAIMS` (see `ThreadSlot`).
#[inline(always)]
pub(crate) fn find_or_make(
    tid: u32,
    fill: impl FnOnce(&mut ThreadSwitches),
) -> Option<(&'static mut ThreadSwitches, bool)> {
    if let Some(e) = find(tid) {
        return Some((e, false));
    }
    insert_new(tid, fill).map(|e| (e, true))
}

/// A zeroed entry, where `THREADS` copies a new one from: no entry is ever built on a
/// program's stack (264 bytes; 5.10's verifier allows 512 for a whole chain of calls).
// SAFETY: an entry is plain integers, valid when zeroed.
static EMPTY: ThreadSwitches = unsafe { core::mem::zeroed() };

/// Gives `tid`, which has no entry, a zeroed one filled in by `fill`, in place: in its slot
/// when the slot is free, else in `THREADS`. `None` when the map is full. (`fill` is
/// called in one place, so that it is inlined: a closure left a function of its own
/// returned a pointer into its caller's stack, which the verifier refuses.)
#[inline(always)]
pub(crate) fn insert_new(
    tid: u32,
    fill: impl FnOnce(&mut ThreadSwitches),
) -> Option<&'static mut ThreadSwitches> {
    let claimed: Option<*mut ThreadSlot> = match slot(tid) {
        Some(s)
            if s.owner == 0
                && SLOT_CLAIMS
                    .insert(&slot_index(tid), &tid, BPF_NOEXIST)
                    .is_ok() =>
        {
            reset(&mut s.stats);
            Some(s)
        }
        _ => None,
    };
    let e: &'static mut ThreadSwitches = if let Some(s) = claimed {
        // SAFETY: the slot is this thread's from its claim on (array values live as long
        // as the map).
        unsafe { &mut (*s).stats }
    } else {
        if let Err(err) = THREADS.insert(&tid, &EMPTY, BPF_NOEXIST)
            && i64::from(err) != -EEXIST
        {
            // Not EEXIST: the map is full.
            return None;
        }
        // SAFETY: map values live as long as the map.
        THREADS.get_ptr_mut(&tid).map(|e| unsafe { &mut *e })?
    };
    fill(e);
    if let Some(s) = claimed {
        // SAFETY: as above; set last, once the entry is filled in.
        unsafe { (*s).owner = tid };
    }
    Some(e)
}

/// Zeroes an entry in place (a released slot keeps its last owner's figures), a word at
/// a time: a copy of the zeroed `EMPTY`, or any zeroing LLVM can see whole, becomes a
/// `memset` that the BPF target expands to a byte loop, 264 rounds of five instructions
/// (~1,300) at every new thread's first switch.
#[inline(always)]
pub(crate) fn reset(e: &mut ThreadSwitches) {
    const WORDS: usize = size_of::<ThreadSwitches>() / 8;
    const _: () = assert!(size_of::<ThreadSwitches>().is_multiple_of(8) && align_of::<ThreadSwitches>() == 8);
    let words = core::ptr::from_mut(e).cast::<u64>();
    for i in 0..WORDS {
        // SAFETY: within the entry, which is 8-byte aligned and plain integers; volatile
        // so that the stores stay stores.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
}

/// `tid`'s entry if it has one: its slot when it owns it, else its `THREADS` entry.
#[inline(always)]
pub(crate) fn find(tid: u32) -> Option<&'static mut ThreadSwitches> {
    match slot(tid) {
        Some(s) if s.owner == tid => Some(&mut s.stats),
        // SAFETY: map values live as long as the map.
        _ => THREADS.get_ptr_mut(&tid).map(|e| unsafe { &mut *e }),
    }
}

/// Forgets `tid`'s entry: frees its slot, or removes it from `THREADS`.
#[inline(always)]
fn release(tid: u32) {
    if let Some(s) = slot(tid)
        && s.owner == tid
    {
        s.owner = 0;
        let _ = SLOT_CLAIMS.remove(&slot_index(tid));
        return;
    }
    let _ = THREADS.remove(&tid);
}

/// A traced thread the table had no room for: counted once, however often it switches
/// (its byte in `UNTRACKED` is set until its last switch, see [`forget`]). A thread id
/// beyond the marks (`pid_max` raised after start) is counted at every attempt.
///
/// Only the thread's own switches out and the seed iterator call this, and a thread
/// switches out on one CPU at a time, so its byte has one writer: no atomics needed.
#[inline(always)]
pub(crate) fn untracked<C: aya_ebpf::EbpfContext>(ctx: &C, tid: u32) {
    if let Some(m) = mark(tid) {
        if *m != 0 {
            return;
        }
        *m = 1;
    }
    count(ctx, counters::THREAD_MAP_FULL);
}

/// `tid`'s byte in `UNTRACKED` (64 thread ids per element).
#[inline(always)]
fn mark(tid: u32) -> Option<&'static mut u8> {
    let marks = UNTRACKED.get_ptr_mut(tid / 64)?;
    // SAFETY: array values live as long as the map; `tid % 64` is within the element.
    Some(unsafe { &mut (*marks)[(tid % 64) as usize] })
}

/// The thread's last switch, traced or not (it may have left the traced cgroup, or its
/// entry have been made by a wakeup): hands its final counts to userspace and frees its
/// entry, so a reused thread id starts from zero and the table does not fill with the
/// dead; clears its untracked mark.
#[inline(always)]
pub(crate) fn forget(ctx: &BtfTracePointContext, tid: u32, now: u64, task: u64) {
    if let Some(e) = find(tid) {
        // Its accumulated blocks go to its process's entry, where userspace finds them
        // after the thread.
        if config::waits_blocked_in() != 0 {
            crate::waits::flush(e, task);
        }
        send(
            ctx,
            ThreadExit {
                header: EventHeader {
                    kind: event_kind::THREAD_EXIT,
                    tid,
                    ts: now,
                },
                stats: *e,
                comm: comm(task),
            },
        );
        release(tid);
    }
    if let Some(m) = mark(tid)
        && *m != 0
    {
        *m = 0;
    }
}

/// Fills a zeroed entry in for `task`, a thread of `tgid` seen switching out for the
/// first time.
#[inline(always)]
pub(crate) fn fresh(e: &mut ThreadSwitches, tgid: u32, task: u64) {
    let (run_delay_seen, wait) = wait_baseline(task);
    e.tgid = tgid;
    e.start_ns = leader_start(task);
    e.comm = comm(task);
    e.run_delay_seen = run_delay_seen;
    e.flags = wait | first_switch(task);
}

/// `flags::NVCSW_KNOWN` (with `nvcsw_seen` 0) when the switch being traced is the
/// thread's very first (its counters sum to 1): then whether it was voluntary is known
/// from `nvcsw` alone. For an older thread first seen now it is not, and the switch
/// program falls back to the tracepoint's rule for this one switch.
#[inline(always)]
pub(crate) fn first_switch(task: u64) -> u32 {
    let nv: u64 = field(task, config::task_nvcsw_off());
    let niv: u64 = field(task, config::task_nivcsw_off());
    if nv + niv == 1 { flags::NVCSW_KNOWN } else { 0 }
}

/// Where counting the run-queue time of a thread first seen now starts. A thread started
/// since tracing began is counted from birth (its whole `run_delay`, the wait before its
/// first run included); an older one from now on (the wait before the run ending now began
/// before proclens could see it, so it is no sample).
#[inline(always)]
fn wait_baseline(task: u64) -> (u64, u32) {
    if config::sched_info() == 0 {
        return (0, 0);
    }
    let started: u64 = field(task, config::task_start_time_off());
    if started >= config::trace_start_ns() {
        (0, flags::WAIT_KNOWN)
    } else {
        (field(task, config::task_run_delay_off()), 0)
    }
}

/// The start time of `task`'s thread-group leader: with the tgid, a process's identity.
#[inline(always)]
pub(crate) fn leader_start(task: u64) -> u64 {
    let leader: u64 = field(task, config::task_group_leader_off());
    if leader == 0 {
        return 0;
    }
    field(leader, config::task_start_time_off())
}
