use super::*;
use crate::model::{
    run_blocked::{BlockedRow, ReadinessRow},
    run_report::{ExitInfo, ProcessSummary, SwitchKinds},
};

fn report() -> RunReport {
    let sw = SwitchKinds {
        voluntary: 2,
        involuntary: 1,
        same_process: 0,
        cross_process: 1,
        idle_or_kernel: 2,
    };
    let lat = Latency {
        p50_us: Some(4),
        p99_us: Some(7),
        max_us: 7,
    };
    RunReport {
        command: vec!["sh".into(), "-c".into(), "sleep 0.2".into()],
        exit: ExitInfo {
            code: Some(0),
            signal: None,
        },
        wall_s: 0.204,
        user_cpu_s: 0.001,
        system_cpu_s: 0.002,
        oncpu_s: 0.003,
        blocked_s: 0.2,
        runq_s: 0.0,
        processes: 1,
        threads: 1,
        switches: sw.clone(),
        runq_latency: lat.clone(),
        lost_events: 0,
        untracked_threads: 0,
        uncounted_syscalls: 0,
        uncounted_copies: 0,
        forked_processes: 0,
        forked_threads: 0,
        copies: None,
        zombies: ZombiesSection::default(),
        forks: None,
        interrupted: Some(crate::model::irq::InterruptedSection {
            hard: 3,
            hard_s: 0.000_05,
            soft: 7,
            soft_s: 0.000_1,
            oncpu_pct: 5.0,
        }),
        blocked_in: Some(BlockedInSection {
            by_syscall: true,
            readiness_counted: true,
            blocked_s: 0.2,
            switches: 2,
            syscalls: vec![BlockedRow {
                syscall: "poll".into(),
                abi: Some("x86_64"),
                blocked_s: 0.2,
                share: 1.0,
                switches: 2,
            }],
            readiness: vec![ReadinessRow {
                syscall: "poll".into(),
                calls: 2,
                fds_in_per_call: 1.0,
                interest_per_call: 0.0,
                ready_per_call: 0.0,
                empty_share: 1.0,
                errors: 0,
                blocked_ms_per_call: 100.0,
            }],
            uncounted_blocks: 0,
            uncounted_readiness: 0,
        }),
        per_process: vec![ProcessSummary {
            pid: 7,
            comm: "sleep".into(),
            switches: sw,
            oncpu_s: 0.003,
            blocked_s: 0.2,
            runq_s: 0.0,
            runq_latency: lat,
            syscalls: Some(12),
        }],
    }
}

#[test]
fn json_names_switch_kinds() {
    let v: serde_json::Value = serde_json::from_str(&json(&report())).unwrap();
    for k in [
        "voluntary",
        "involuntary",
        "same_process",
        "cross_process",
        "idle_or_kernel",
    ] {
        assert!(v["switches"][k].is_u64(), "{k}");
    }
    assert_eq!(v["exit"]["code"], 0);
    assert_eq!(v["per_process"][0]["comm"], "sleep");
    assert_eq!(v["blocked_s"], 0.2);
    assert_eq!(v["interrupted"]["soft"], 7);
    assert_eq!(v["interrupted"]["oncpu_pct"], 5.0);
    let b = &v["blocked_in"];
    assert_eq!(b["syscalls"][0]["syscall"], "poll");
    assert_eq!(b["syscalls"][0]["switches"], 2);
    assert_eq!(b["readiness"][0]["empty_share"], 1.0);
    assert_eq!(b["readiness"][0]["blocked_ms_per_call"], 100.0);
    assert_eq!(
        (b["by_syscall"].as_bool(), b["readiness_counted"].as_bool()),
        (Some(true), Some(true))
    );
}

#[test]
fn plain_summary() {
    let t = plain(&report());
    assert!(t.contains("proclens run: sh -c 'sleep 0.2'"), "{t}");
    assert!(t.contains("blocked 0.200 s"), "{t}");
    assert!(t.contains("2 voluntary, 1 involuntary"), "{t}");
    assert!(t.contains("p50 <4us, p99 <=7us, max 7us"), "{t}");
    assert!(
        t.contains("   interrupted  hard IRQs 0.050 ms (3), softirqs 0.100 ms (7): 5.00% of its on-CPU time"),
        "{t}"
    );
    assert!(
        t.contains("    blocked in  0.200 s in 2 blocks, by the syscall each began in\n                poll                   0.200 s 100.0%        2 switches\n"),
        "{t}"
    );
    assert!(
        t.contains("     readiness  poll         2 calls, 1.0 fds in/call, 0.00 ready/call, 100% empty, 0 failed, 100.000 ms blocked/call\n"),
        "{t}"
    );
}
