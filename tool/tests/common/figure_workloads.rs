//! Workloads for what the copy figures claim (issue 17): recvmmsg/sendmmsg,
//! `process_vm_readv/writev`, calls that would block or are interrupted, file reads that
//! never pair with socket writes, and an `io_uring` set up before proclens starts. Run like
//! the other copy workloads (`copy-<name>:<n>`, see `copy_workloads::run`): their set-up
//! happens before `ready`.

use std::{
    ffi::c_void,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

/// The message sizes of one sendmmsg: 100, 200, ... 800 bytes, 3,600 in all.
pub const MMSG_SIZES: [usize; 8] = [100, 200, 300, 400, 500, 600, 700, 800];

fn check(ret: isize, what: &str) -> usize {
    assert!(
        ret >= 0,
        "{what} failed: {}",
        std::io::Error::last_os_error()
    );
    ret as usize
}

/// A UDP socket on 127.0.0.1, bound to an ephemeral port.
fn udp() -> (OwnedFd, libc::sockaddr_in) {
    // SAFETY: socket/bind/getsockname with valid arguments.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as u16;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = size_of::<libc::sockaddr_in>() as u32;
        assert_eq!(libc::bind(fd, (&raw const addr).cast(), len), 0);
        let mut got = len;
        assert_eq!(
            libc::getsockname(fd, (&raw mut addr).cast(), &raw mut got),
            0
        );
        (OwnedFd::from_raw_fd(fd), addr)
    }
}

fn connect(fd: RawFd, to: &libc::sockaddr_in) {
    let len = size_of::<libc::sockaddr_in>() as u32;
    // SAFETY: a valid address of the stated length.
    assert_eq!(
        unsafe { libc::connect(fd, (&raw const *to).cast(), len) },
        0
    );
}

/// `rounds` times: one sendmmsg of the eight [`MMSG_SIZES`] messages over loopback UDP,
/// and one recvmmsg of eight (it blocks until all eight are in).
fn mmsg(rounds: u64) -> impl FnOnce() {
    let (a, a_addr) = udp();
    let (b, b_addr) = udp();
    connect(a.as_raw_fd(), &b_addr);
    connect(b.as_raw_fd(), &a_addr);
    move || {
        let out: Vec<Vec<u8>> = MMSG_SIZES.iter().map(|&n| vec![7u8; n]).collect();
        let mut inb: Vec<Vec<u8>> = MMSG_SIZES.iter().map(|_| vec![0u8; 2048]).collect();
        for _ in 0..rounds {
            let mut iov: Vec<libc::iovec> = out
                .iter()
                .map(|m| libc::iovec {
                    iov_base: m.as_ptr() as *mut c_void,
                    iov_len: m.len(),
                })
                .collect();
            // SAFETY: zeroed mmsghdrs pointing at live iovecs.
            let mut hdrs: Vec<libc::mmsghdr> = iov
                .iter_mut()
                .map(|v| {
                    let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    h.msg_hdr.msg_iov = v;
                    h.msg_hdr.msg_iovlen = 1;
                    h
                })
                .collect();
            // SAFETY: a vector of 8 valid headers.
            let sent = unsafe { libc::sendmmsg(a.as_raw_fd(), hdrs.as_mut_ptr(), 8, 0) };
            assert_eq!(sent, 8, "sendmmsg: {}", std::io::Error::last_os_error());
            let mut riov: Vec<libc::iovec> = inb
                .iter_mut()
                .map(|m| libc::iovec {
                    iov_base: m.as_mut_ptr().cast(),
                    iov_len: m.len(),
                })
                .collect();
            let mut rhdrs: Vec<libc::mmsghdr> = riov
                .iter_mut()
                .map(|v| {
                    let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    h.msg_hdr.msg_iov = v;
                    h.msg_hdr.msg_iovlen = 1;
                    h
                })
                .collect();
            // SAFETY: a vector of 8 valid headers, no timeout.
            let got = unsafe {
                libc::recvmmsg(
                    b.as_raw_fd(),
                    rhdrs.as_mut_ptr(),
                    8,
                    0,
                    std::ptr::null_mut(),
                )
            };
            assert_eq!(got, 8, "recvmmsg: {}", std::io::Error::last_os_error());
            let lens: Vec<usize> = rhdrs.iter().map(|h| h.msg_len as usize).collect();
            assert_eq!(lens, MMSG_SIZES);
        }
    }
}

