//! Workloads for issue 7 ("under load"), run in a child process through
//! [`super::workload`]'s protocol: `ready`, wait for `go`, run, print result lines, `done`,
//! then block (quiet) until stdin closes. Every count they print is exact: the tests compare
//! it with proclens's figures.
//!
//! - `load-pidreuse`: two short-lived children get the same pid (see [`pid_reuse`]).
//! - `load-forks:SECS`: fork storm (clone with `CLONE_VM|CLONE_VFORK`, the child `_exit`s
//!   at once: its only syscall is `exit_group`); prints `forks N`.
//! - `load-writes:SECS`: syscall storm, 1-byte writes to /dev/null; prints `writes N`.
//! - `load-switches:SECS`: switch storm, two threads pinned to CPU 0 pass a byte back and
//!   forth through pipes; prints `round_trips N`. Both threads stay alive (parked) after.
//!
//! The storm workloads rename themselves (`forkstorm`, `writestorm`, `switchstorm`) so the
//! tests can select them (and the fork storm's children, which inherit the name) by name.

use std::{
    io::{Read as _, Write as _},
    os::fd::AsRawFd as _,
    thread,
    time::{Duration, Instant},
};

use super::workload::{pin_to_cpu, pipe};

/// Bytes process A writes in the pid-reuse workload (two calls), and its exit code.
pub const REUSE_A_BYTES: [usize; 2] = [1000, 234];
pub const REUSE_A_EXIT: i32 = 3;
/// Bytes process B (same pid as A) writes (three calls), and its exit code.
pub const REUSE_B_BYTES: [usize; 3] = [4000, 1000, 678];
pub const REUSE_B_EXIT: i32 = 4;
/// How long each child stays a zombie before it is reaped (so `zombies --watch
/// --min-age 0` sees both).
pub const REUSE_ZOMBIE_MS: u64 = 400;

/// Names this thread (the name its forks inherit) and the process (its leader thread, the
/// name /proc/PID/comm shows): the workload runs on the test harness's thread, not the
/// leader.
fn set_name(name: &str) {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: PR_SET_NAME with a NUL-terminated string.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) }, 0);
    std::fs::write("/proc/self/comm", name).unwrap();
}

fn reap(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waitpid with a valid pointer.
    let r = unsafe { libc::waitpid(pid, &raw mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    status
}

fn dev_null() -> std::fs::File {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap()
}

/// Forks a child that, if its pid is `want` (or any pid when `want` is 0), writes the
/// given chunks to `fd` and exits with `code`; with another pid it exits with 99 at once.
fn child_writing(fd: i32, chunks: &[usize], code: i32, want: i32) -> i32 {
    // Made before forking: the child must not allocate (other threads may hold locks).
    static BUF: [u8; 8192] = [b'x'; 8192];
    // SAFETY: the child only calls async-signal-safe functions (getpid, write, _exit).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        unsafe {
            if want != 0 && libc::getpid() != want {
                libc::_exit(99);
            }
            for &n in chunks {
                if libc::write(fd, BUF.as_ptr().cast(), n) != n as isize {
                    libc::_exit(98);
                }
            }
            libc::_exit(code);
        }
    }
    pid
}

/// Process A writes `REUSE_A_BYTES` to /dev/null, exits, stays a zombie for a while and is
/// reaped; then the next fork is made to get A's pid (`ns_last_pid` set to pid - 1 just
/// before it, retried when another fork on the machine takes the pid first), and that
/// process B writes `REUSE_B_BYTES`, exits and is reaped likewise. Prints `pid X tries T`.
fn pid_reuse() -> String {
    let null = dev_null();
    let fd = null.as_raw_fd();
    let a = child_writing(fd, &REUSE_A_BYTES, REUSE_A_EXIT, 0);
    thread::sleep(Duration::from_millis(REUSE_ZOMBIE_MS));
    let st = reap(a);
    assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == REUSE_A_EXIT);
    for tries in 1..=200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", a - 1))
            .expect("writing /proc/sys/kernel/ns_last_pid (needs root)");
        let b = child_writing(fd, &REUSE_B_BYTES, REUSE_B_EXIT, a);
        if b != a {
            assert_eq!(libc::WEXITSTATUS(reap(b)), 99);
            continue;
        }
        thread::sleep(Duration::from_millis(REUSE_ZOMBIE_MS));
        let st = reap(b);
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == REUSE_B_EXIT);
        return format!("pid {a} tries {tries}");
    }
    panic!("could not get pid {a} again in 200 tries");
}

