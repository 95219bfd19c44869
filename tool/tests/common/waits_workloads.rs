//! Workloads for `proclens waits` (tests/waits.rs), run in a child process through
//! [`super::workload`]'s protocol: `ready`, wait for `go`, run, print result lines, `done`,
//! then block (quiet) until stdin closes. Each makes its blocking and readiness calls as
//! raw syscalls (so their names are known: the C library makes `nanosleep` a
//! `clock_nanosleep` and may make `select` a `pselect6`), and measures itself with the
//! kernel's own per-thread figures, so the tests have an oracle outside proclens:
//!
//! - the workload's clock (`CLOCK_MONOTONIC`) around each blocking call, summed: an upper
//!   bound of the time blocked in it (it also holds the syscall's own time on CPU and the
//!   wait on the run queue after the wakeup);
//! - over a phase that blocks in nothing but the calls measured, the phase's wall time
//!   less the thread's time on CPU (`CLOCK_THREAD_CPUTIME_ID`) and its run-queue wait
//!   (`run_delay`, /proc/thread-self/schedstat) over it: the time the thread was off CPU
//!   and not runnable, i.e. blocked, by the kernel's own accounting of the rest;
//! - the thread's voluntary switches (`nvcsw`, getrusage `RUSAGE_THREAD`) around each
//!   call or phase.
//!
//! Result lines are `KIND key=value ...` (see [`Figures`]).
//!
//! - `waits-split`: [`SLEEPS`] × 10 ms `nanosleep`, then [`POLLS`] × 20 ms `poll` on a
//!   pipe nobody writes to; a `phase nanosleep ...` and a `phase poll ...` line.
//! - `waits-ready:N`: [`READY_FDS`] eventfds, one of them readable, waited on N times by
//!   each readiness call (see [`readiness`]); one `ready SYSCALL ...` line per call.
//! - `waits-futex:N`: [`FUTEX_WAITERS`] threads wait on one futex word that a poster
//!   thread bumps and wakes N times, 2 ms apart; one `waiter ...` line per waiter.

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use super::workload::pipe;

/// `waits-split`: nanosleeps of [`SLEEP_MS`], then polls of [`POLL_MS`].
pub const SLEEPS: u64 = 100;
pub const SLEEP_MS: u64 = 10;
pub const POLLS: u64 = 50;
pub const POLL_MS: u64 = 20;
/// `waits-ready`: the eventfds each call is handed (all below select's `FD_SETSIZE`), and
/// the one of them that is readable (its index).
pub const READY_FDS: usize = 1000;
const READY_INDEX: usize = 501;
/// `waits-ready`: what the second epoll instance keeps of the [`READY_FDS`] it was given.
pub const PWAIT_KEPT: usize = 500;
/// `waits-ready`: `epoll_wait` calls made to fail (EINVAL) after the others.
pub const FAILED: u64 = 10;

/// `waits-ready`: `maxevents` of `epoll_wait`, `epoll_pwait` and `epoll_pwait2`.
pub const MAXEVENTS: [i32; 3] = [64, 1, 8];
/// `waits-futex`: threads waiting on the word, and the poster's pause between posts.
pub const FUTEX_WAITERS: usize = 2;
pub const POST_MS: u64 = 2;

fn now_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid pointer.
    assert_eq!(unsafe { libc::clock_gettime(clock, &raw mut ts) }, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// This thread's voluntary switches so far (the kernel's `nvcsw`).
pub fn nvcsw() -> u64 {
    // SAFETY: a zeroed rusage filled by the kernel.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &raw mut ru) },
        0
    );
    ru.ru_nvcsw as u64
}