/// `process_vm_readv` then `process_vm_writev` of `size` bytes between two buffers of this
/// process, 64 KiB per call.
fn process_vm(size: u64) -> impl FnOnce() {
    move || {
        const CHUNK: usize = 64 * 1024;
        let remote = vec![5u8; CHUNK];
        let mut local = vec![0u8; CHUNK];
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        for write in [false, true] {
            for _ in 0..size / CHUNK as u64 {
                let l = libc::iovec {
                    iov_base: local.as_mut_ptr().cast(),
                    iov_len: CHUNK,
                };
                let r = libc::iovec {
                    iov_base: remote.as_ptr() as *mut c_void,
                    iov_len: CHUNK,
                };
                // SAFETY: valid iovecs of CHUNK bytes each in this process.
                let n = unsafe {
                    if write {
                        libc::process_vm_writev(me, &raw const l, 1, &raw const r, 1, 0)
                    } else {
                        libc::process_vm_readv(me, &raw const l, 1, &raw const r, 1, 0)
                    }
                };
                assert_eq!(check(n, "process_vm"), CHUNK);
            }
        }
    }
}

static SIGNALS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_signal(_: i32) {
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

fn handle_usr1(restart: bool) {
    // SAFETY: a zeroed sigaction with a handler that only bumps an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = if restart { libc::SA_RESTART } else { 0 };
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &raw const sa, std::ptr::null_mut()),
            0
        );
    }
}

