//! Switch-accounting workloads (vfork and fork+exec children, blocking with a signal
//! pending, thread churn across cgroups, the cross-view mix), run in a child process
//! through [`super::workload`]'s protocol: `ready`, then `done` after `go` (or at once
//! under `proclens run`).

use std::{
    io::{Read as _, Write as _},
    thread,
    time::{Duration, Instant},
};

use super::workload::pin_to_cpu;

/// The stack a vfork child runs on: the parent is suspended until the child exits, so one
/// stack serves every child in turn.
static mut VFORK_STACK: [u8; 64 * 1024] = [0; 64 * 1024];

/// `vfork()` as the C library's `posix_spawn` makes it: a child sharing this process's
/// address space (`CLONE_VM`) that runs `child(arg)`, this thread suspended until it exits
/// (`CLONE_VFORK`). Returns its pid.
fn vfork_running(
    child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> i32 {
    // SAFETY: the child runs on its own stack, used by one child at a time (the parent is
    // suspended meanwhile); `child` only makes plain syscalls and exits.
    let pid = unsafe {
        let top = (&raw mut VFORK_STACK).cast::<u8>().add(64 * 1024);
        libc::clone(
            child,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            arg,
        )
    };
    assert!(pid > 0, "clone: {}", std::io::Error::last_os_error());
    pid
}

/// A vfork child that exits at once.
fn vfork_and_exit() -> i32 {
    extern "C" fn child(_: *mut libc::c_void) -> libc::c_int {
        // SAFETY: a vfork child may only exit (or exec).
        unsafe { libc::_exit(0) }
    }
    vfork_running(child, std::ptr::null_mut())
}

/// A vfork child that names itself `name` first (the task's own name, which the parent's
/// does not share) and blocks for `sleep` (switching out on the shared address space)
/// before it exits.
pub fn vfork_named(name: &'static std::ffi::CStr, sleep: libc::timespec) -> i32 {
    struct Arg {
        name: &'static std::ffi::CStr,
        sleep: libc::timespec,
    }
    extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the parent's `Arg`, alive while the parent is suspended.
        unsafe {
            let a = &*arg.cast::<Arg>();
            libc::prctl(libc::PR_SET_NAME, a.name.as_ptr());
            libc::nanosleep(&raw const a.sleep, std::ptr::null_mut());
            libc::_exit(0)
        }
    }
    let mut arg = Arg { name, sleep };
    vfork_running(child, (&raw mut arg).cast())
}

/// Reaps child `pid`.
pub fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid with a valid pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &raw mut status, 0) }, pid);
}

/// Forks a child that execs `/bin/true`; returns its pid.
fn fork_exec_true() -> i32 {
    let path = c"/bin/true";
    let argv = [path.as_ptr(), std::ptr::null()];
    // SAFETY: the child only calls execv and _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        unsafe {
            libc::execv(path.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    pid
}

/// Where a test names the workload's thread for an anchor tool to pick it out.
pub const COMM_ENV: &str = "PROCLENS_WORKLOAD_COMM";

/// Names the calling thread as [`COMM_ENV`] says, if it says.
fn name_from_env() {
    if let Ok(name) = std::env::var(COMM_ENV) {
        set_name(&name);
    }
}

/// Sets the calling thread's name (what /proc/PID/comm shows for a process's leader).
pub fn set_name(name: &str) {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: PR_SET_NAME with a NUL-terminated string.
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
}

extern "C" fn on_signal(_: libc::c_int) {}

/// Thread A sleeps (`nanosleep`, which sets its state before it checks for signals) while
/// thread B keeps sending it signals, for `ms`: some signals land between A's state change
/// and its switch, and the kernel then counts a voluntary switch at `TASK_RUNNING`. Then A
/// blocks for good (its counters stay in /proc). Prints `sleeper TID`.
fn signal_block(ms: u64, out: &mut std::io::Stdout) {
    // SAFETY: a handler that does nothing; SA_RESTART off so nanosleep returns.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigaction(libc::SIGUSR1, &raw const sa, std::ptr::null_mut());
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let until = Instant::now() + Duration::from_millis(ms);
    let (hold, never_written) = super::workload::pipe();
    // Its write end stays open as long as this process lives: the sleeper never wakes.
    std::mem::forget(never_written);
    thread::spawn(move || {
        name_from_env();
        pin_to_cpu(0);
        // SAFETY: gettid has no preconditions.
        tx.send(unsafe { libc::gettid() }).unwrap();
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 200_000,
        };
        while Instant::now() < until {
            // SAFETY: nanosleep with a valid timespec; EINTR is expected.
            unsafe { libc::nanosleep(&raw const ts, std::ptr::null_mut()) };
        }
        let _ = (&hold).read(&mut [0u8; 1]);
    });
    let tid = rx.recv().unwrap();
    pin_to_cpu(1);
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    while Instant::now() < until {
        // SAFETY: tgkill to a thread of this process.
        unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGUSR1) };
        for _ in 0..200 {
            std::hint::spin_loop();
        }
    }
    writeln!(out, "sleeper {tid}").unwrap();
}