/// This thread's run-queue wait so far, ns (/proc/thread-self/schedstat's second field;
/// up to date while the thread runs: the scheduler adds each wait when the run begins).
/// Read without allocating: threads that allocate at once may contend for the allocator's
/// lock, a futex wait the futex workload must not make outside its measured calls.
fn run_delay_ns() -> u64 {
    let mut buf = [0u8; 128];
    // SAFETY: open, read into a stack buffer and close, on a NUL-terminated path.
    let n = unsafe {
        let fd = libc::open(c"/proc/thread-self/schedstat".as_ptr(), libc::O_RDONLY);
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    assert!(n > 0, "{}", std::io::Error::last_os_error());
    let text = std::str::from_utf8(&buf[..n as usize]).unwrap();
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The thread's own clocks at one moment.
#[derive(Clone, Copy)]
struct Stamp {
    wall: u64,
    cpu: u64,
    run_delay: u64,
    nvcsw: u64,
}

impl Stamp {
    fn now() -> Self {
        let nvcsw = nvcsw();
        let run_delay = run_delay_ns();
        let cpu = now_ns(libc::CLOCK_THREAD_CPUTIME_ID);
        Self {
            wall: now_ns(libc::CLOCK_MONOTONIC),
            cpu,
            run_delay,
            nvcsw,
        }
    }
}

/// The number of [`Figures`]' fields.
const FIGURES: usize = 9;

/// What a thread measured of its calls of one syscall over a phase in which it blocked in
/// nothing else. Printed as `KIND name=NAME calls=.. clock_ns=.. wall_ns=.. cpu_ns=..
/// run_delay_ns=.. nvcsw=.. nvcsw_in_calls=.. returned_0=.. tid=..`.
#[derive(Default)]
pub struct Figures {
    pub calls: u64,
    /// The clock around the calls, summed.
    pub clock_ns: u64,
    /// The phase's wall time, the thread's time on CPU and run-queue wait over it.
    pub wall_ns: u64,
    pub cpu_ns: u64,
    pub run_delay_ns: u64,
    /// Voluntary switches over the phase, and inside the calls.
    pub nvcsw: u64,
    pub nvcsw_in_calls: u64,
    /// Calls that returned 0.
    pub returned_0: u64,
    /// The thread that made them.
    pub tid: u64,
}

impl Figures {
    /// Runs `call` `n` times as one phase, measuring it.
    fn phase(n: u64, mut call: impl FnMut() -> i64) -> Self {
        let mut f = Self::default();
        let start = Stamp::now();
        for _ in 0..n {
            f.one(&mut call);
        }
        f.end(&start);
        f
    }

    /// One call, timed and its voluntary switches counted.
    fn one(&mut self, call: &mut impl FnMut() -> i64) -> i64 {
        let v0 = nvcsw();
        let t0 = now_ns(libc::CLOCK_MONOTONIC);
        let r = call();
        let t1 = now_ns(libc::CLOCK_MONOTONIC);
        let v1 = nvcsw();
        self.calls += 1;
        self.clock_ns += t1 - t0;
        self.nvcsw_in_calls += v1 - v0;
        if r == 0 {
            self.returned_0 += 1;
        }
        r
    }

    /// Closes the phase begun at `start`.
    fn end(&mut self, start: &Stamp) {
        let end = Stamp::now();
        self.wall_ns = end.wall - start.wall;
        self.cpu_ns = end.cpu - start.cpu;
        self.run_delay_ns = end.run_delay - start.run_delay;
        self.nvcsw = end.nvcsw - start.nvcsw;
        // SAFETY: gettid has no preconditions.
        self.tid = unsafe { libc::gettid() } as u64;
    }

    fn to_array(&self) -> [u64; FIGURES] {
        [
            self.calls,
            self.clock_ns,
            self.wall_ns,
            self.cpu_ns,
            self.run_delay_ns,
            self.nvcsw,
            self.nvcsw_in_calls,
            self.returned_0,
            self.tid,
        ]
    }

    fn from_array(a: [u64; FIGURES]) -> Self {
        let [
            calls,
            clock_ns,
            wall_ns,
            cpu_ns,
            run_delay_ns,
            nvcsw,
            nvcsw_in_calls,
            returned_0,
            tid,
        ] = a;
        Self {
            calls,
            clock_ns,
            wall_ns,
            cpu_ns,
            run_delay_ns,
            nvcsw,
            nvcsw_in_calls,
            returned_0,
            tid,
        }
    }

    fn line(&self, kind: &str, name: &str) -> String {
        let mut s = format!("{kind} name={name} tid={}", self.tid);
        for (k, v) in [
            ("calls", self.calls),
            ("clock_ns", self.clock_ns),
            ("wall_ns", self.wall_ns),
            ("cpu_ns", self.cpu_ns),
            ("run_delay_ns", self.run_delay_ns),
            ("nvcsw", self.nvcsw),
            ("nvcsw_in_calls", self.nvcsw_in_calls),
            ("returned_0", self.returned_0),
        ] {
            let _ = write!(s, " {k}={v}");
        }
        s
    }
}

/// `waits-split` (see the module).
fn split() -> Vec<String> {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: (SLEEP_MS * 1_000_000) as i64,
    };
    // Its write end stays open: never readable, never hung up.
    let (rx, tx) = pipe();
    let mut pfd = libc::pollfd {
        fd: rx.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let sleeps = Figures::phase(SLEEPS, || {
        // SAFETY: nanosleep with a valid timespec.
        unsafe {
            libc::syscall(
                libc::SYS_nanosleep,
                &raw const ts,
                std::ptr::null_mut::<u8>(),
            )
        }
    });
    let polls = Figures::phase(POLLS, || {
        // SAFETY: poll on one valid pollfd.
        unsafe { libc::syscall(libc::SYS_poll, &raw mut pfd, 1u64, POLL_MS as i64) }
    });
    drop(tx);
    assert_eq!(sleeps.returned_0, SLEEPS, "every nanosleep ran its course");
    assert_eq!(polls.returned_0, POLLS, "every poll timed out");
    vec![
        sleeps.line("phase", "nanosleep"),
        polls.line("phase", "poll"),
    ]
}

/// An empty `fd_set` with `fds` in it.
fn fd_set(fds: &[i32]) -> libc::fd_set {
    // SAFETY: a zeroed fd_set is empty; every fd is below FD_SETSIZE (checked).
    unsafe {
        let mut set: libc::fd_set = std::mem::zeroed();
        for &fd in fds {
            libc::FD_SET(fd, &raw mut set);
        }
        set
    }
}

/// `waits-ready:N`: makes [`READY_FDS`] eventfds after `go` (so proclens sees the epoll
/// instances made and filled), writes to one of them, then calls each readiness syscall N
/// times on them, each call finding exactly that one ready:
///
/// - `select` and `pselect6` with all of them (`nfds`: the highest + 1, printed);
/// - `poll` and `ppoll` with a `pollfd` each (`nfds` = [`READY_FDS`]);
/// - `epoll_wait` on an instance with all of them added (`maxevents` [`MAXEVENTS`]`[0]`);
/// - `epoll_pwait` on a second instance given all of them, then all but [`PWAIT_KEPT`]
///   removed again (the ready one kept; `maxevents` [`MAXEVENTS`]`[1]`);
/// - `epoll_pwait2` (5.11+) on the first instance (`maxevents` [`MAXEVENTS`]`[2]`).
///
/// Prints `ready name=SYSCALL calls=.. fds_in=.. interest=.. ready=..` per call made
/// (`fds_in`: per call; `ready`: summed), and `unavailable name=epoll_pwait2` on kernels
/// without it.
fn readiness(n: u64) -> Vec<String> {
    let line = |name: &str, fds_in: i64, interest: usize, ready: i64| {
        format!(
            "ready name={name} calls={n} fds_in={fds_in} interest={interest} ready={ready} failed=0"
        )
    };
    // n calls of `call`, each of which must succeed; what they returned, summed.
    let repeat = |call: &mut dyn FnMut() -> i64| -> i64 {
        (0..n)
            .map(|_| {
                let r = call();
                assert!(r >= 0, "{}", std::io::Error::last_os_error());
                r
            })
            .sum()
    };
    let null = std::ptr::null_mut::<libc::c_void>();
    let mut lines = Vec::new();
    // SAFETY: plain syscalls on fds and buffers this function owns (every fd below
    // FD_SETSIZE, checked); each int argument passed as a whole register.
    unsafe {
        let fds: Vec<i32> = (0..READY_FDS)
            .map(|_| {
                let fd = libc::eventfd(0, libc::EFD_CLOEXEC);
                assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
                fd
            })
            .collect();
        let highest = *fds.iter().max().unwrap();
        assert!(
            (highest as usize) < libc::FD_SETSIZE,
            "fd {highest} is beyond select's reach"
        );
        let one: u64 = 1;
        assert_eq!(libc::write(fds[READY_INDEX], (&raw const one).cast(), 8), 8);
        let nfds = i64::from(highest) + 1;
        let all = fd_set(&fds);

        let ready = repeat(&mut || {
            let mut set = all;
            libc::syscall(libc::SYS_select, nfds, &raw mut set, null, null, null)
        });
        lines.push(line("select", nfds, 0, ready));
        let ready = repeat(&mut || {
            let mut set = all;
            libc::syscall(
                libc::SYS_pselect6,
                nfds,
                &raw mut set,
                null,
                null,
                null,
                null,
            )
        });
        lines.push(line("pselect6", nfds, 0, ready));

        let mut pfds: Vec<libc::pollfd> = fds
            .iter()
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let count = READY_FDS as i64;
        let ready = repeat(&mut || libc::syscall(libc::SYS_poll, pfds.as_mut_ptr(), count, -1i64));
        lines.push(line("poll", count, 0, ready));
        let ready = repeat(&mut || {
            libc::syscall(libc::SYS_ppoll, pfds.as_mut_ptr(), count, null, null, 8i64)
        });
        lines.push(line("ppoll", count, 0, ready));

        let instance = |fds: &[i32]| {
            let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            assert!(ep >= 0);
            for &fd in fds {
                let mut ev = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: fd as u64,
                };
                assert_eq!(libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &raw mut ev), 0);
            }
            i64::from(ep)
        };
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        let ev = events.as_mut_ptr();
        let [mw, mp, mp2] = MAXEVENTS.map(i64::from);
        let a = instance(&fds);
        let ready = repeat(&mut || libc::syscall(libc::SYS_epoll_wait, a, ev, mw, -1i64));
        // And calls the kernel refuses (a maxevents of -1: EINVAL): counted as failed,
        // handed nothing.
        for _ in 0..FAILED {
            let r = libc::syscall(libc::SYS_epoll_wait, a, ev, -1i64, -1i64);
            assert_eq!(
                (r, std::io::Error::last_os_error().raw_os_error()),
                (-1, Some(libc::EINVAL))
            );
        }
        lines.push(
            line("epoll_wait", mw, READY_FDS, ready)
                .replace(" failed=0", &format!(" failed={FAILED}")),
        );

        let b = instance(&fds);
        let mut kept = 0;
        for (i, &fd) in fds.iter().enumerate() {
            if i == READY_INDEX || i % 2 == 1 {
                kept += 1;
            } else {
                let del = libc::epoll_ctl(b as i32, libc::EPOLL_CTL_DEL, fd, null.cast());
                assert_eq!(del, 0);
            }
        }
        assert_eq!(kept, PWAIT_KEPT);
        let ready =
            repeat(&mut || libc::syscall(libc::SYS_epoll_pwait, b, ev, mp, -1i64, null, 8i64));
        lines.push(line("epoll_pwait", mp, PWAIT_KEPT, ready));

        // A NULL timeout: wait for ever.
        let pwait2 = || libc::syscall(libc::SYS_epoll_pwait2, a, ev, mp2, null, null, 8i64);
        let first = pwait2();
        if first < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            lines.push("unavailable name=epoll_pwait2".into());
        } else {
            assert_eq!(first, 1);
            let ready = first + (1..n).map(|_| pwait2()).sum::<i64>();
            lines.push(line("epoll_pwait2", mp2, READY_FDS, ready));
        }
    }
    lines
}

