use super::*;

const P: Key = Key {
    tgid: 10,
    start_ns: 1_000,
};
const C: Key = Key {
    tgid: 11,
    start_ns: 2_000,
};

fn fault(k: Key, flags: u32) -> FaultKey {
    FaultKey {
        tgid: k.tgid,
        flags,
        start_ns: k.start_ns,
    }
}

fn times(forks: u64, ns: u64) -> ForkTimes {
    let mut t = ForkTimes::default();
    t.calls[fork_kind::FORK] = forks;
    t.ns[fork_kind::FORK] = ns;
    t.calls[fork_kind::THREAD] = 2;
    t
}

#[test]
fn a_childs_inherited_faults_are_its_parents_cost() {
    let mut m = CostModel::new();
    let pk = ProcKey {
        tgid: P.tgid,
        _pad: 0,
        start_ns: P.start_ns,
    };
    let faults = HashMap::from([
        (fault(C, fault_flags::INHERITED), 16_384),
        (fault(C, 0), 5),
        (fault(P, fault_flags::AFTER_FORK), 7),
        (fault(P, 0), 3),
    ]);
    let t = HashMap::from([(pk, times(1, 2_000_000))]);
    let creator = |k: Key| (k == C).then_some(P);
    let rows = m.update(&totals(&faults, &t, 4096), creator);
    let p = rows.iter().find(|r| r.key == P).unwrap();
    let c = rows.iter().find(|r| r.key == C).unwrap();
    assert_eq!(rows[0].key, P, "the parent caused the most faults");
    assert_eq!(c.creator, Some(P.tgid));
    assert_eq!(
        (c.total.cow_faults, c.total.cow_inherited),
        (16_389, 16_384)
    );
    assert_eq!((p.total.cow_faults, p.total.cow_after_fork), (10, 7));
    assert_eq!(p.total.children_cow, 16_384);
    assert_eq!(p.total.faults_caused(), 16_391);
    assert_eq!(
        (p.total.forks, p.total.threads, p.total.process_ns()),
        (1, 2, 2_000_000)
    );
    assert_eq!(p.delta, p.total, "the first interval is everything");
    // The child has gone and was pruned: the parent keeps what it caused.
    m.forget(&[C]);
    let rows = m.update(
        &totals(&HashMap::from([(fault(P, 0), 3)]), &t, 4096),
        creator,
    );
    let p = rows.iter().find(|r| r.key == P).unwrap();
    assert_eq!(p.total.children_cow, 16_384);
    assert_eq!(p.delta.children_cow, 0);
    assert_eq!(p.delta.cow_faults, 0);
    assert_eq!(
        p.total.cow_after_fork, 0,
        "the pruned entry is gone from the map"
    );
}

#[test]
fn a_creator_known_to_the_tick_is_matched_to_its_process() {
    let mut m = CostModel::new();
    let coarse = Key {
        tgid: P.tgid,
        start_ns: 0,
    };
    let faults = HashMap::from([
        (fault(C, fault_flags::INHERITED), 4),
        (fault(P, 0), 1),
        // An older process that had the same pid.
        (
            fault(
                Key {
                    tgid: P.tgid,
                    start_ns: 10,
                },
                0,
            ),
            1,
        ),
    ]);
    let rows = m.update(&totals(&faults, &HashMap::new(), 4096), |k| {
        (k == C).then_some(coarse)
    });
    let p = rows.iter().find(|r| r.key == P).unwrap();
    assert_eq!(p.total.children_cow, 4);
    assert_eq!(rows.len(), 3);
}
