//! Real BPF against a real server: nginx's worker under a loopback load the test makes,
//! watched by `proclens waits -p WORKER` and, on the same run, by a bpftrace script that
//! sums the worker's blocked time by proclens's definition (a voluntary switch out until
//! the wakeup). Not in the kernel matrix: its guests have neither nginx nor bpftrace.
mod common;

use std::time::{Duration, Instant};

use common::{
    Proclens,
    bpftrace::{Bpftrace, count},
    can_trace,
    nginx::Nginx,
    now_unix, settled_counters,
};
use serde_json::Value;

/// Clients, and the fetches each makes one after another, 1 ms apart: the worker blocks
/// in epoll between them.
const CLIENTS: usize = 2;
const FETCHES: u64 = 250;
const SIZE: u64 = 4096;

/// bpftrace's account of thread `tid`'s blocked time, by proclens's definition: from each
/// voluntary switch out (a sleeping state in the tracepoint; a preemption reports
/// `TASK_REPORT_MAX`, 0x100, with no state bit below it) to the wakeup that ends it, in
/// ns: `@blocked_ns` over `@blocks` such pairs.
///
/// bpftrace's classic tracepoint programs do not run on a CPU while a task there is inside
/// a BPF map syscall (the kernel's `bpf_prog_active`: such a task preempted by the worker
/// would blind bpftrace to the worker's whole run), so the script also counts what it
/// missed,
/// by the kernel's own count of voluntary switches (`nvcsw`, from `nvcsw0` when the
/// worker was idle before the script started), each with an upper bound of its time:
///
/// - voluntary switches between two seen switches out that the script never saw:
///   `@missed`, bounded by the time since the thread's last switch out or wakeup seen
///   (what was missed lies after it);
/// - a voluntary switch out whose wakeup was missed (the next one found it unpaired):
///   `@unpaired`, bounded by the time between the two switches out.
///
/// The kernel's voluntary switches over the run are then `@blocks + @unpaired + @missed`
/// plus the switch out still unpaired at the end (the worker's last, at its exit).
///
/// The block in progress when the script starts (the idle worker's, in epoll) has no switch
/// out seen: `@first_ns`, the time from the script's start to its wakeup, bounds what of
/// it lies after any later moment.
fn script(tid: u32, nvcsw0: u64) -> String {
    format!(
        "BEGIN {{ @nv = {nvcsw0}; @begin = nsecs; printf(\"attached\\n\"); }}\n\
         tracepoint:sched:sched_switch /args->prev_pid == {tid}/ {{\n\
           $vol = (args->prev_state & 0xff) != 0 ? 1 : 0;\n\
           $missed = (int64)curtask->nvcsw - @nv - $vol;\n\
           if ($missed > 0 && @last != 0) {{ @missed = sum($missed); @missed_ns = sum(nsecs - @last); }}\n\
           @nv = (int64)curtask->nvcsw;\n\
           @last = nsecs;\n\
           if ($vol) {{\n\
             if (@out != 0) {{ @unpaired = count(); @unpaired_ns = sum(nsecs - @out); }}\n\
             @out = nsecs;\n\
           }}\n\
         }}\n\
         tracepoint:sched:sched_wakeup /args->pid == {tid} && @out == 0 && @first == 0/ {{\n\
           @first = 1; @first_ns = sum(nsecs - @begin);\n\
         }}\n\
         tracepoint:sched:sched_wakeup /args->pid == {tid} && @out != 0/ {{\n\
           @blocked_ns = sum(nsecs - @out); @blocks = count(); @out = 0; @last = nsecs;\n\
         }}\n"
    )
}

/// The client load: `CLIENTS` threads, each fetching the file `FETCHES` times.
fn load(n: &Nginx) {
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                for _ in 0..FETCHES {
                    assert_eq!(n.fetch(), SIZE);
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
        }
    });
}

/// The worker's last report (`alive` false), after nginx has stopped.
fn last_report(p: &Proclens, worker: u32) -> Value {
    p.json_until(Duration::from_secs(20), |v| {
        v["type"] == "waits" && v["pid"] == worker && v["alive"] == false
    })
}