/// Whether thread `tid` of this process is asleep in read(2).
fn blocked_in_read(tid: i32) -> bool {
    let syscall = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"));
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"));
    let asleep = stat.is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('S'))
    });
    asleep
        && syscall.is_ok_and(|s| s.split_whitespace().next() == Some(&libc::SYS_read.to_string()))
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..5000 {
        if cond() {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
    panic!("{what} never happened");
}

/// `n` reads of an empty non-blocking pipe (EAGAIN each), then one that gets 100 bytes;
/// then a thread blocked in read(2) on another pipe is hit by SIGUSR1 `n` times with
/// `SA_RESTART` (the kernel restarts the read each time), and once more without it (the
/// read fails with EINTR), and finally gets 100 bytes.
fn would_block_and_interrupted(n: u64) -> impl FnOnce() {
    let pipe = || {
        let mut fds = [0; 2];
        // SAFETY: pipe with a valid array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: fresh fds we own.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    };
    let (nb_r, nb_w) = pipe();
    // SAFETY: fcntl on our fd.
    unsafe { libc::fcntl(nb_r.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let (bl_r, bl_w) = pipe();
    move || {
        let mut buf = [0u8; 4096];
        let read = |fd: RawFd, buf: &mut [u8]| unsafe {
            // SAFETY: a valid buffer.
            libc::read(fd, buf.as_mut_ptr().cast(), buf.len())
        };
        for _ in 0..n {
            assert_eq!(read(nb_r.as_raw_fd(), &mut buf), -1);
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EAGAIN)
            );
        }
        // SAFETY: a valid buffer.
        assert_eq!(
            unsafe { libc::write(nb_w.as_raw_fd(), buf.as_ptr().cast(), 100) },
            100
        );
        assert_eq!(read(nb_r.as_raw_fd(), &mut buf), 100);

        handle_usr1(true);
        let tid = Arc::new(AtomicU64::new(0));
        let t = tid.clone();
        let fd = bl_r.as_raw_fd();
        let reader = thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            t.store(unsafe { libc::gettid() } as u64, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let mut results = Vec::new();
            loop {
                let r = read(fd, &mut buf);
                results.push((r, std::io::Error::last_os_error().raw_os_error()));
                if r > 0 {
                    return results;
                }
            }
        });
        wait_until("the reader's start", || tid.load(Ordering::SeqCst) != 0);
        let tid = tid.load(Ordering::SeqCst) as i32;
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        for i in 1..=n + 1 {
            if i == n + 1 {
                handle_usr1(false);
            }
            wait_until("the reader blocking in read", || blocked_in_read(tid));
            // SAFETY: a signal to our own thread, whose handler only counts.
            assert_eq!(
                unsafe { libc::syscall(libc::SYS_tgkill, me, tid, libc::SIGUSR1) },
                0
            );
            wait_until("the signal's handling", || {
                SIGNALS.load(Ordering::SeqCst) >= i
            });
        }
        wait_until("the reader blocking in read", || blocked_in_read(tid));
        // SAFETY: a valid buffer.
        assert_eq!(
            unsafe { libc::write(bl_w.as_raw_fd(), buf.as_ptr().cast(), 100) },
            100
        );
        let results = reader.join().unwrap();
        // Restarted reads never return to user space; the one without SA_RESTART fails.
        assert_eq!(results.len(), 2, "{results:?}");
        assert_eq!(results[0], (-1, Some(libc::EINTR)));
        assert_eq!(results[1].0, 100);
    }
}

/// A database's shape: `n` times, pread64 an 8 KiB page from a file and answer with a
/// 100-byte sendto on a socket (the peer drains it): the file data never goes out.
fn pread_then_small_replies(n: u64) -> impl FnOnce() {
    let mut fds = [0; 2];
    // SAFETY: socketpair with a valid array.
    assert_eq!(
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) },
        0
    );
    // SAFETY: fresh fds we own.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let file = super::copy_workloads::data_file(1 << 20);
    move || {
        let drain = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut got = 0u64;
            // SAFETY (loop): a valid buffer.
            while got < n * 100 {
                let r = unsafe { libc::read(b.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                got += check(r, "drain") as u64;
            }
        });
        let mut page = vec![0u8; 8192];
        let reply = [1u8; 100];
        for i in 0..n {
            let off = ((i * 8192) % (1 << 20)) as libc::off_t;
            // SAFETY: valid buffers and fds.
            unsafe {
                assert_eq!(
                    libc::pread(file.as_raw_fd(), page.as_mut_ptr().cast(), 8192, off),
                    8192
                );
                assert_eq!(
                    libc::sendto(
                        a.as_raw_fd(),
                        reply.as_ptr().cast(),
                        100,
                        0,
                        std::ptr::null(),
                        0
                    ),
                    100
                );
            }
        }
        drain.join().unwrap();
    }
}

/// An `io_uring` instance set up before `ready` (before proclens starts) and kept open; the
/// measured part makes plain writes only.
fn io_uring_held() -> impl FnOnce() {
    let mut params = [0u8; 120]; // struct io_uring_params
    // SAFETY: io_uring_setup with a zeroed params struct of the kernel's size.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    assert!(
        fd >= 0,
        "io_uring_setup: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the fd we were given.
    let ring = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let null = std::fs::File::options()
        .write(true)
        .open("/dev/null")
        .unwrap();
    move || {
        for _ in 0..10 {
            // SAFETY: a valid buffer and fd.
            assert_eq!(
                unsafe { libc::write(null.as_raw_fd(), [0u8; 8].as_ptr().cast(), 8) },
                8
            );
        }
        drop(ring);
    }
}

