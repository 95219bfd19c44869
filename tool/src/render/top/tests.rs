use super::*;
use crate::model::switches::{Counts, Key};

fn frame() -> Frame {
    let mut delta = Counts {
        voluntary: 20,
        involuntary: 4,
        same_in: 6,
        cross_in: 2,
        idle_kernel_in: 0,
        oncpu_ns: 500_000_000,
        runq_ns: 20_000_000,
        ..Counts::default()
    };
    delta.runq_hist[3] = 10; // [8, 16) µs
    let total = Counts {
        voluntary: 200,
        involuntary: 40,
        runq_max_ns: 15_000,
        ..delta
    };
    Frame {
        unix_time: 1_700_000_000.5,
        clock: "12:00:00".into(),
        elapsed_s: 2.0,
        per_thread: false,
        system: SystemSplit {
            switches: 1000,
            same_process: 100,
            cross_process: 300,
            idle_or_kernel: 600,
        },
        lost_events: 0,
        untracked_threads: 0,
        uncounted_syscalls: 0,
        table: Some(TableSize {
            tracked: 187,
            repairs: 2,
        }),
        rows: vec![TopRow {
            row: Row {
                key: Key {
                    id: 42,
                    tgid: 42,
                    start_ns: 1,
                },
                total,
                delta,
                alive: true,
                exit_comm: None,
            },
            comm: "worker".into(),
            syscalls: Some((3000, 9000)),
            zombies: Some(2),
            irq: Some(Taken {
                hard: 10,
                hard_ns: 5_000_000,
                soft: 100,
                soft_ns: 20_000_000,
            }),
        }],
    }
}

#[test]
fn json_schema() {
    let lines = json_lines(&frame());
    let sys: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(sys["type"], "system");
    assert_eq!(sys["switches_per_s"], 500.0);
    assert_eq!(sys["address_space_switch_pct"], 30.0);
    assert_eq!(
        (
            sys["tracked_processes"].as_u64(),
            sys["table_repairs"].as_u64()
        ),
        (Some(187), Some(2))
    );
    let row: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(row["type"], "process");
    assert_eq!(row["pid"], 42);
    assert_eq!(row["comm"], "worker");
    assert_eq!(row["voluntary"], 20);
    assert_eq!(row["voluntary_per_s"], 10.0);
    assert_eq!(row["involuntary_per_s"], 2.0);
    assert_eq!(row["voluntary_total"], 200);
    assert_eq!(row["involuntary_total"], 40);
    // The bucket's bound is 16 µs; no wait was longer than 15.
    assert_eq!(row["runq_p99_us"], 15);
    assert!(row.get("tid").is_none());
    assert_eq!(row["syscalls"], 3000);
    assert_eq!(row["syscalls_per_s"], 1500.0);
    assert_eq!(row["syscalls_total"], 9000);
    assert_eq!(row["zombies"], 2);
    assert_eq!(row["irq_hard_ms"], 5.0);
    assert_eq!(row["irq_soft_ms"], 20.0);
    // 25 ms of its 500 ms on CPU.
    assert_eq!(row["irq_pct"], 5.0);
}

#[test]
fn thread_rows_leave_process_figures_out() {
    let mut f = frame();
    f.per_thread = true;
    f.rows[0].syscalls = None;
    f.rows[0].zombies = None;
    f.rows[0].irq = None;
    let row: serde_json::Value = serde_json::from_str(&json_lines(&f)[1]).unwrap();
    assert!(row.get("syscalls").is_none() && row.get("zombies").is_none());
    assert!(row.get("irq_pct").is_none());
    assert!(plain_lines(&f)[2].contains("      -    -     -  worker"));
}

#[test]
fn plain_columns() {
    let lines = plain_lines(&frame());
    assert!(lines[0].contains("500 switches/s"), "{}", lines[0]);
    assert!(lines[0].contains("cross-process 30.0%"), "{}", lines[0]);
    assert!(
        lines[0].ends_with("; tracked processes 187, table repairs 2"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("cswch/s nvcswch/s"));
    let row = &lines[2];
    assert!(row.contains("      42     10.00      2.00        200          40   75.0    25.0   25.0    1.0      15us      1500    2   5.0  worker"), "{row}");
    assert!(row.ends_with("worker"));
}

#[test]
fn irq_share_is_of_the_on_cpu_time_and_capped() {
    let t = |ns| Taken {
        soft_ns: ns,
        ..Taken::default()
    };
    assert_eq!(irq_pct(None, 100), None);
    assert_eq!(irq_pct(Some(t(0)), 0), Some(0.0));
    assert_eq!(irq_pct(Some(t(25)), 100), Some(25.0));
    // Its run has not ended in the interval: not more than all of it.
    assert_eq!(irq_pct(Some(t(30)), 0), Some(100.0));
}
