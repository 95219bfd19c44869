//! The cross-view workload: one mix of processes every view traces at once (see
//! tests/agreement.rs), each with a name of its own, and the kernel's own figures of each
//! printed as `oracle {json}` lines once they are final:
//!
//! - `xv-pingpong`: two threads ping-pong on CPU 0, then both block for good (it stays
//!   alive after the workload ends; the test kills it).
//! - `xv-sleeper`: sleeps 1.5 s and exits.
//! - `xv-vforker`: 100 vfork children (`xv-vfchild`, each blocking 1 ms on the shared
//!   address space), then sleeps 0.5 s and exits.
//! - `xv-hog` and `xv-rival`: spin 0.8 s each on CPU 1, sharing it, and exit.
//!
//! Exited processes' figures are read while they are zombies (final: nothing of them runs
//! any more), the ping-pong's once it is quiet. An exiting process's blocked time is its
//! wall time from its fork's return in the parent to the start of its exit, less its time
//! on CPU and waiting until then (which it reports itself, from its own schedstat).

use std::{
    collections::HashMap,
    fs::File,
    io::{Read as _, Write as _},
    os::fd::AsRawFd as _,
    thread,
    time::Duration,
};

use super::{
    switch_workloads::{reap, set_name, vfork_named},
    workload::{pin_to_cpu, pingpong_party, pipe, spin_for, wait_zombie},
};

const ROUNDS: u64 = 2000;

/// A clock's time in ns: `CLOCK_MONOTONIC`, or `CLOCK_THREAD_CPUTIME_ID` (this thread's
/// time on CPU to now: the kernel adds the running slice as it reads it).
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid pointer.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn mono_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn unix_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// What an exiting child reports as it starts to exit: its pid, the time, and its time
/// on CPU and waiting so far (the exit path after is all on CPU or waiting: the kernel's
/// final figures less these are its share).
const END_RECORD: usize = 32;

/// Forks a child that runs `body` and exits, first writing its [`END_RECORD`] to `ends`.
fn child(ends: &File, body: impl FnOnce()) -> i32 {
    // SAFETY: the child runs `body` (plain syscalls, no locks the parent may hold: this
    // process has no other thread that allocates) and exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        body();
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        // schedstat's time on CPU is the running task's as of its last tick or switch (it
        // lagged 24 ms behind in a 5.10 emulator); the thread's CPU clock brings it up to
        // date first.
        let oncpu = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID);
        let [_, waited, _] = schedstat(me);
        let mut rec = [0u8; END_RECORD];
        for (i, v) in [u64::from(me as u32), mono_ns(), oncpu, waited]
            .iter()
            .enumerate()
        {
            rec[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
        }
        // SAFETY: one write under PIPE_BUF to a pipe is atomic; then exit at once.
        unsafe {
            libc::write(ends.as_raw_fd(), rec.as_ptr().cast(), END_RECORD);
            libc::_exit(0);
        }
    }
    pid
}

/// A single-threaded process's /proc/PID/schedstat: on CPU ns, waiting ns, runs.
fn schedstat(pid: i32) -> [u64; 3] {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap();
    let mut f = [0u64; 3];
    for (i, v) in stat.split_whitespace().take(3).enumerate() {
        f[i] = v.parse().unwrap();
    }
    f
}

/// Sums of a process's kernel figures over its tasks: /proc/PID/task/*/status switch
/// counters and /proc/PID/task/*/schedstat (on CPU ns, waiting ns, runs).
fn kernel_figures(pid: i32) -> [u64; 5] {
    let mut f = [0u64; 5];
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap();
        for l in status.lines() {
            if let Some(v) = l.strip_prefix("voluntary_ctxt_switches:") {
                f[0] += v.trim().parse::<u64>().unwrap();
            } else if let Some(v) = l.strip_prefix("nonvoluntary_ctxt_switches:") {
                f[1] += v.trim().parse::<u64>().unwrap();
            }
        }
        let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap();
        for (i, v) in stat.split_whitespace().take(3).enumerate() {
            f[2 + i] += v.parse::<u64>().unwrap();
        }
    }
    f
}

/// A zombie's figures once its last switch is in (its counters stop moving).
fn final_figures(pid: i32) -> [u64; 5] {
    let mut last = kernel_figures(pid);
    loop {
        thread::sleep(Duration::from_millis(30));
        let now = kernel_figures(pid);
        if now == last {
            return now;
        }
        last = now;
    }
}