/// `FUTEX_WAIT` on `word` while it holds `val` (private futex), no timeout.
fn futex_wait(word: &AtomicU32, val: u32) -> i64 {
    // SAFETY: a futex wait on a live word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            val,
            std::ptr::null::<libc::timespec>(),
        )
    }
}

fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: a futex wake on a live word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

/// Whether every thread of this process but the calling one is asleep (state S).
fn others_asleep() -> bool {
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() }.to_string();
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| t.file_name().to_string_lossy() != me)
        .all(|t| {
            std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'))
            })
        })
}

/// The futex workload's shared state.
struct Futexes {
    /// Threads that have reached their start wait.
    arrived: AtomicU32,
    /// Where they wait for the start: a byte each, read from a pipe (not a futex: that
    /// block, which began before proclens started, is charged to `read`, apart from the
    /// measured futex waits).
    start: std::fs::File,
    /// The poster's count of posts.
    seq: AtomicU32,
    /// Each waiter's figures ([`Figures::to_array`]), stored when it is done: the
    /// waiters do not allocate (see [`run_delay_ns`]), the main thread makes the lines.
    figures: [[AtomicU64; FIGURES]; FUTEX_WAITERS],
}

impl Futexes {
    /// Waits for the start, once arrived.
    fn wait_start(&self) {
        self.arrived.fetch_add(1, Ordering::AcqRel);
        (&self.start).read_exact(&mut [0u8; 1]).unwrap();
    }
}

