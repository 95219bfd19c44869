use proclens_common::event::{EventHeader, kind};

use super::*;

fn thread(tgid: u32, start_ns: u64, vol: u64, invol: u64) -> ThreadSwitches {
    ThreadSwitches {
        tgid,
        start_ns,
        voluntary: vol,
        involuntary: invol,
        ..Default::default()
    }
}

fn exit(tid: u32, t: &ThreadSwitches) -> ThreadExit {
    ThreadExit {
        header: EventHeader {
            kind: kind::THREAD_EXIT,
            tid,
            ts: 0,
        },
        stats: *t,
        comm: *b"worker\0\0\0\0\0\0\0\0\0\0",
    }
}

#[test]
fn threads_sum_into_their_process_and_deltas_follow() {
    let mut m = SwitchModel::new(false);
    let mut live = HashMap::from([
        (100, thread(100, 1, 5, 1)),
        (101, thread(100, 1, 3, 2)),
        (200, thread(200, 2, 1, 0)),
    ]);
    let rows = m.update(&live, &[]);
    let p100 = rows.iter().find(|r| r.key.id == 100).unwrap();
    assert_eq!((p100.total.voluntary, p100.total.involuntary), (8, 3));
    assert_eq!(
        p100.delta, p100.total,
        "first sight: the whole total is new"
    );
    assert_eq!(rows[0].key.id, 100, "busiest first");

    live.insert(101, thread(100, 1, 10, 2));
    let rows = m.update(&live, &[]);
    let p100 = rows.iter().find(|r| r.key.id == 100).unwrap();
    assert_eq!((p100.delta.voluntary, p100.delta.involuntary), (7, 0));
    assert_eq!(p100.total.voluntary, 15);
}

#[test]
fn exited_threads_keep_their_counts_once() {
    let mut m = SwitchModel::new(false);
    let live = HashMap::from([(100, thread(100, 1, 5, 0)), (101, thread(100, 1, 3, 0))]);
    m.update(&live, &[]);
    // Thread 101 exits; the snapshot still holds its last live value (read before the
    // exit): the final counts supersede it, not add to it.
    let rows = m.update(&live, &[exit(101, &thread(100, 1, 4, 0))]);
    assert_eq!(rows[0].total.voluntary, 9);
    assert_eq!(rows[0].delta.voluntary, 1);
    // Next snapshot no longer has it.
    let live = HashMap::from([(100, thread(100, 1, 6, 0))]);
    let rows = m.update(&live, &[]);
    assert_eq!(rows[0].total.voluntary, 10);
    assert_eq!(rows[0].delta.voluntary, 1);
}

/// A total once reported is never reported smaller (a thread's open period read a
/// little long, or its final counts lost): the interval shows 0, not a wrapped delta,
/// and the next interval's share starts from the highest total.
#[test]
fn a_total_never_shrinks() {
    let mut m = SwitchModel::new(false);
    let at = |blocked_ns, vol| {
        HashMap::from([(
            100,
            ThreadSwitches {
                blocked_ns,
                ..thread(100, 1, vol, 0)
            },
        )])
    };
    m.update(&at(1_000, 2), &[]);
    let rows = m.update(&at(900, 3), &[]);
    assert_eq!(
        (rows[0].total.blocked_ns, rows[0].delta.blocked_ns),
        (1_000, 0)
    );
    assert_eq!(rows[0].delta.voluntary, 1);
    let rows = m.update(&at(1_500, 3), &[]);
    assert_eq!(
        (rows[0].total.blocked_ns, rows[0].delta.blocked_ns),
        (1_500, 500)
    );
}

#[test]
fn reused_pid_is_a_different_process() {
    let mut m = SwitchModel::new(false);
    m.update(&HashMap::new(), &[exit(300, &thread(300, 10, 50, 5))]);
    let rows = m.update(&HashMap::from([(300, thread(300, 99, 2, 0))]), &[]);
    let new = rows.iter().find(|r| r.key.start_ns == 99).unwrap();
    assert_eq!(new.total.voluntary, 2, "not merged with the old pid 300");
}

#[test]
fn gone_processes_are_reported_then_forgotten() {
    let mut m = SwitchModel::new(false);
    let rows = m.update(&HashMap::new(), &[exit(400, &thread(400, 1, 7, 1))]);
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].alive);
    assert_eq!(rows[0].delta.voluntary, 7);
    assert_eq!(rows[0].exit_comm.as_deref(), Some("worker"));
    assert!(m.update(&HashMap::new(), &[]).is_empty());
    assert_eq!(m.len(), 0, "no leak");
}

#[test]
fn per_thread_mode_keeps_threads_apart() {
    let mut m = SwitchModel::new(true);
    let live = HashMap::from([(100, thread(100, 1, 5, 0)), (101, thread(100, 1, 3, 0))]);
    let rows = m.update(&live, &[]);
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.key.tgid == 100));
}

#[test]
fn wakeup_only_entries_are_ignored() {
    let mut m = SwitchModel::new(false);
    let rows = m.update(
        &HashMap::from([(
            5,
            ThreadSwitches {
                wake_ts: 1,
                ..Default::default()
            },
        )]),
        &[],
    );
    assert!(rows.is_empty());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Any 16 bytes from the kernel make a command name: the text before the first NUL,
    /// exact when it is UTF-8 (a name of up to 15 bytes round-trips), never a panic.
    #[test]
    fn proptest_comm_str(
        raw in proptest::prelude::any::<[u8; 16]>(),
        name in "[^\\x00]{0,15}",
    ) {
        let got = comm_str(&raw);
        proptest::prop_assert!(!got.contains('\0'));
        let end = raw.iter().position(|&b| b == 0).unwrap_or(16);
        if let Ok(text) = std::str::from_utf8(&raw[..end]) {
            proptest::prop_assert_eq!(&got, text);
        }
        if name.len() <= 15 {
            let mut padded = [0u8; 16];
            padded[..name.len()].copy_from_slice(name.as_bytes());
            proptest::prop_assert_eq!(comm_str(&padded), name);
        }
    }
}