/// The fork storm's child: its stack is its own (`CLONE_VM` shares the address space, not
/// the stack), and `_exit` is its only syscall.
extern "C" fn storm_child(_: *mut libc::c_void) -> libc::c_int {
    // SAFETY: leaving the child at once.
    unsafe { libc::_exit(0) }
}

fn fork_storm(secs: u64) -> String {
    set_name("forkstorm");
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: the top of a live buffer, 16-byte aligned.
    let top = unsafe { stack.as_mut_ptr().add(stack.len()) };
    let top = (top as usize & !15) as *mut libc::c_void;
    let end = Instant::now() + Duration::from_secs(secs);
    let mut forks = 0u64;
    let mut failed = 0u64;
    let started = Instant::now();
    while Instant::now() < end {
        for _ in 0..64 {
            // SAFETY: CLONE_VFORK suspends this thread until the child has exited, so the
            // child's stack is not reused while it runs.
            let pid = unsafe {
                libc::clone(
                    storm_child,
                    top,
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    std::ptr::null_mut(),
                )
            };
            if pid < 0 {
                failed += 1;
                continue;
            }
            reap(pid);
            forks += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    format!(
        "forks {forks} failed {failed} secs {secs:.3} rate {:.0}",
        forks as f64 / secs
    )
}

fn write_storm(secs: u64) -> String {
    set_name("writestorm");
    let mut null = dev_null();
    let end = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut writes = 0u64;
    while Instant::now() < end {
        for _ in 0..4096 {
            assert_eq!(null.write(b"x").unwrap(), 1);
        }
        writes += 4096;
    }
    let secs = started.elapsed().as_secs_f64();
    format!(
        "writes {writes} secs {secs:.3} rate {:.0}",
        writes as f64 / secs
    )
}

fn switch_storm(secs: u64) -> String {
    set_name("switchstorm");
    let (mut a_rx, mut b_tx) = pipe();
    let (mut b_rx, mut a_tx) = pipe();
    // Nobody writes to `hold`: after the storm the echo thread parks on it, alive and
    // quiet, so /proc keeps its switch counters for the test to read.
    let (mut hold_rx, hold_tx) = pipe();
    std::mem::forget(hold_tx);
    thread::spawn(move || {
        pin_to_cpu(0);
        let mut b = [0u8; 1];
        // Ends when the other side closes its end.
        while b_rx.read(&mut b).unwrap() == 1 {
            b_tx.write_all(&b).unwrap();
        }
        let _ = hold_rx.read(&mut b);
    });
    pin_to_cpu(0);
    let end = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut trips = 0u64;
    let mut b = [0u8; 1];
    while Instant::now() < end {
        for _ in 0..256 {
            a_tx.write_all(b"x").unwrap();
            a_rx.read_exact(&mut b).unwrap();
        }
        trips += 256;
    }
    let secs = started.elapsed().as_secs_f64();
    drop(a_tx);
    format!(
        "round_trips {trips} secs {secs:.3} rate {:.0}",
        trips as f64 / secs
    )
}

/// Runs workload `name` (argument `n`) if it is one of these; false for any other name.
pub fn run(name: &str, n: u64, out: &mut std::io::Stdout, wait_go: &dyn Fn()) -> bool {
    let work: fn(u64) -> String = match name {
        "load-pidreuse" => |_| pid_reuse(),
        "load-forks" => fork_storm,
        "load-writes" => write_storm,
        "load-switches" => switch_storm,
        // n getppid() calls under the harness's name, then n more renamed to
        // plnew<pid % 100000> (tests/filters.rs).
        "load-rename-syscalls" => |n| {
            for _ in 0..n {
                // SAFETY: no arguments.
                unsafe { libc::getppid() };
            }
            set_name(&format!("plnew{}", std::process::id() % 100_000));
            for _ in 0..n {
                // SAFETY: no arguments.
                unsafe { libc::getppid() };
            }
            String::new()
        },
        _ => return false,
    };
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    wait_go();
    let result = work(n);
    writeln!(out, "{result}").unwrap();
    writeln!(out, "done").unwrap();
    out.flush().unwrap();
    wait_go();
    true
}
