//! Lifecycle workloads (zombies, SIGCHLD ignored, orphans, fork storms), run in a child
//! process through [`super::workload`]'s protocol: `ready`, then one `done` per `go`.

use std::{io::Write as _, thread, time::Duration};

/// Where the `orphan` workload leaves its grandchild's pid (the test reads it).
pub fn orphan_pid_file(workload_pid: u32) -> String {
    format!("/tmp/proclens-test-orphan-{workload_pid}")
}

fn fork() -> i32 {
    // SAFETY: the child only calls async-signal-safe functions (_exit, read, close, write,
    // getpid, fork) before it exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    pid
}

/// Writes `pids` separated by spaces to `path`, without allocating (a forked child of a
/// multi-threaded process may not allocate).
fn write_pids(path: &std::ffi::CStr, pids: &[i32]) {
    let mut buf = [0u8; 128];
    let mut len = 0;
    for (i, &pid) in pids.iter().enumerate() {
        if i > 0 {
            buf[len] = b' ';
            len += 1;
        }
        let mut digits = [0u8; 12];
        let mut d = digits.len();
        let mut v = pid as u32;
        loop {
            d -= 1;
            digits[d] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let n = digits.len() - d;
        buf[len..len + n].copy_from_slice(&digits[d..]);
        len += n;
    }
    // SAFETY: plain fd operations on a NUL-terminated path.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            0o644,
        );
        libc::write(fd, buf.as_ptr().cast(), len);
        libc::close(fd);
    }
}

fn become_subreaper() {
    // SAFETY: prctl with plain integer arguments.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
}

/// A pipe that parks children (see [`fork_parked`]), and `orphan_pid_file` (removed, and
/// as a C string made before any fork: a forked child must not allocate).
fn orphan_setup() -> ([i32; 2], String, std::ffi::CString) {
    let mut fds = [0; 2];
    // SAFETY: pipe with a valid array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let path = orphan_pid_file(std::process::id());
    let _ = std::fs::remove_file(&path);
    let cpath = std::ffi::CString::new(path.clone()).unwrap();
    (fds, path, cpath)
}

/// Forks a child that lives until the pipe `fds`'s write end is closed everywhere.
fn fork_parked(fds: [i32; 2]) -> i32 {
    let pid = fork();
    if pid == 0 {
        // SAFETY: plain fd operations in the forked child.
        unsafe {
            libc::close(fds[1]);
            let mut b = 0u8;
            libc::read(fds[0], (&raw mut b).cast(), 1);
            libc::_exit(0);
        }
    }
    pid
}

/// Sleeps `ms` without allocating (nanosleep).
fn pause_ms(ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: nanosleep with a valid timespec.
    unsafe { libc::nanosleep(&raw const ts, std::ptr::null_mut()) };
}

/// Reaps every child left, whatever it is.
fn reap_all() {
    let mut status = 0;
    // SAFETY: waitpid with a valid pointer.
    while unsafe { libc::waitpid(-1, &raw mut status, 0) } > 0 {}
}

