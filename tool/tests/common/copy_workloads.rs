//! Workloads that move a known number of bytes by one copy path each, for the copies
//! tests. Run in the child like the others (`copy-<path>:<bytes>`): set-up (data file,
//! sockets, pipes, reader threads parked on a barrier) happens before `ready`, so every
//! traced call of the measured path is entered after proclens attached.
//!
//! Every call is a direct libc call: std's `io::copy` would pick sendfile/splice/
//! `copy_file_range` by itself, and std's socket reads are recvfrom.

use std::{
    ffi::c_void,
    fs::File,
    io::{BufRead as _, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::{Arc, Barrier},
    thread,
};

const CHUNK: usize = 64 * 1024;

fn check(ret: isize, what: &str) -> usize {
    assert!(
        ret >= 0,
        "{what} failed: {}",
        std::io::Error::last_os_error()
    );
    ret as usize
}

/// A regular file of `size` bytes, already unlinked.
pub fn data_file(size: u64) -> File {
    let path = std::env::temp_dir().join(format!(
        "proclens-copies-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let block: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
    let mut left = size;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
    f
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn pair(domain: i32, ty: i32) -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: socketpair/pipe with a valid array.
    let r = unsafe {
        if domain < 0 {
            libc::pipe(fds.as_mut_ptr())
        } else {
            libc::socketpair(domain, ty, 0, fds.as_mut_ptr())
        }
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    // SAFETY: fresh fds we own.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn socketpair() -> (OwnedFd, OwnedFd) {
    pair(libc::AF_UNIX, libc::SOCK_STREAM)
}

/// (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    pair(-1, 0)
}

fn read_fd(fd: RawFd, buf: &mut [u8]) -> isize {
    // SAFETY: a valid buffer of buf.len() bytes.
    unsafe { libc::read(fd, buf.as_mut_ptr().cast::<c_void>(), buf.len()) }
}

fn write_all_fd(fd: RawFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: a valid buffer of buf.len() bytes.
        let n = check(
            unsafe { libc::write(fd, buf.as_ptr().cast::<c_void>(), buf.len()) },
            "write",
        );
        buf = &buf[n..];
    }
}

/// A thread that waits for `go`, then reads `fd` with read(2) until end of file and
/// checks it got `expect` bytes.
fn reader(fd: OwnedFd, expect: u64, go: Arc<Barrier>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        go.wait();
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        loop {
            let n = check(read_fd(fd.as_raw_fd(), &mut buf), "reader read");
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        assert_eq!(got, expect, "reader got a different number of bytes");
    })
}

/// `read` file → user, `write` user → socket; the peer reads socket → user.
fn read_write(size: u64, go: &Arc<Barrier>) -> impl FnOnce() {
    let file = data_file(size);
    let (a, b) = socketpair();
    let r = reader(b, size, go.clone());
    move || {
        // SAFETY: lseek on our fd.
        unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_SET) };
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = check(read_fd(file.as_raw_fd(), &mut buf), "read");
            if n == 0 {
                break;
            }
            write_all_fd(a.as_raw_fd(), &buf[..n]);
        }
        drop(a);
        r.join().unwrap();
    }
}

/// `sendfile` file → TCP loopback socket; the peer reads socket → user.
fn sendfile(size: u64, go: &Arc<Barrier>) -> impl FnOnce() {
    let file = data_file(size);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let r = reader(OwnedFd::from(server), size, go.clone());
    move || {
        let mut off: libc::off_t = 0;
        let mut sent = 0u64;
        while sent < size {
            let left = (size - sent) as usize;
            // SAFETY: valid fds and offset pointer.
            let n =
                unsafe { libc::sendfile(client.as_raw_fd(), file.as_raw_fd(), &raw mut off, left) };
            sent += check(n, "sendfile") as u64;
        }
        drop(client);
        r.join().unwrap();
    }
}