/// `waits-futex:N` (see the module). The threads exist, blocked in read, before `ready`
/// (those blocks began before proclens was there: each is charged to `read` from the
/// moment proclens found it, as a thread asleep at start is); after `go` the
/// waiters' blocks are all in `FUTEX_WAIT`, the poster's all in nanosleep, and the main
/// thread's in read (a pipe the others write to when done); then all park in read. Nothing
/// else takes a lock: no other futex call is made in between.
fn futexes(n: u64, out: &mut std::io::Stdout, wait_go: &dyn Fn()) {
    let (start, mut start_tx) = pipe();
    let s = Arc::new(Futexes {
        arrived: AtomicU32::new(0),
        start,
        seq: AtomicU32::new(0),
        figures: Default::default(),
    });
    let (mut done_rx, done_tx) = pipe();
    let done_tx = Arc::new(done_tx);
    // Nobody writes to `hold`: the threads park on it when done.
    let (hold, hold_tx) = pipe();
    std::mem::forget(hold_tx);
    let hold = Arc::new(hold);
    for w in 0..FUTEX_WAITERS {
        let (s, done_tx, hold) = (s.clone(), done_tx.clone(), hold.clone());
        thread::spawn(move || {
            s.wait_start();
            let mut f = Figures::default();
            let start = Stamp::now();
            let mut seen = 0;
            while u64::from(seen) < n {
                let cur = s.seq.load(Ordering::Acquire);
                if cur == seen {
                    f.one(&mut || futex_wait(&s.seq, seen));
                } else {
                    seen = cur;
                }
            }
            f.end(&start);
            // Stored before the pipe's byte: the main thread reads them after.
            for (slot, v) in s.figures[w].iter().zip(f.to_array()) {
                slot.store(v, Ordering::Release);
            }
            (&*done_tx).write_all(b"w").unwrap();
            let _ = (&*hold).read(&mut [0u8; 1]);
        });
    }
    {
        let (s, done_tx, hold) = (s.clone(), done_tx.clone(), hold.clone());
        thread::spawn(move || {
            s.wait_start();
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: (POST_MS * 1_000_000) as i64,
            };
            for i in 1..=n {
                // SAFETY: nanosleep with a valid timespec.
                unsafe {
                    libc::syscall(
                        libc::SYS_nanosleep,
                        &raw const ts,
                        std::ptr::null_mut::<u8>(),
                    )
                };
                s.seq.store(i as u32, Ordering::Release);
                futex_wake_all(&s.seq);
            }
            (&*done_tx).write_all(b"p").unwrap();
            let _ = (&*hold).read(&mut [0u8; 1]);
        });
    }
    // Every thread blocked in its start wait before `ready`.
    while s.arrived.load(Ordering::Acquire) < 1 + FUTEX_WAITERS as u32 || !others_asleep() {
        thread::sleep(Duration::from_millis(10));
    }
    writeln!(out, "ready").unwrap();
    wait_go();
    start_tx.write_all(&[1; 1 + FUTEX_WAITERS]).unwrap();
    let mut got = [0u8; 1 + FUTEX_WAITERS];
    done_rx.read_exact(&mut got).unwrap();
    for f in &s.figures {
        let f = Figures::from_array(f.each_ref().map(|a| a.load(Ordering::Acquire)));
        writeln!(out, "{}", f.line("waiter", "futex")).unwrap();
    }
    writeln!(out, "done").unwrap();
    wait_go();
}

/// Runs workload `name` (argument `n`) if it is one of these; false for any other name.
pub fn run(name: &str, n: u64, out: &mut std::io::Stdout, wait_go: &dyn Fn()) -> bool {
    let work: fn(u64) -> Vec<String> = match name {
        "waits-split" => |_| split(),
        "waits-ready" => readiness,
        "waits-futex" => {
            futexes(n, out, wait_go);
            return true;
        }
        _ => return false,
    };
    writeln!(out, "ready").unwrap();
    wait_go();
    let result = work(n);
    for l in result {
        writeln!(out, "{l}").unwrap();
    }
    writeln!(out, "done").unwrap();
    wait_go();
    true
}