fn reap(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waitpid with a valid pointer.
    let r = unsafe { libc::waitpid(pid, &raw mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    status
}

/// Runs workload `name` with argument `n` if it is a lifecycle workload; returns false for
/// any other name.
pub fn run(name: &str, n: u64, out: &mut std::io::Stdout, wait_go: &dyn Fn()) -> bool {
    match name {
        // n children exit with codes 1..=n, 150 ms apart, and stay unreaped (zombies).
        // Second `go`: reap them all.
        "zombies" => {
            writeln!(out, "ready").unwrap();
            wait_go();
            let mut kids = Vec::new();
            for i in 0..n {
                let pid = fork();
                if pid == 0 {
                    // SAFETY: leaving the forked child at once.
                    unsafe { libc::_exit(i as i32 + 1) };
                }
                kids.push(pid);
                thread::sleep(Duration::from_millis(150));
            }
            writeln!(out, "done").unwrap();
            wait_go();
            for (i, pid) in kids.into_iter().enumerate() {
                let st = reap(pid);
                assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == i as i32 + 1);
            }
            writeln!(out, "done").unwrap();
            wait_go();
        }
        // Two children exec and die unreaped: `/bin/sh -c "exit 7"`, and `/bin/sleep 100`
        // killed with SIGKILL. Second `go`: reap them.
        "exec-zombies" => {
            // Made before forking: the forked children must not allocate.
            let sh = [
                c"/bin/sh".as_ptr(),
                c"-c".as_ptr(),
                c"exit 7".as_ptr(),
                std::ptr::null(),
            ];
            let sleep = [c"/bin/sleep".as_ptr(), c"100".as_ptr(), std::ptr::null()];
            writeln!(out, "ready").unwrap();
            wait_go();
            let mut kids = Vec::new();
            for argv in [&sh[..], &sleep[..]] {
                let pid = fork();
                if pid == 0 {
                    // SAFETY: NUL-terminated argv of static C strings; _exit if exec fails.
                    unsafe {
                        libc::execv(argv[0], argv.as_ptr());
                        libc::_exit(127);
                    }
                }
                kids.push(pid);
            }
            // Let sleep start (exec done), then kill it.
            thread::sleep(Duration::from_millis(300));
            // SAFETY: signalling our own child.
            unsafe { libc::kill(kids[1], libc::SIGKILL) };
            thread::sleep(Duration::from_millis(100));
            writeln!(out, "done").unwrap();
            wait_go();
            for pid in kids {
                reap(pid);
            }
            writeln!(out, "done").unwrap();
            wait_go();
        }
        // A child whose leader thread exits (SYS_exit, the thread only) while a second
        // thread lives on: /proc shows it `Z` (ps `Zl`) but it is no zombie. Second `go`:
        // the thread ends, the process dies and, unreaped, becomes a zombie. Its pid is
        // in `orphan_pid_file`.
        "dead-leader" => {
            let mut fds = [0; 2];
            // SAFETY: pipe with a valid array.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            extern "C" fn park(arg: *mut libc::c_void) -> *mut libc::c_void {
                let mut b = 0u8;
                // SAFETY: reads one byte from the fd passed in; returns at EOF.
                unsafe { libc::read(arg as usize as i32, (&raw mut b).cast(), 1) };
                std::ptr::null_mut()
            }
            writeln!(out, "ready").unwrap();
            wait_go();
            let child = fork();
            if child == 0 {
                // SAFETY: the forked child has one thread; pthread_create maps its own stack;
                // SYS_exit ends only the calling (leader) thread, without unwinding.
                unsafe {
                    libc::close(fds[1]);
                    let mut t: libc::pthread_t = std::mem::zeroed();
                    if libc::pthread_create(
                        &raw mut t,
                        std::ptr::null(),
                        park,
                        fds[0] as usize as *mut libc::c_void,
                    ) != 0
                    {
                        libc::_exit(99);
                    }
                    libc::syscall(libc::SYS_exit, 0);
                }
            }
            // SAFETY: our copy of the read end is not needed.
            unsafe { libc::close(fds[0]) };
            std::fs::write(orphan_pid_file(std::process::id()), child.to_string()).unwrap();
            thread::sleep(Duration::from_millis(100));
            writeln!(out, "done").unwrap();
            wait_go();
            // SAFETY: closing our write end: the child's thread reads EOF and returns.
            unsafe { libc::close(fds[1]) };
            thread::sleep(Duration::from_millis(100));
            writeln!(out, "done").unwrap();
            wait_go();
            reap(child);
            let _ = std::fs::remove_file(orphan_pid_file(std::process::id()));
        }
        // SIGCHLD is ignored: n children exit and the kernel reaps them itself.
        "sigign" => {
            // SAFETY: setting a signal disposition.
            unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
            writeln!(out, "ready").unwrap();
            wait_go();
            for _ in 0..n {
                if fork() == 0 {
                    // SAFETY: leaving the forked child at once.
                    unsafe { libc::_exit(3) };
                }
                thread::sleep(Duration::from_millis(20));
            }
            thread::sleep(Duration::from_millis(200));
            writeln!(out, "done").unwrap();
            wait_go();
        }
        // A double fork: the middle child forks a grandchild and exits; the grandchild is
        // orphaned. With n == 1 this process is a child subreaper first.
        "orphan" => {
            if n == 1 {
                become_subreaper();
            }
            let (fds, path, cpath) = orphan_setup();
            writeln!(out, "ready").unwrap();
            wait_go();
            let middle = fork();
            if middle == 0 {
                // Lives until the workload closes the pipe's write end (it exits).
                let grandchild = fork_parked(fds);
                // The pid goes to a file before the middle child exits (no allocation).
                write_pids(&cpath, &[grandchild]);
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(0) };
            }
            reap(middle);
            writeln!(out, "done").unwrap();
            wait_go();
            // SAFETY: closing our own fd; the grandchild's read returns and it exits.
            unsafe { libc::close(fds[1]) };
            let _ = std::fs::remove_file(&path);
        }
        // Issue 16's subreaper case: this process is a child subreaper S; it forks P, P
        // forks Z (exits 5 at once) and L (lives until this process closes a pipe), then
        // P exits (6) without waiting: the kernel hands Z and L to S, and Z and P are S's
        // zombies. `orphan_pid_file` gets "P Z L". Second `go`: L ends; then S reaps all.
        "subreaper-zombies" => {
            become_subreaper();
            let (fds, path, cpath) = orphan_setup();
            writeln!(out, "ready").unwrap();
            wait_go();
            let p = fork();
            if p == 0 {
                let z = fork();
                if z == 0 {
                    // SAFETY: leaving the forked child at once.
                    unsafe { libc::_exit(5) };
                }
                let l = fork_parked(fds);
                // SAFETY: getpid has no preconditions.
                write_pids(&cpath, &[unsafe { libc::getpid() }, z, l]);
                // Z is a zombie of P's before P dies.
                pause_ms(100);
                // SAFETY: leaving the forked child without waiting for its children.
                unsafe { libc::_exit(6) };
            }
            thread::sleep(Duration::from_millis(300));
            writeln!(out, "done").unwrap();
            wait_go();
            // SAFETY: closing our write end: L reads EOF and exits.
            unsafe { libc::close(fds[1]) };
            thread::sleep(Duration::from_millis(100));
            writeln!(out, "done").unwrap();
            wait_go();
            reap_all();
            let _ = std::fs::remove_file(&path);
        }
        // Issue 16's pid-namespace case, run as the init of a new pid namespace (`unshare
        // --pid --fork`): n children exit at once (codes 1..=n) and a middle child M forks
        // G, G exits (7), M exits (8) without waiting, so the kernel hands G to this init.
        // It never waits: n + 2 zombies. It ends (and the kernel reaps them all) when
        // stdin closes.
        "ns-init-zombies" => {
            writeln!(out, "ready").unwrap();
            wait_go();
            for i in 0..n {
                if fork() == 0 {
                    // SAFETY: leaving the forked child at once.
                    unsafe { libc::_exit(i as i32 + 1) };
                }
            }
            if fork() == 0 {
                if fork() == 0 {
                    // SAFETY: leaving the forked child at once.
                    unsafe { libc::_exit(7) };
                }
                pause_ms(100);
                // SAFETY: leaving without waiting for G.
                unsafe { libc::_exit(8) };
            }
            thread::sleep(Duration::from_millis(300));
            writeln!(out, "done").unwrap();
            wait_go();
        }
        // n children, each forked and waited for at once: none is ever a zombie for long.
        "wait-at-once" => {
            writeln!(out, "ready").unwrap();
            wait_go();
            for _ in 0..n {
                let pid = fork();
                if pid == 0 {
                    // SAFETY: leaving the forked child at once.
                    unsafe { libc::_exit(0) };
                }
                reap(pid);
            }
            writeln!(out, "done").unwrap();
            wait_go();
        }
        // n short-lived children, forked in batches of 64 and reaped after each batch, so
        // children exit while their siblings are being forked (both CPUs busy).
        "fork-storm" => {
            writeln!(out, "ready").unwrap();
            wait_go();
            let mut left = n;
            while left > 0 {
                let batch = left.min(64);
                let kids: Vec<i32> = (0..batch)
                    .map(|_| {
                        let pid = fork();
                        if pid == 0 {
                            // SAFETY: leaving the forked child at once.
                            unsafe { libc::_exit(0) };
                        }
                        pid
                    })
                    .collect();
                for pid in kids {
                    reap(pid);
                }
                left -= batch;
            }
            writeln!(out, "done").unwrap();
            wait_go();
        }
        _ => return false,
    }
    true
}