/// `splice` until all of `n` bytes moved from `from` to `to`.
fn splice_all(from: RawFd, off: Option<&mut libc::loff_t>, to: RawFd, n: usize) -> usize {
    let off_ptr = off.map_or(std::ptr::null_mut(), std::ptr::from_mut::<libc::loff_t>);
    let mut moved = 0;
    while moved < n {
        // SAFETY: valid fds; off_ptr is null or points at a live loff_t.
        let r = unsafe { libc::splice(from, off_ptr, to, std::ptr::null_mut(), n - moved, 0) };
        let r = check(r, "splice");
        if r == 0 {
            break;
        }
        moved += r;
    }
    moved
}

/// `splice` file → pipe, `splice` pipe → socket; the peer reads socket → user.
fn splice(size: u64, go: &Arc<Barrier>) -> impl FnOnce() {
    let file = data_file(size);
    let (pr, pw) = pipe();
    let (a, b) = socketpair();
    let r = reader(b, size, go.clone());
    move || {
        let mut off: libc::loff_t = 0;
        let mut moved = 0u64;
        while moved < size {
            let want = ((size - moved) as usize).min(CHUNK);
            let n = splice_all(file.as_raw_fd(), Some(&mut off), pw.as_raw_fd(), want);
            assert_eq!(splice_all(pr.as_raw_fd(), None, a.as_raw_fd(), n), n);
            moved += n as u64;
        }
        drop(a);
        r.join().unwrap();
    }
}

/// `vmsplice` user → pipe A, `tee` A → pipe B, then `splice` both pipes → /dev/null.
fn vmsplice_tee(size: u64) -> impl FnOnce() {
    let (ar, aw) = pipe();
    let (br, bw) = pipe();
    let null = File::options().write(true).open("/dev/null").unwrap();
    let buf: Vec<u8> = vec![7u8; CHUNK];
    move || {
        let mut moved = 0u64;
        while moved < size {
            let want = ((size - moved) as usize).min(CHUNK);
            let iov = libc::iovec {
                iov_base: buf.as_ptr() as *mut c_void,
                iov_len: want,
            };
            // SAFETY: one valid iovec; the buffer outlives the pipe's references (drained below).
            let n = check(
                unsafe { libc::vmsplice(aw.as_raw_fd(), &raw const iov, 1, 0) },
                "vmsplice",
            );
            let mut teed = 0;
            while teed < n {
                // SAFETY: valid pipe fds.
                teed += check(
                    unsafe { libc::tee(ar.as_raw_fd(), bw.as_raw_fd(), n - teed, 0) },
                    "tee",
                );
            }
            assert_eq!(splice_all(ar.as_raw_fd(), None, null.as_raw_fd(), n), n);
            assert_eq!(splice_all(br.as_raw_fd(), None, null.as_raw_fd(), n), n);
            moved += n as u64;
        }
    }
}

/// `copy_file_range` file → file.
fn copy_file_range(size: u64) -> impl FnOnce() {
    let src = data_file(size);
    let dst = data_file(0);
    move || {
        let (mut off_in, mut off_out): (libc::loff_t, libc::loff_t) = (0, 0);
        let mut copied = 0u64;
        while copied < size {
            // SAFETY: valid fds and offset pointers.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    &raw mut off_in,
                    dst.as_raw_fd(),
                    &raw mut off_out,
                    (size - copied) as usize,
                    0,
                )
            };
            let n = check(n, "copy_file_range");
            assert!(n > 0, "copy_file_range hit end of file early");
            copied += n as u64;
        }
    }
}

/// `mmap` the file, `write` the mapping to a socket; the peer reads socket → user.
fn mmap_write(size: u64, go: &Arc<Barrier>) -> impl FnOnce() {
    let file = data_file(size);
    let (a, b) = socketpair();
    let r = reader(b, size, go.clone());
    move || {
        // SAFETY: a private read-only mapping of a file we hold open, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        // SAFETY: the mapping is `size` readable bytes.
        let data = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), size as usize) };
        for chunk in data.chunks(CHUNK) {
            write_all_fd(a.as_raw_fd(), chunk);
        }
        // SAFETY: unmapping what we mapped; `data` is not used after.
        unsafe { libc::munmap(p, size as usize) };
        drop(a);
        r.join().unwrap();
    }
}