fn oracle(out: &mut std::io::Stdout, pid: i32, comm: &str, f: [u64; 5], extra: &str) {
    writeln!(
        out,
        "oracle {{\"pid\":{pid},\"comm\":\"{comm}\",\"voluntary\":{},\"involuntary\":{},\"oncpu_ns\":{},\"runq_ns\":{},\"runs\":{}{extra}}}",
        f[0], f[1], f[2], f[3], f[4]
    )
    .unwrap();
}

/// The `xv-pingpong` process: ping-pong, tell the parent when the second thread was
/// started (unix seconds, 8 bytes), block for good.
fn pingpong(mut quiet: File) {
    set_name("xv-pingpong");
    pin_to_cpu(0);
    let (a_rx, b_tx) = pipe();
    let (b_rx, a_tx) = pipe();
    let (hold_rx, hold_tx) = pipe();
    let hold = std::sync::Arc::new(hold_rx);
    let h = hold.clone();
    let spawned = unix_s();
    thread::spawn(move || {
        pingpong_party(b_rx, b_tx, ROUNDS, false);
        let _ = (&*h).read(&mut [0u8; 1]);
    });
    pingpong_party(a_rx, a_tx, ROUNDS, true);
    quiet.write_all(&spawned.to_le_bytes()).unwrap();
    drop(quiet);
    let _ = (&*hold).read(&mut [0u8; 1]);
    drop(hold_tx);
}

pub fn run(out: &mut std::io::Stdout, wait_go: &dyn Fn()) {
    writeln!(out, "ready").unwrap();
    wait_go();
    let (ends_rx, ends_tx) = pipe();
    let (quiet_rx, quiet_tx) = pipe();
    let mut forked = HashMap::new();
    // A child's life as the kernel accounts it starts when fork queues it to run, just
    // before fork returns here (making it, before, can take tens of ms in an emulator).
    let mut fork = |comm: &'static str, body: Box<dyn FnOnce()>| {
        let pid = child(&ends_tx, body);
        forked.insert(pid, (comm, mono_ns()));
        pid
    };
    let pp = fork(
        "xv-pingpong",
        Box::new(move || {
            pingpong(quiet_tx);
        }),
    );
    let born_unix = unix_s();
    let exiting = [
        fork(
            "xv-sleeper",
            Box::new(|| {
                set_name("xv-sleeper");
                thread::sleep(Duration::from_millis(1500));
            }),
        ),
        fork(
            "xv-vforker",
            Box::new(|| {
                set_name("xv-vforker");
                let ms = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 1_000_000,
                };
                for _ in 0..100 {
                    reap(vfork_named(c"xv-vfchild", ms));
                }
                thread::sleep(Duration::from_millis(500));
            }),
        ),
        fork(
            "xv-hog",
            Box::new(|| {
                set_name("xv-hog");
                pin_to_cpu(1);
                spin_for(800);
            }),
        ),
        fork(
            "xv-rival",
            Box::new(|| {
                set_name("xv-rival");
                pin_to_cpu(1);
                spin_for(800);
            }),
        ),
    ];
    drop(ends_tx);
    // Each exiting child's end, as it reported it: (time, on CPU and waiting so far).
    let mut ends = HashMap::new();
    let mut rec = [0u8; END_RECORD];
    let mut ends_rx = ends_rx;
    while ends.len() < exiting.len() {
        ends_rx.read_exact(&mut rec).unwrap();
        let v: Vec<u64> = rec
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        ends.insert(v[0] as i32, (v[1], v[2], v[3]));
    }
    for pid in exiting {
        wait_zombie(pid);
        let (comm, t0) = forked[&pid];
        let (end, oncpu, waited) = ends[&pid];
        // Blocked from its fork to its exit: its wall time less its time on CPU and
        // waiting until then (it is not blocked after).
        let wall_s = (end - t0) as f64 / 1e9;
        let blocked_s = wall_s - (oncpu + waited) as f64 / 1e9;
        oracle(
            out,
            pid,
            comm,
            final_figures(pid),
            &format!(",\"wall_s\":{wall_s},\"blocked_s\":{blocked_s}"),
        );
        reap(pid);
    }
    let mut spawned = [0u8; 8];
    let mut quiet_rx = quiet_rx;
    quiet_rx.read_exact(&mut spawned).unwrap();
    let c = super::settled_counters(pp as u32);
    let f = kernel_figures(pp);
    assert_eq!(
        (c.voluntary, c.involuntary),
        (f[0], f[1]),
        "moved while read"
    );
    // Its two threads' births (unix seconds): the fork, and the second thread's spawn.
    oracle(
        out,
        pp,
        "xv-pingpong",
        f,
        &format!(
            ",\"born_unix\":[{born_unix},{}]",
            f64::from_le_bytes(spawned)
        ),
    );
    writeln!(out, "done").unwrap();
    wait_go();
}
