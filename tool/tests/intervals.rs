//! Real BPF, issue 15: time is credited to the interval it elapses in. A process already
//! asleep when proclens starts, then asleep across several intervals, shows its sleep as
//! it goes, and its intervals add up to its whole sleep.
mod common;

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{Proclens, can_trace, now_unix, wait_within};

/// A shell asleep (reading its stdin) before `top --json -p PID --interval 1` starts,
/// woken after top's first report to `exec sleep 3.2` (the issue's `sleep 1.5; exec sleep
/// 3.2`, with the first sleep as long as proclens takes to start): every whole interval
/// shows the interval as blocked time (within 2%); all the intervals' time (blocked, on CPU
/// and waiting) adds up to the time from the first interval's start to the shell's exit;
/// and their blocked time to at least the time the shell waited for its wake-up plus the
/// 3.2 s of `sleep` (both within 2%). Blocked time alone falls short of the whole life by
/// the exec's own CPU time: under QEMU without KVM that is tens of milliseconds.
/// Before, the sleep showed as one lump at the end (0, 0, 0, 0, 3200), or not at all for
/// the part before tracing began.
#[test]
fn a_sleep_is_blocked_time_in_every_interval_it_spans() {
    if !can_trace() {
        return;
    }
    let mut sh = Command::new("sh")
        .args(["-c", "read go; exec sleep 3.2"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = sh.id();
    let top = Proclens::spawn(&["top", "--json", "-p", &pid.to_string(), "--interval", "1"]);
    let mut wake = sh.stdin.take();
    let mut rows = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The shell's exit lies between the last poll that saw it alive and the first that
    // saw it gone.
    let mut alive_at = now_unix();
    let mut exited_at = None;
    let mut woken_at = None;
    while rows
        .last()
        .is_none_or(|r: &serde_json::Value| r["alive"] == true)
    {
        assert!(Instant::now() < deadline, "no final row: {rows:?}");
        if exited_at.is_none() {
            let polled_at = now_unix();
            match sh.try_wait().unwrap() {
                Some(_) => exited_at = Some(now_unix()),
                None => alive_at = polled_at,
            }
        }
        if let Some(l) = top.try_line(Duration::from_millis(20)) {
            let v: serde_json::Value = serde_json::from_str(&l).unwrap();
            if v["type"] == "process" && v["pid"] == pid {
                rows.push(v);
                // One report of the shell asleep since before tracing began: wake it.
                if let Some(mut w) = wake.take() {
                    woken_at = Some(now_unix());
                    writeln!(w, "go").unwrap();
                }
            }
        }
    }
    wait_within(&mut sh, Duration::from_secs(5), "sh");
    let exited_at = exited_at.unwrap_or_else(now_unix);
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    for r in &rows {
        eprintln!(
            "{:.3}: {} blocked {:.1} ms of {:.1} ms, on CPU {:.3} ms, waiting {:.3} ms",
            f(r, "time"),
            r["comm"],
            f(r, "blocked_ms"),
            f(r, "interval_s") * 1e3,
            f(r, "oncpu_ms"),
            f(r, "runq_ms")
        );
    }
    // The interval before the wake-up, three whole ones asleep, the last.
    assert!(rows.len() >= 4, "{rows:?}");
    // Every whole interval: its time is all there (on CPU, blocked or waiting); and
    // blocked, but for the one in which the shell was woken to exec.
    for (i, r) in rows[..rows.len() - 1].iter().enumerate() {
        let interval_ms = f(r, "interval_s") * 1e3;
        let all = f(r, "oncpu_ms") + f(r, "blocked_ms") + f(r, "runq_ms");
        assert!(
            (all - interval_ms).abs() <= interval_ms * 0.02,
            "an interval of {interval_ms} ms shows {all} ms: {r}"
        );
        if i != 1 {
            assert!(
                (f(r, "blocked_ms") - interval_ms).abs() <= interval_ms * 0.02,
                "an interval spent asleep shows {} ms blocked of {interval_ms}: {r}",
                f(r, "blocked_ms")
            );
        }
    }
    let first = &rows[0];
    let start = f(first, "time") - f(first, "interval_s");
    let (lived_min, lived_max) = (alive_at - start, exited_at - start);
    let all_s: f64 = rows
        .iter()
        .map(|r| f(r, "blocked_ms") + f(r, "oncpu_ms") + f(r, "runq_ms"))
        .sum::<f64>()
        / 1e3;
    assert!(
        all_s >= lived_min * 0.98 && all_s <= lived_max * 1.02,
        "the intervals add up to {all_s} s; the shell lived {lived_min}..{lived_max} s of them"
    );
    let asleep_s = woken_at.expect("the shell was woken") - start + 3.2;
    let blocked_s: f64 = rows.iter().map(|r| f(r, "blocked_ms")).sum::<f64>() / 1e3;
    assert!(
        blocked_s >= asleep_s * 0.98 && blocked_s <= all_s,
        "the intervals add up to {blocked_s} s blocked; the shell waited {asleep_s} s at least"
    );
}