/// The syscalls each child of [`forks_exact`] makes, once each, before `exit_group`: 15
/// distinct ones, so that 20,000 children need 320,000 (process, syscall) entries, more
/// than proclens's syscall map holds (at most 262,144): only folding finished
/// processes out of the map as they go keeps every one counted.
const CHILD_CALLS: [libc::c_long; 15] = [
    libc::SYS_getppid,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getpgrp,
    libc::SYS_sched_yield,
    libc::SYS_getpgid,
    libc::SYS_getsid,
    libc::SYS_getcpu,
    libc::SYS_sched_getscheduler,
    libc::SYS_getpriority,
    libc::SYS_times,
];

/// Syscalls each child of [`forks_exact`] makes: [`CHILD_CALLS`], then `exit_group`.
pub const CHILD_SYSCALLS: u64 = CHILD_CALLS.len() as u64 + 1;

/// Starts `n` children, 100 at a time, each making exactly [`CHILD_SYSCALLS`] syscalls:
/// created by the raw clone syscall (glibc's fork would add `set_robust_list` in the
/// child), [`CHILD_CALLS`] once each (arguments that make each harmless: 0 or null),
/// `exit_group`.
pub fn forks_exact(n: u64) {
    let mut pids = Vec::with_capacity(n as usize);
    let mut left = n;
    while left > 0 {
        let batch = left.min(100);
        let mut children = Vec::with_capacity(batch as usize);
        for _ in 0..batch {
            // SAFETY: a fork-like clone (no shared memory); the child only makes raw
            // syscalls on its copy of the stack and exits.
            let pid = unsafe {
                libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0)
            };
            if pid == 0 {
                for nr in CHILD_CALLS {
                    // SAFETY: each of these reads or yields only; zero/null arguments
                    // (getpriority(PRIO_PROCESS, 0), times(NULL), getcpu(NULL, ...)).
                    unsafe { libc::syscall(nr, 0, 0, 0) };
                }
                unsafe { libc::syscall(libc::SYS_exit_group, 0) };
            }
            assert!(pid > 0, "clone: {}", std::io::Error::last_os_error());
            children.push(pid as i32);
        }
        for &pid in &children {
            let mut status = 0;
            // SAFETY: reaps our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &raw mut status, 0) }, pid);
        }
        pids.extend(children);
        left -= batch;
    }
    println!("children {}", pids.len());
}

/// The workload `name`, if it is one of these.
pub fn work(name: &str, n: u64) -> Option<Box<dyn FnOnce()>> {
    Some(match name {
        "copy-mmsg" => Box::new(mmsg(n)),
        "copy-pvm" => Box::new(process_vm(n)),
        "copy-nonblock" => Box::new(would_block_and_interrupted(n)),
        "copy-pread-send" => Box::new(pread_then_small_replies(n)),
        "copy-uring-held" => Box::new(io_uring_held()),
        "copy-unreturned" => Box::new(unreturned(n)),
        _ => return None,
    })
}

/// Threads [`unreturned`] starts and ends (each with `exit`, which never returns).
pub const UNRETURNED_THREADS: u64 = 8;

extern "C" fn on_usr1(_: libc::c_int) {}

/// Calls that do not return as themselves: `n` signals raised and handled (each handler's
/// return is an `rt_sigreturn`, which leaves `-1` where the number was), then
/// [`UNRETURNED_THREADS`] threads started (`clone3`, from which each new thread returns
/// too, with 0) that end at once (`exit`).
fn unreturned(n: u64) -> impl FnOnce() {
    move || {
        // SAFETY: a handler that does nothing, installed for SIGUSR1 only.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
            assert_eq!(
                libc::sigaction(libc::SIGUSR1, &raw const sa, std::ptr::null_mut()),
                0
            );
        }
        for _ in 0..n {
            // SAFETY: raises a signal this process handles.
            assert_eq!(unsafe { libc::raise(libc::SIGUSR1) }, 0);
        }
        let threads: Vec<_> = (0..UNRETURNED_THREADS)
            .map(|_| thread::spawn(|| {}))
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