/// Where a test names the cgroup the `probe` workload joins.
pub const PROBE_ENV: &str = "PROCLENS_PROBE_CGROUP";

/// Where a test names the two cgroups the churn moves between (`IN:OUT`, paths).
pub const CHURN_ENV: &str = "PROCLENS_CHURN_CGROUPS";

/// Threads alive at once in each round of the churn.
pub const CHURN_THREADS: u64 = 100;

/// The churn: this process joins cgroup IN (and switches there) before `ready`; then, for
/// each of `rounds` rounds, it joins IN, starts [`CHURN_THREADS`] threads that each sleep
/// 1 ms (a switch out in IN) and wait until all have, moves itself (every thread) to OUT,
/// and lets them exit there.
fn cgroup_churn(rounds: u64, out: &mut std::io::Stdout, wait_go: &dyn Fn()) {
    let cgroups = std::env::var(CHURN_ENV).unwrap();
    let (inside, outside) = cgroups.split_once(':').unwrap();
    let join = |dir: &str| std::fs::write(format!("{dir}/cgroup.procs"), "0").unwrap();
    join(inside);
    thread::sleep(Duration::from_millis(1));
    writeln!(out, "ready").unwrap();
    wait_go();
    for _ in 0..rounds {
        join(inside);
        let all = std::sync::Arc::new(std::sync::Barrier::new(CHURN_THREADS as usize + 1));
        let threads: Vec<_> = (0..CHURN_THREADS)
            .map(|_| {
                let all = all.clone();
                thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        thread::sleep(Duration::from_millis(1));
                        all.wait();
                    })
                    .unwrap()
            })
            .collect();
        all.wait();
        join(outside);
        for t in threads {
            t.join().unwrap();
        }
        // A join returns once a thread has exited, before its final switch: a moment
        // for those to happen before the next round wants table room (on a loaded
        // machine 37 rounds of 1,000 started while one was pending).
        thread::sleep(Duration::from_millis(2));
    }
    writeln!(out, "done").unwrap();
    wait_go();
}

/// Runs workload `name` with argument `n` if it is one of these; returns false for any
/// other name.
pub fn run(name: &str, n: u64, out: &mut std::io::Stdout, wait_go: &dyn Fn(), auto: bool) -> bool {
    let ready_go = |out: &mut std::io::Stdout| {
        if !auto {
            writeln!(out, "ready").unwrap();
            wait_go();
        }
    };
    let finish = |out: &mut std::io::Stdout| {
        if !auto {
            writeln!(out, "done").unwrap();
            wait_go();
        }
    };
    match name {
        // n vfork children (CLONE_VM | CLONE_VFORK) that exit at once, one after another,
        // all on CPU 0.
        "vfork" => {
            name_from_env();
            pin_to_cpu(0);
            ready_go(out);
            for _ in 0..n {
                reap(vfork_and_exit());
            }
            finish(out);
        }
        // n ordinary children that exec /bin/true, one after another, all on CPU 0.
        "fork-exec" => {
            name_from_env();
            pin_to_cpu(0);
            ready_go(out);
            for _ in 0..n {
                reap(fork_exec_true());
            }
            finish(out);
        }
        // Blocking with a signal pending, for n ms (see `signal_block`).
        "signal-block" => {
            ready_go(out);
            signal_block(n, out);
            finish(out);
        }
        "crossview" => super::crossview::run(out, wait_go),
        // A process of its own (this thread forked: its leader) that joins the cgroup
        // PROBE_ENV names, is named `xv-probe`, blocks n ms and exits: something
        // short-lived for views on that cgroup to show once they are attached.
        "probe" => {
            let dir = std::env::var(PROBE_ENV).unwrap();
            // SAFETY: the child makes plain syscalls and exits.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                std::fs::write(format!("{dir}/cgroup.procs"), "0").unwrap();
                set_name("xv-probe");
                thread::sleep(Duration::from_millis(n));
                // SAFETY: leaving the forked child at once.
                unsafe { libc::_exit(0) };
            }
            reap(pid);
        }
        "cgroup-churn" => cgroup_churn(n, out, wait_go),
        _ => return false,
    }
    true
}
