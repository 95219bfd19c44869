//! Workloads that block a known number of times in known syscalls and measure their own
//! blocked time (`tests/blocked_in.rs`): the raw syscalls (glibc's `nanosleep` is the
//! `clock_nanosleep` syscall), each loop timed by the thread itself.
//!
//! A thread's blocked time over a window is its wall time less its time on a CPU and its
//! time waiting for one, both from its own `/proc/thread-self/schedstat` (the scheduler's
//! clock, which proclens's switch program reads too): what is left is the time it was
//! switched out and not runnable, which is what proclens calls blocked. (The task clock
//! leaves out the interrupt and steal time that hit the thread on a CPU, which this
//! counts as blocked: on a busy VM it reads a few ms in 1 s more than proclens.)

use std::io::Write as _;

/// Where `blocked-child` writes its measurements, one line per loop:
/// `SYSCALL BLOCKED_NS WALL_NS BLOCKS`.
pub const OUT_ENV: &str = "PROCLENS_BLOCKED_OUT";

/// The name `blocked-sleeps` gives its process.
pub fn comm_for(pid: u32) -> String {
    format!("plblk{pid}")
}

/// One reading of the thread's clocks, ns: wall (monotonic), on CPU, waiting for a CPU.
#[derive(Clone, Copy)]
struct Clocks {
    wall: u64,
    oncpu: u64,
    runq: u64,
}

/// The calling thread's clocks; async-signal-safe (raw syscalls and the stack only), so
/// that a child forked from this multi-threaded test binary may call it.
fn clocks() -> Clocks {
    let mut buf = [0u8; 128];
    // SAFETY: a NUL-terminated path; read into a stack buffer of its length.
    let n = unsafe {
        let fd = libc::open(
            c"/proc/thread-self/schedstat".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        assert!(fd >= 0, "open /proc/thread-self/schedstat");
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    assert!(n > 0, "read /proc/thread-self/schedstat");
    let mut fields = [0u64; 2];
    let mut i = 0;
    for &b in &buf[..n as usize] {
        if b.is_ascii_digit() {
            fields[i] = fields[i] * 10 + u64::from(b - b'0');
        } else {
            i += 1;
            if i == fields.len() {
                break;
            }
        }
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    Clocks {
        wall: ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64,
        oncpu: fields[0],
        runq: fields[1],
    }
}

/// What a loop measured: its blocked time and its wall time, ns.
#[derive(Clone, Copy)]
struct Measured {
    blocked_ns: u64,
    wall_ns: u64,
}

fn since(a: Clocks) -> Measured {
    let b = clocks();
    let wall_ns = b.wall - a.wall;
    Measured {
        blocked_ns: wall_ns - (b.oncpu - a.oncpu) - (b.runq - a.runq),
        wall_ns,
    }
}

/// `n` raw `nanosleep` calls of 10 ms each.
fn sleeps(n: u64) -> Measured {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 10_000_000,
    };
    let start = clocks();
    for _ in 0..n {
        // SAFETY: a valid timespec, no remainder wanted.
        let r = unsafe {
            libc::syscall(
                libc::SYS_nanosleep,
                &raw const ts,
                std::ptr::null_mut::<libc::timespec>(),
            )
        };
        assert_eq!(r, 0, "nanosleep");
    }
    since(start)
}

/// `n` raw `poll` calls of 20 ms each on the read end of a pipe whose write end stays
/// open and unwritten: each times out with nothing ready.
fn polls(n: u64) -> Measured {
    let mut fds = [0; 2];
    // SAFETY: pipe with a valid array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let mut pfd = libc::pollfd {
        fd: fds[0],
        events: libc::POLLIN,
        revents: 0,
    };
    let start = clocks();
    for _ in 0..n {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::syscall(libc::SYS_poll, &raw mut pfd, 1, 20) };
        assert_eq!(r, 0, "poll: nothing is ever ready");
    }
    let m = since(start);
    // SAFETY: the pipe's own fds.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    m
}

/// Runs `name` if it is one of these workloads; false otherwise.
pub fn run(name: &str, n: u64, out: &mut std::io::Stdout, wait_go: &dyn Fn(), auto: bool) -> bool {
    match name {
        // Named `plblk<pid>` (the process, through its leader's /proc comm), it sleeps
        // `n` times 10 ms in raw nanosleep and prints `measured BLOCKED_NS WALL_NS`.
        "blocked-sleeps" => {
            std::fs::write("/proc/self/comm", comm_for(std::process::id())).unwrap();
            writeln!(out, "ready").unwrap();
            wait_go();
            let m = sleeps(n);
            writeln!(out, "measured {} {}", m.blocked_ns, m.wall_ns).unwrap();
            writeln!(out, "done").unwrap();
            wait_go();
        }
        // A child process sleeps `n` times 10 ms in raw nanosleep, then polls `n / 2`
        // times 20 ms on a pipe nobody writes to; it hands its measurements to this
        // process, which writes them to the file named by OUT_ENV (see there).
        "blocked-child" => {
            if !auto {
                writeln!(out, "ready").unwrap();
                wait_go();
            }
            let mut fds = [0; 2];
            // SAFETY: pipe with a valid array.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: the child makes raw syscalls on its stack only, then _exits.
            let child = unsafe { libc::fork() };
            assert!(child >= 0);
            if child == 0 {
                let s = sleeps(n);
                let p = polls(n / 2);
                let words = [s.blocked_ns, s.wall_ns, p.blocked_ns, p.wall_ns];
                // SAFETY: writes the array's bytes to the pipe, then exits.
                unsafe {
                    libc::write(fds[1], words.as_ptr().cast(), size_of_val(&words));
                    libc::_exit(0);
                }
            }
            // SAFETY: this process's copy of the write end.
            unsafe { libc::close(fds[1]) };
            let mut bytes = [0u8; 32];
            let mut got = 0;
            while got < bytes.len() {
                // SAFETY: reads into the rest of the buffer.
                let r = unsafe {
                    libc::read(fds[0], bytes[got..].as_mut_ptr().cast(), bytes.len() - got)
                };
                assert!(r > 0, "the child's measurements");
                got += r as usize;
            }
            let w: Vec<u64> = bytes
                .chunks(8)
                .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
                .collect();
            let mut status = 0;
            // SAFETY: reaps our own child.
            assert_eq!(unsafe { libc::waitpid(child, &raw mut status, 0) }, child);
            if let Ok(path) = std::env::var(OUT_ENV) {
                std::fs::write(
                    path,
                    format!(
                        "nanosleep {} {} {n}\npoll {} {} {}\n",
                        w[0],
                        w[1],
                        w[2],
                        w[3],
                        n / 2
                    ),
                )
                .unwrap();
            }
            if !auto {
                writeln!(out, "done").unwrap();
                wait_go();
            }
        }
        _ => return false,
    }
    true
}