/// Short calls and failures with known results:
/// - a read of 64 KiB from a socket holding 1000 bytes returns 1000;
/// - with `RLIMIT_FSIZE` at 10000 bytes, a 64 KiB write to an empty file returns 10000 and
///   the next write fails with EFBIG (SIGXFSZ ignored);
/// - a read from fd 999999 and a write to fd -1 fail with EBADF.
fn short_and_failing() -> impl FnOnce() {
    let (a, b) = socketpair();
    write_all_fd(b.as_raw_fd(), &[1u8; 1000]);
    let file = data_file(0);
    move || {
        let mut buf = vec![0u8; CHUNK];
        assert_eq!(read_fd(a.as_raw_fd(), &mut buf), 1000);
        // SAFETY: ignoring SIGXFSZ and lowering our own soft limit.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 10_000,
                rlim_max: libc::RLIM_INFINITY,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &raw const lim), 0);
        }
        // SAFETY: valid buffers.
        unsafe {
            assert_eq!(
                libc::write(file.as_raw_fd(), buf.as_ptr().cast::<c_void>(), CHUNK),
                10_000
            );
            assert_eq!(
                libc::write(file.as_raw_fd(), buf.as_ptr().cast::<c_void>(), CHUNK),
                -1
            );
        }
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EFBIG)
        );
        assert_eq!(read_fd(999_999, &mut buf), -1);
        // SAFETY: an invalid fd on purpose.
        assert_eq!(
            unsafe { libc::write(-1, buf.as_ptr().cast::<c_void>(), 10) },
            -1
        );
        drop(b);
    }
}

fn iov(buf: &[u8]) -> [libc::iovec; 2] {
    let half = buf.len() / 2;
    [
        libc::iovec {
            iov_base: buf.as_ptr() as *mut c_void,
            iov_len: half,
        },
        libc::iovec {
            iov_base: buf[half..].as_ptr() as *mut c_void,
            iov_len: buf.len() - half,
        },
    ]
}

/// Receives exactly `buf.len()` bytes with `recv_once` (recvfrom or recvmsg).
fn recv_all(buf: &mut [u8], mut recv_once: impl FnMut(&mut [u8]) -> isize) {
    let mut got = 0;
    while got < buf.len() {
        let n = check(recv_once(&mut buf[got..]), "recv");
        assert!(n > 0, "peer closed");
        got += n;
    }
}