/// nginx's worker serves 500 small files to two loopback clients and is then stopped.
/// From a report after both tracers attached (while the worker is idle in epoll) to the
/// worker's exit (its last block ends with the SIGTERM that stops it): it blocks most in
/// its epoll wait, and its blocked time over all syscalls is bpftrace's sum of voluntary
/// switch out to wakeup for the same thread (with, at most, what followed that report of
/// the block in progress when bpftrace started: see [`script`]).
///
/// The bounds: the switch counts are exact (proclens's are the kernel's voluntary switches
/// but the last, which never ends, as bpftrace counts them; see [`script`]). The time of
/// the blocks bpftrace paired is proclens's within 5 µs a block, and those it missed or
/// could not pair add at most their bounds. The two accounts differ by construction in
/// where a block ends (proclens: the enqueue, by the scheduler's `run_delay`; bpftrace:
/// its program at the `sched_wakeup` tracepoint after it) and where it begins (each
/// program's reading at the switch out, one after the other), and in their clocks (the
/// run queue's and `ktime`): measured on this 2-CPU guest, bpftrace's sum was 1.2 to 2.1
/// µs a block longer (0.08 to 0.23% of ~290 ms in 315 to 562 blocks), with nothing
/// missed. A bug that lost or doubled a block would show in the exact counts; one that
/// timed blocks wrongly by more than 5 µs, in the time.
#[test]
fn nginx_worker_blocks_in_epoll_and_its_blocked_time_agrees_with_bpftrace() {
    if !can_trace() {
        return;
    }
    let Some(mut n) = Nginx::start(false, SIZE) else {
        return;
    };
    let worker = n.worker();
    let threads = std::fs::read_dir(format!("/proc/{worker}/task"))
        .unwrap()
        .count();
    assert_eq!(
        threads, 1,
        "the worker is one thread (the script follows one)"
    );
    let p = Proclens::spawn(&[
        "waits",
        "--json",
        "--interval",
        "1",
        "-p",
        &worker.to_string(),
    ]);
    p.json_until(Duration::from_secs(30), |v| v["type"] == "waits_system");
    // Idle in epoll until the load starts: its count stays put.
    let nvcsw0 = settled_counters(worker).voluntary;
    let bt = Bpftrace::start(&script(worker, nvcsw0));
    bt.wait_for("attached");
    // proclens's figures from a report after bpftrace's start: the idle worker's block
    // then in progress (charged to epoll from proclens's start) is in it up to that
    // report's reading, and what follows of it is within bpftrace's `@first_ns`.
    let attached = now_unix();
    let before = p.json_until(Duration::from_secs(20), |v| {
        v["type"] == "waits" && v["pid"] == worker && v["time"].as_f64().unwrap() > attached
    });
    let started = Instant::now();
    load(&n);
    eprintln!("load: {:.2} s", started.elapsed().as_secs_f64());
    n.stop();
    let v = last_report(&p, worker);
    let out = bt.stop();
    eprintln!("proclens {v}\nbpftrace {out}");

    let blocked_in = v["blocked_in"].as_array().unwrap();
    let top = blocked_in
        .iter()
        .max_by(|a, b| {
            a["blocked_ms_total"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["blocked_ms_total"].as_f64().unwrap())
        })
        .unwrap_or_else(|| panic!("the worker never blocked: {v}"));
    let name = top["syscall"].as_str().unwrap();
    assert!(
        name == "epoll_wait" || name == "epoll_pwait",
        "the worker blocks most in {name}: {v}"
    );
    assert!(
        top["share_total"].as_f64().unwrap() > 0.9,
        "the epoll wait's share of its blocked time: {top}"
    );
    let ready = v["readiness"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["syscall"] == name)
        .unwrap_or_else(|| panic!("no readiness figures for {name}: {v}"));
    // Every connection is reported ready at least once (to be accepted).
    assert!(
        ready["ready_total"].as_u64().unwrap() >= CLIENTS as u64 * FETCHES,
        "{ready}"
    );

    let total = |r: &Value| {
        (
            r["blocked_ms_total"].as_f64().unwrap(),
            r["switches_total"].as_u64().unwrap(),
        )
    };
    let ((ms1, sw1), (ms0, sw0)) = (total(&v), total(&before));
    let (ms, switches) = (ms1 - ms0, sw1 - sw0);
    let first_ms = count(&out, "first_ns") as f64 / 1e6;
    let (paired, paired_ms) = (
        count(&out, "blocks"),
        count(&out, "blocked_ns") as f64 / 1e6,
    );
    let (unpaired, missed) = (count(&out, "unpaired"), count(&out, "missed"));
    let unknown_ms =
        (count(&out, "unpaired_ns") + count(&out, "missed_ns")) as f64 / 1e6 + first_ms;
    eprintln!(
        "worker blocked: proclens {ms:.3} ms in {switches} blocks; bpftrace {paired_ms:.3} ms \
         in {paired} blocks ({:+.3}%), {unpaired} unpaired and {missed} missed (at most \
         {unknown_ms:.3} ms)",
        100.0 * (ms - paired_ms) / paired_ms
    );
    assert_eq!(
        switches,
        paired + unpaired + missed,
        "proclens's blocks against the kernel's voluntary switches as bpftrace saw them"
    );
    let slack_ms = 0.005 * switches as f64;
    assert!(
        ms >= paired_ms - slack_ms && ms <= paired_ms + unknown_ms + slack_ms,
        "blocked: proclens {ms} ms; bpftrace {paired_ms} ms paired, at most {unknown_ms} ms \
         more"
    );
}
