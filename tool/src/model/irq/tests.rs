use super::*;

fn fig(count: u64, ns: u64) -> Figures {
    let mut hist = [0; DUR_BUCKETS];
    hist[proclens_common::irq::dur_bucket(ns / count.max(1))] = count;
    Figures { count, ns, hist }
}

fn reading(net_rx: [(u64, u64); 2], loc: [(u64, u64); 2], victim: Option<Taken>) -> Reading {
    let mut softirqs = vec![[Figures::default(); SOFTIRQS]; 2];
    for (c, (n, ns)) in net_rx.into_iter().enumerate() {
        softirqs[c][3] = fig(n, ns);
    }
    let mut hard = BTreeMap::new();
    hard.insert(
        Source::Vector(vector::LOC),
        loc.iter().map(|&(n, ns)| fig(n, ns)).collect(),
    );
    let mut victims = HashMap::new();
    if let Some(t) = victim {
        victims.insert(
            Key {
                tgid: 7,
                start_ns: 70,
            },
            (t, "spin".to_string()),
        );
    }
    Reading {
        softirqs,
        hard,
        cpus: vec![CpuExtra::default(); 2],
        victims,
    }
}

#[test]
fn intervals_are_deltas_beside_totals_per_cpu_and_kind() {
    let t0 = Taken {
        soft: 10,
        soft_ns: 10_000,
        ..Taken::default()
    };
    let mut m = IrqModel::new(reading(
        [(0, 0), (10, 10_000)],
        [(5, 500), (5, 500)],
        Some(t0),
    ));
    let t1 = Taken {
        soft: 30,
        soft_ns: 50_000,
        hard: 2,
        hard_ns: 600,
    };
    let i = m.update(reading(
        [(0, 0), (30, 50_000)],
        [(9, 900), (8, 800)],
        Some(t1),
    ));
    assert_eq!(i.softirqs.len(), 1, "vectors that never ran have no row");
    let net_rx = &i.softirqs[0];
    assert_eq!((net_rx.cpu, net_rx.kind), (1, 3));
    assert_eq!((net_rx.delta.count, net_rx.delta.ns), (20, 40_000));
    assert_eq!((net_rx.total.count, net_rx.total.ns), (30, 50_000));
    assert_eq!(i.cpus[1].soft.ns, 40_000);
    assert_eq!(i.cpus[0].hard.count, 4);
    assert_eq!(i.cpus[1].hard_total.ns, 800);
    let loc: Vec<_> = i
        .hard
        .iter()
        .map(|r| (r.cpu, r.kind, r.delta.count, r.total.count))
        .collect();
    let v = Source::Vector(vector::LOC);
    assert_eq!(loc, [(0, v, 4, 9), (1, v, 3, 8)]);
    let v = i.victim(7).expect("the victim has a row");
    assert_eq!(
        v.delta,
        Taken {
            soft: 20,
            soft_ns: 40_000,
            hard: 2,
            hard_ns: 600
        }
    );
    assert_eq!(v.total.ns(), 50_600);
    assert_eq!(v.kernel_comm, "spin");
}

#[test]
fn quiet_victims_keep_their_totals_and_pruned_ones_are_forgotten() {
    let t = Taken {
        soft: 1,
        soft_ns: 100,
        ..Taken::default()
    };
    let mut m = IrqModel::new(reading([(0, 0); 2], [(0, 0); 2], Some(t)));
    let quiet = m.update(reading([(0, 0); 2], [(0, 0); 2], Some(t)));
    assert!(quiet.victims[0].delta.is_zero());
    assert_eq!(quiet.victims[0].total, t);
    // Pruned from the map, then a new process with the same key would start from 0.
    m.update(reading([(0, 0); 2], [(0, 0); 2], None));
    let i = m.update(reading([(0, 0); 2], [(0, 0); 2], Some(t)));
    assert_eq!(i.victims[0].delta, t);
}

#[test]
fn a_counter_that_went_back_counts_from_zero() {
    let before = fig(10, 1000);
    let after = fig(3, 300);
    assert_eq!(after.since(&before), after);
    assert_eq!(fig(12, 1200).since(&before).count, 2);
}

#[test]
fn sources_are_named_as_in_proc_interrupts() {
    assert_eq!(Source::Line(36).row(), "36");
    assert_eq!(Source::Vector(vector::LOC).row(), "LOC");
    assert_eq!(Source::Vector(vector::CAL).row(), "CAL");
    assert_eq!(softirq_name(3), "NET_RX");
    assert_eq!(softirq_name(42), "?");
    assert!(
        Source::Line(300) < Source::Vector(0),
        "lines first, as /proc lists them"
    );
}

#[test]
fn a_run_sums_its_processes_interrupted_time() {
    let a = Taken {
        hard: 2,
        hard_ns: 1_000_000,
        soft: 10,
        soft_ns: 9_000_000,
    };
    let b = Taken {
        soft: 5,
        soft_ns: 10_000_000,
        ..Taken::default()
    };
    let mut both = a;
    both.add(&b);
    let s = InterruptedSection::of(both, 0.2);
    assert_eq!((s.hard, s.soft), (2, 15));
    assert!((s.hard_s - 0.001).abs() < 1e-12 && (s.soft_s - 0.019).abs() < 1e-12);
    assert!(
        (s.oncpu_pct - 10.0).abs() < 1e-9,
        "20 ms of 200 ms: {}",
        s.oncpu_pct
    );
    assert_eq!(InterruptedSection::of(a, 0.0).oncpu_pct, 0.0);
}