/// Every other read/write-family syscall moves `size` bytes, in CHUNK-sized calls that
/// each move a whole chunk: pread64, preadv, preadv2 and readv from a file; pwrite64,
/// pwritev, pwritev2 to a file; writev to /dev/null; sendto/recvfrom and sendmsg/recvmsg
/// through a socket pair (the receiving side in this same thread: a chunk fits the
/// socket buffer).
fn read_write_family(size: u64) -> impl FnOnce() {
    let src = data_file(size);
    let dst = data_file(0);
    let null = File::options().write(true).open("/dev/null").unwrap();
    let (a, b) = socketpair();
    move || {
        let (s, d, z) = (src.as_raw_fd(), dst.as_raw_fd(), null.as_raw_fd());
        let (a, b) = (a.as_raw_fd(), b.as_raw_fd());
        let mut buf = vec![0u8; CHUNK];
        let whole = CHUNK as isize;
        // SAFETY (every call below): valid fds, and buffers/iovecs of the stated lengths.
        unsafe {
            libc::lseek(s, 0, libc::SEEK_SET);
            for i in 0..size / CHUNK as u64 {
                let off = (i * CHUNK as u64) as libc::off_t;
                assert_eq!(libc::pread(s, buf.as_mut_ptr().cast(), CHUNK, off), whole);
                assert_eq!(libc::preadv(s, iov(&buf).as_ptr(), 2, off), whole);
                assert_eq!(libc::preadv2(s, iov(&buf).as_ptr(), 2, off, 0), whole);
                assert_eq!(libc::readv(s, iov(&buf).as_ptr(), 2), whole);
                assert_eq!(libc::pwrite(d, buf.as_ptr().cast(), CHUNK, off), whole);
                assert_eq!(libc::pwritev(d, iov(&buf).as_ptr(), 2, off), whole);
                assert_eq!(libc::pwritev2(d, iov(&buf).as_ptr(), 2, off, 0), whole);
                assert_eq!(libc::writev(z, iov(&buf).as_ptr(), 2), whole);
                assert_eq!(
                    libc::sendto(a, buf.as_ptr().cast(), CHUNK, 0, std::ptr::null(), 0),
                    whole
                );
                recv_all(&mut buf, |r| {
                    libc::recvfrom(
                        b,
                        r.as_mut_ptr().cast(),
                        r.len(),
                        0,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                });
                let mut msg: libc::msghdr = std::mem::zeroed();
                let mut v = iov(&buf);
                msg.msg_iov = v.as_mut_ptr();
                msg.msg_iovlen = 2;
                assert_eq!(libc::sendmsg(a, &raw const msg, 0), whole);
                recv_all(&mut buf, |r| {
                    let mut m: libc::msghdr = std::mem::zeroed();
                    let mut one = libc::iovec {
                        iov_base: r.as_mut_ptr().cast(),
                        iov_len: r.len(),
                    };
                    m.msg_iov = &raw mut one;
                    m.msg_iovlen = 1;
                    libc::recvmsg(b, &raw mut m, 0)
                });
            }
        }
    }
}

/// Four unpinned threads write `size / 4` bytes each to /dev/null in 4 KiB calls, so
/// calls run on every CPU, migrate, and land in different per-CPU slots of one path.
fn threads(size: u64) -> impl FnOnce() {
    let null = Arc::new(File::options().write(true).open("/dev/null").unwrap());
    move || {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let null = null.clone();
                thread::spawn(move || {
                    let buf = [3u8; 4096];
                    for _ in 0..size / 4 / 4096 {
                        // SAFETY: a valid fd and buffer.
                        let n = unsafe {
                            libc::write(null.as_raw_fd(), buf.as_ptr().cast(), buf.len())
                        };
                        assert_eq!(n, 4096);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}

/// Sets up an `io_uring` instance (`io_uring_setup`) and closes it: proclens must flag the
/// process. Whether the kernel allows `io_uring` or not, the call is made.
fn io_uring() -> impl FnOnce() {
    || {
        let mut params = [0u8; 120]; // struct io_uring_params
        // SAFETY: io_uring_setup with a zeroed params struct of the kernel's size.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
        if fd >= 0 {
            // SAFETY: closing the fd we were given.
            unsafe { libc::close(fd as i32) };
        }
    }
}

/// Runs copy workload `name` moving `size` bytes, with the workload protocol (`ready`,
/// wait for a line, run, `done`, wait until stdin closes), then exits.
pub fn run(name: &str, size: u64) {
    let go = Arc::new(Barrier::new(2));
    let work: Box<dyn FnOnce()> = match name {
        "copy-rw" => Box::new(read_write(size, &go)),
        "copy-sendfile" => Box::new(sendfile(size, &go)),
        "copy-splice" => Box::new(splice(size, &go)),
        "copy-mmap" => Box::new(mmap_write(size, &go)),
        "copy-vmsplice" => Box::new(vmsplice_tee(size)),
        "copy-cfr" => Box::new(copy_file_range(size)),
        "copy-short" => Box::new(short_and_failing()),
        "copy-uring" => Box::new(io_uring()),
        "copy-family" => Box::new(read_write_family(size)),
        "copy-threads" => Box::new(threads(size)),
        other => super::figure_workloads::work(other, size)
            .unwrap_or_else(|| panic!("unknown copy workload {other}")),
    };
    let with_reader = matches!(
        name,
        "copy-rw" | "copy-sendfile" | "copy-splice" | "copy-mmap"
    );
    let mut out = std::io::stdout();
    let stdin = std::io::stdin();
    let wait_go = || {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).unwrap();
    };
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    wait_go();
    if with_reader {
        go.wait();
    }
    work();
    writeln!(out, "done").unwrap();
    out.flush().unwrap();
    wait_go();
    std::process::exit(0);
}
