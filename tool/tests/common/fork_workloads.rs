//! After-fork workloads whose answers the test knows: 64 MiB of private anonymous memory
//! (16,384 pages of 4 KiB, no huge pages) written after a fork, vfork or `CLONE_VM` clone;
//! an fd shared across fork; fds handed across exec with and without close-on-exec. Each
//! prints what it measured itself (the kernel's minflt counters, its own clock, fcntl) as
//! one JSON line, for the test to hold proclens's figures against.

use std::{io::Write as _, time::Instant};

/// Bytes of the region, and its pages at 4 KiB.
pub const REGION: usize = 64 << 20;
pub const PAGES: u64 = (REGION / 4096) as u64;

/// Faults the kernel accounted to this process: fields 10 and 12 of /proc/self/stat
/// (minor and major: a fault retried after dropping the mmap lock is accounted major),
/// read with plain system calls into a stack buffer: safe in a forked child, which must
/// not allocate.
pub fn faults() -> u64 {
    let mut buf = [0u8; 1024];
    // SAFETY: plain system calls on a NUL-terminated path and a stack buffer.
    let n = unsafe {
        let fd = libc::open(
            c"/proc/self/stat".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        assert!(fd >= 0);
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    assert!(n > 0);
    let text = &buf[..n as usize];
    let close = text.iter().rposition(|&b| b == b')').unwrap();
    // After ") ": field 3 is the first, so minflt (10) is the 8th and majflt (12) the
    // 10th.
    let mut field = 0;
    let (mut min, mut maj) = (0u64, 0u64);
    for &b in &text[close + 2..] {
        if b == b' ' {
            field += 1;
            if field == 10 {
                return min + maj;
            }
            continue;
        }
        match field {
            7 => min = min * 10 + u64::from(b - b'0'),
            9 => maj = maj * 10 + u64::from(b - b'0'),
            _ => {}
        }
    }
    panic!("no fault counts in /proc/self/stat");
}

/// The region: private, anonymous, no transparent huge pages, every page written once.
fn region() -> &'static mut [u8] {
    // SAFETY: a fresh anonymous mapping, leaked for the process's life.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            REGION,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        assert_eq!(libc::madvise(p, REGION, libc::MADV_NOHUGEPAGE), 0);
        let r = std::slice::from_raw_parts_mut(p.cast::<u8>(), REGION);
        write_pages(r, 1);
        r
    }
}

/// Writes one byte in every 4 KiB page.
fn write_pages(r: &mut [u8], v: u8) {
    for i in (0..r.len()).step_by(4096) {
        // SAFETY: in bounds; volatile so no write is folded away.
        unsafe { std::ptr::write_volatile(r.as_mut_ptr().add(i), v) };
    }
}

/// This process's fault counts (before, after) around writing `v` in every page of `r`,
/// with none of its own stack or code in between. After a fork every stack page either
/// side wrote is write-protected, so a local stored in a page this side has not written
/// since is a fault of its own (whether it is depends on where ASLR put the stack in its
/// page: 9 where 8 were written, once, on 5.10), and a code page not yet mapped in a
/// child is a fault too. So: first the next 16 KiB of stack written (the measuring calls
/// go less than 2 KiB deeper), then the measuring function run once on nothing (its code
/// and frames mapped), then measured, its counts returned in registers.
#[inline(never)]
fn faults_around_writes(r: &mut [u8], v: u8) -> (u64, u64) {
    touch_stack();
    measure_writes(&mut [], v);
    measure_writes(r, v)
}

#[inline(never)]
fn touch_stack() {
    let mut s = [0u8; 16 << 10];
    for i in (0..s.len()).step_by(4096) {
        // SAFETY: in bounds; volatile so the writes are made.
        unsafe { std::ptr::write_volatile(s.as_mut_ptr().add(i), 1) };
    }
    std::hint::black_box(&s);
}

#[inline(never)]
fn measure_writes(r: &mut [u8], v: u8) -> (u64, u64) {
    let a = faults();
    write_pages(r, v);
    (a, faults())
}

/// Faults of the reaped children so far (getrusage: minor and major).
fn children_faults() -> u64 {
    // SAFETY: zeroed rusage is valid; getrusage with a valid pointer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut ru) };
    (ru.ru_minflt + ru.ru_majflt) as u64
}

/// After a fork-like call that returned `child` (0 in the child): the child writes every
/// page of `r` and exits; the parent reaps it, writes every page itself, and prints its
/// pid, the child's, its children's faults (getrusage) and its own loop's faults.
fn copying_child(r: &mut [u8], child: i32, out: &mut std::io::Stdout) {
    if child == 0 {
        write_pages(r, 2);
        // SAFETY: the child leaves without running the parent's exit handlers.
        unsafe { libc::_exit(0) };
    }
    reap(child);
    let (c, d) = faults_around_writes(r, 3);
    writeln!(
        out,
        r#"{{"parent":{},"child":{child},"children_faults":{},"parent_loop_faults":{}}}"#,
        std::process::id(),
        children_faults(),
        d - c,
    )
    .unwrap();
}

fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid with a valid pointer.
    let r = unsafe { libc::waitpid(pid, &raw mut status, libc::__WALL) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status}"
    );
}

/// This thread's CPU time (ns): unlike the wall clock, it does not run while the thread
/// waits for a CPU (a forked child often runs first).
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Forks a child that writes the region: (child, its faults before and after writing
/// it, through a pipe; the parent's wall and CPU time around the fork).
fn cow_child(r: &mut [u8]) -> (i32, u64, u64, (u64, u64)) {
    // `p`: the child's two fault counts to the parent; `gate`: the parent's go to the
    // child, once it has read its clocks (until then the child only waits, so the
    // parent's time around the call is its own even where CPUs share one host thread).
    let (mut p, mut gate) = ([0; 2], [0; 2]);
    // SAFETY: pipe with valid arrays.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
    assert_eq!(unsafe { libc::pipe(gate.as_mut_ptr()) }, 0);
    let (t, cpu) = (Instant::now(), thread_cpu_ns());
    // The bare system call, not libc's fork: what is timed around it is then the call
    // itself, without libc's fork handlers.
    // SAFETY: clone with SIGCHLD alone is fork(2); the child makes plain system calls
    // and writes its memory (no allocation, no lock libc might hold), then _exits.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) } as i32;
    let fork_ns = (t.elapsed().as_nanos() as u64, thread_cpu_ns() - cpu);
    assert!(pid >= 0);
    if pid == 0 {
        let mut go = 0u8;
        // SAFETY: a one-byte read into a stack byte.
        unsafe { libc::read(gate[0], (&raw mut go).cast(), 1) };
        let (a, b) = faults_around_writes(r, 2);
        let msg = [a, b];
        // SAFETY: writing a stack array to the pipe, then leaving.
        unsafe {
            libc::write(p[1], msg.as_ptr().cast(), 16);
            libc::_exit(0);
        }
    }
    // SAFETY: a one-byte write from a stack byte.
    assert_eq!(unsafe { libc::write(gate[1], [1u8].as_ptr().cast(), 1) }, 1);
    let mut msg = [0u64; 2];
    // SAFETY: reading into a stack array.
    let n = unsafe { libc::read(p[0], msg.as_mut_ptr().cast(), 16) };
    assert_eq!(n, 16);
    reap(pid);
    // SAFETY: closing our own fds.
    unsafe {
        for fd in [p[0], p[1], gate[0], gate[1]] {
            libc::close(fd);
        }
    }
    (pid, msg[0], msg[1], fork_ns)
}

/// Bytes of a huge page (x86's PMD size, and hugetlbfs's default there).
pub const HUGE: usize = 2 << 20;

/// A counter of /proc/vmstat.
pub fn vmstat(name: &str) -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/vmstat"))
}

/// A field of /proc/meminfo (its number: kB or pages).
pub fn meminfo(name: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {name} in /proc/meminfo"))
}

/// `huge` huge pages of private anonymous memory, aligned to a huge page: transparent
/// huge pages (`MADV_HUGEPAGE`) or hugetlbfs pages (`MAP_HUGETLB`, from the pool).
fn huge_region(huge: usize, hugetlb: bool) -> &'static mut [u8] {
    let len = huge * HUGE;
    // SAFETY: a fresh anonymous mapping, leaked for the process's life; the slice is
    // its huge-page-aligned part.
    unsafe {
        let (extra, flags) = if hugetlb {
            (0, libc::MAP_HUGETLB)
        } else {
            (HUGE, 0)
        };
        let p = libc::mmap(
            std::ptr::null_mut(),
            len + extra,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        );
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        let start = (p as usize).next_multiple_of(HUGE) as *mut libc::c_void;
        if !hugetlb {
            assert_eq!(libc::madvise(start, len, libc::MADV_HUGEPAGE), 0);
        }
        std::slice::from_raw_parts_mut(start.cast::<u8>(), len)
    }
}

/// How long the `no-cow` workload's vfork child sleeps before it exits: its parent waits
/// inside vfork at least that long.
pub const VFORK_CHILD_SLEEP_MS: u64 = 50;
const VFORK_CHILD_SLEEP: libc::timespec = libc::timespec {
    tv_sec: 0,
    tv_nsec: VFORK_CHILD_SLEEP_MS as i64 * 1_000_000,
};

/// Runs workload `name` if it is an after-fork one; false for any other name.
pub fn run(name: &str, n: u64, out: &mut std::io::Stdout, wait_go: &dyn Fn()) -> bool {
    match name {
        // First `go`: fork; the child writes every page once (16,384 copy-on-write
        // faults) and exits. Second `go`: the parent writes every page (faults of its
        // own: the pages are still write-protected, now reused without a copy). Quiet
        // (blocked) between, so /proc's counts of the parent can be read from outside.
        "cow" => {
            let r = region();
            writeln!(out, "ready").unwrap();
            wait_go();
            let (child, a, b, (fork_ns, fork_cpu_ns)) = cow_child(r);
            writeln!(
                out,
                r#"{{"parent":{},"child":{child},"fork_ns":{fork_ns},"fork_cpu_ns":{fork_cpu_ns},"child_loop_faults":{},"child_faults":{b},"children_faults":{}}}"#,
                std::process::id(),
                b - a,
                children_faults(),
            )
            .unwrap();
            writeln!(out, "done").unwrap();
            wait_go();
            let (c, d) = faults_around_writes(r, 3);
            writeln!(out, r#"{{"parent_loop_faults":{}}}"#, d - c).unwrap();
            writeln!(out, "done").unwrap();
            wait_go();
        }
        // `n` huge pages (transparent, or hugetlbfs from the pool), written, then a fork
        // whose child writes every 4 KiB page of them once and waits until the parent has
        // read the kernel's counters: /proc/vmstat's THP allocations (at the first
        // writes) and PMD splits (at the child's), and the hugetlb pool's free pages
        // while the child holds its copies.
        "cow-thp" | "cow-hugetlb" => {
            let hugetlb = name == "cow-hugetlb";
            let huge = n as usize;
            let r = huge_region(huge, hugetlb);
            let (alloc0, free0) = (vmstat("thp_fault_alloc"), meminfo("HugePages_Free"));
            write_pages(r, 1);
            let (alloc1, free1) = (vmstat("thp_fault_alloc"), meminfo("HugePages_Free"));
            let split0 = vmstat("thp_split_pmd");
            let (mut p, mut gate) = ([0; 2], [0; 2]);
            // SAFETY: pipe with valid arrays.
            assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
            assert_eq!(unsafe { libc::pipe(gate.as_mut_ptr()) }, 0);
            // SAFETY: the child writes its memory and makes plain system calls (no
            // allocation, no lock libc might hold), then _exits.
            let child = unsafe { libc::fork() };
            if child == 0 {
                let mut go = 0u8;
                let (a, b) = faults_around_writes(r, 2);
                let msg = [a, b];
                // SAFETY: stack buffers to and from our pipes, then leaving.
                unsafe {
                    libc::write(p[1], msg.as_ptr().cast(), 16);
                    libc::read(gate[0], (&raw mut go).cast(), 1);
                    libc::_exit(0);
                }
            }
            assert!(child > 0);
            let mut msg = [0u64; 2];
            // SAFETY: reading into a stack array.
            assert_eq!(unsafe { libc::read(p[0], msg.as_mut_ptr().cast(), 16) }, 16);
            let (split1, free2) = (vmstat("thp_split_pmd"), meminfo("HugePages_Free"));
            // SAFETY: a one-byte write from a stack byte.
            assert_eq!(unsafe { libc::write(gate[1], [1u8].as_ptr().cast(), 1) }, 1);
            reap(child);
            writeln!(
                out,
                r#"{{"parent":{},"child":{child},"huge_pages":{huge},"pages":{},"child_loop_faults":{},"child_faults":{},"thp_fault_alloc":{},"thp_split_pmd":{},"hugetlb_taken_by_parent":{},"hugetlb_taken_by_child":{}}}"#,
                std::process::id(),
                r.len() / 4096,
                msg[1] - msg[0],
                msg[1],
                alloc1 - alloc0,
                split1 - split0,
                free0.saturating_sub(free1),
                free1.saturating_sub(free2),
            )
            .unwrap();
        }
        // clone(CLONE_VFORK) without CLONE_VM: the caller waits as for vfork, but the child
        // has a copy of its memory and writes every page; then the parent writes every
        // page (still write-protected: faults of its own, after it forked).
        "vfork-copy" => {
            let r = region();
            // SAFETY: without CLONE_VM the child runs on its own copy of the memory (as
            // after fork); it writes it, then _exits.
            let child = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    libc::CLONE_VFORK | libc::SIGCHLD,
                    0,
                    0,
                    0,
                    0,
                )
            } as i32;
            assert!(child >= 0, "clone: {}", std::io::Error::last_os_error());
            copying_child(r, child, out);
        }
        // clone3 with no flags but SIGCHLD (a fork): the child writes every page and exits,
        // then the parent writes every page.
        "clone3-fork" => {
            let r = region();
            // struct clone_args's first fields: flags, pidfd, child_tid, parent_tid,
            // exit_signal, stack, stack_size, tls (CLONE_ARGS_SIZE_VER0: 64 bytes).
            let mut args = [0u64; 8];
            args[4] = libc::SIGCHLD as u64;
            // SAFETY: clone3 with a valid clone_args and no stack: a fork; the child
            // writes its own copy of the memory and _exits.
            let child =
                unsafe { libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), size_of_val(&args)) }
                    as i32;
            assert!(child >= 0, "clone3: {}", std::io::Error::last_os_error());
            copying_child(r, child, out);
        }
        // Two forks, each child exiting at once; after each the parent writes every page:
        // all its faults after the first fork, whichever fork they follow, and though no
        // child shares a page any more (no copy is made).
        "two-forks" => {
            let r = region();
            let mut loop_faults = Vec::new();
            for _ in 0..2 {
                // SAFETY: the child only _exits.
                let child = unsafe { libc::fork() };
                if child == 0 {
                    unsafe { libc::_exit(0) };
                }
                reap(child);
                let (c, d) = faults_around_writes(r, 3);
                loop_faults.push(d - c);
            }
            writeln!(
                out,
                r#"{{"parent":{},"parent_loop_faults":{loop_faults:?},"children_faults":{}}}"#,
                std::process::id(),
                children_faults(),
            )
            .unwrap();
        }
        // Fork; the child fills every page with read(2) from /dev/zero: the kernel writes
        // the shared pages, and copies them just the same.
        "cow-read" => {
            let r = region();
            // SAFETY: open with a NUL-terminated path.
            let zero =
                unsafe { libc::open(c"/dev/zero".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            assert!(zero >= 0);
            // SAFETY: the child makes plain system calls into its memory, then _exits.
            let child = unsafe { libc::fork() };
            if child == 0 {
                for i in (0..REGION).step_by(4096) {
                    // SAFETY: a read into the page at `i`, in bounds, then leaving.
                    unsafe { libc::read(zero, r.as_mut_ptr().add(i).cast(), 4096) };
                }
                unsafe { libc::_exit(0) };
            }
            reap(child);
            writeln!(
                out,
                r#"{{"parent":{},"child":{child},"children_faults":{}}}"#,
                std::process::id(),
                children_faults(),
            )
            .unwrap();
        }
        // vfork (the child sleeps 50 ms and exits) and a CLONE_VM clone (the child writes every
        // page of the shared memory); then the parent writes every page. Nothing is
        // write-protected: no copy-on-write fault anywhere.
        "no-cow" => {
            let r = region();
            let t = Instant::now();
            // SAFETY: the vfork child sleeps (a system call on a timespec the parent does
            // not read) and _exits: no return, no allocation, nothing of the parent's
            // state touched.
            #[allow(deprecated, reason = "vfork itself is what this workload shows")]
            let vchild = unsafe { libc::vfork() };
            if vchild == 0 {
                unsafe {
                    libc::nanosleep(&VFORK_CHILD_SLEEP, std::ptr::null_mut());
                    libc::_exit(0);
                }
            }
            // The call holds the child's life up to its _exit.
            let vfork_ns = t.elapsed().as_nanos() as u64;
            assert!(vchild > 0);
            reap(vchild);
            extern "C" fn writer(arg: *mut libc::c_void) -> libc::c_int {
                // SAFETY: `arg` is the region, shared with the parent (CLONE_VM), which
                // waits for this child before touching it again.
                let r = unsafe { std::slice::from_raw_parts_mut(arg.cast::<u8>(), REGION) };
                write_pages(r, 4);
                0
            }
            let mut stack = vec![0u8; 256 << 10];
            let t = Instant::now();
            // SAFETY: the child runs `writer` on its own stack, then exits.
            let cchild = unsafe {
                libc::clone(
                    writer,
                    stack.as_mut_ptr().add(stack.len()).cast(),
                    libc::CLONE_VM | libc::SIGCHLD,
                    r.as_mut_ptr().cast(),
                )
            };
            let clone_ns = t.elapsed().as_nanos() as u64;
            assert!(cchild > 0, "clone: {}", std::io::Error::last_os_error());
            reap(cchild);
            let (c, d) = faults_around_writes(r, 5);
            writeln!(
                out,
                r#"{{"parent":{},"vfork_child":{vchild},"clone_child":{cchild},"vfork_ns":{vfork_ns},"clone_ns":{clone_ns},"children_faults":{},"parent_loop_faults":{}}}"#,
                std::process::id(),
                children_faults(),
                d - c,
            )
            .unwrap();
        }
        // A child that forks a grandchild (which exits at once), reaps it and exits; the
        // parent reaps the child, then lingers 1.2 s (several of `run`'s folds) before it
        // prints the child's pid and exits.
        "fork-then-linger" => {
            // SAFETY: the child forks, waits and _exits; the grandchild only _exits.
            let child = unsafe { libc::fork() };
            if child == 0 {
                // SAFETY: as above.
                let grandchild = unsafe { libc::fork() };
                if grandchild == 0 {
                    unsafe { libc::_exit(0) };
                }
                let mut st = 0;
                // SAFETY: waitpid with a valid pointer, then leaving.
                unsafe {
                    libc::waitpid(grandchild, &raw mut st, 0);
                    libc::_exit(0);
                }
            }
            reap(child);
            std::thread::sleep(std::time::Duration::from_millis(1200));
            writeln!(
                out,
                r#"{{"parent":{},"child":{child}}}"#,
                std::process::id()
            )
            .unwrap();
        }
        // A file opened before fork, held by parent and child, whose pids and fd it prints
        // (first `go`); at the second `go` the child closes it.
        "share-fd" => {
            writeln!(out, "ready").unwrap();
            wait_go();
            let f = std::fs::File::open("/proc/self/stat").unwrap();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
            // `tell`: parent to child; `ack`: child to parent. Each side closes the ends it
            // does not use, so the child sees end-of-file (and exits) if the parent dies.
            let (mut tell, mut ack) = ([0; 2], [0; 2]);
            // SAFETY: pipe with valid arrays.
            assert_eq!(unsafe { libc::pipe(tell.as_mut_ptr()) }, 0);
            assert_eq!(unsafe { libc::pipe(ack.as_mut_ptr()) }, 0);
            // SAFETY: the child makes plain system calls, then _exits.
            let child = unsafe { libc::fork() };
            if child == 0 {
                let mut b = [0u8; 1];
                unsafe {
                    libc::close(tell[1]);
                    libc::close(ack[0]);
                    if libc::read(tell[0], b.as_mut_ptr().cast(), 1) == 1 {
                        libc::close(fd);
                        libc::write(ack[1], b"k".as_ptr().cast(), 1);
                        libc::read(tell[0], b.as_mut_ptr().cast(), 1);
                    }
                    libc::_exit(0);
                }
            }
            // SAFETY: closing the child's ends in the parent.
            unsafe {
                libc::close(tell[0]);
                libc::close(ack[1]);
            }
            writeln!(
                out,
                r#"{{"parent":{},"child":{child},"fd":{fd}}}"#,
                std::process::id()
            )
            .unwrap();
            writeln!(out, "done").unwrap();
            wait_go();
            let mut b = [0u8; 1];
            // SAFETY: one-byte writes and reads on our pipes.
            unsafe {
                libc::write(tell[1], b"c".as_ptr().cast(), 1);
                assert_eq!(
                    libc::read(ack[0], b.as_mut_ptr().cast(), 1),
                    1,
                    "the child's ack"
                );
            }
            writeln!(out, "done").unwrap();
            wait_go();
            unsafe { libc::close(tell[1]) };
            reap(child);
            drop(f);
        }
        // One fd of each kind, some close-on-exec: a regular file (no), a Unix socket
        // (yes), a pipe's read end (yes) and write end (cleared with fcntl: no), /dev/null
        // (no); printed at the first `go`, held until the second.
        "fd-kinds" => {
            writeln!(out, "ready").unwrap();
            wait_go();
            let path =
                std::env::temp_dir().join(format!("proclens-fd-kinds-{}", std::process::id()));
            let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
            // SAFETY: plain system calls on NUL-terminated paths and a valid array.
            let (file, socket, pipe, null) = unsafe {
                let file = libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CREAT, 0o600);
                let socket = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
                let mut pipe = [0; 2];
                assert_eq!(libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC), 0);
                assert_eq!(libc::fcntl(pipe[1], libc::F_SETFD, 0), 0);
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
                (file, socket, pipe, null)
            };
            assert!(file > 2 && socket > 2 && null > 2);
            let _ = std::fs::remove_file(&path);
            writeln!(
                out,
                r#"{{"pid":{},"file":{file},"socket":{socket},"pipe_read":{},"pipe_write":{},"null":{null}}}"#,
                std::process::id(),
                pipe[0],
                pipe[1],
            )
            .unwrap();
            writeln!(out, "done").unwrap();
            wait_go();
        }
        // A child made with CLONE_FILES (one fd table for both processes), which prints
        // both pids (first `go`); the child exits at the second `go`. (Killed instead, the
        // parent would leave the child blocked on a pipe whose write end their shared
        // table still holds.)
        "share-table" => {
            writeln!(out, "ready").unwrap();
            wait_go();
            let mut p = [0; 2];
            // SAFETY: pipe with a valid array.
            assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
            extern "C" fn hold(arg: *mut libc::c_void) -> libc::c_int {
                let mut b = [0u8; 1];
                // SAFETY: reading one byte from the pipe whose read end `arg` holds.
                unsafe { libc::read(arg as usize as i32, b.as_mut_ptr().cast(), 1) };
                0
            }
            let mut stack = vec![0u8; 64 << 10];
            // SAFETY: the child runs `hold` on its own stack, then exits.
            let child = unsafe {
                libc::clone(
                    hold,
                    stack.as_mut_ptr().add(stack.len()).cast(),
                    libc::CLONE_FILES | libc::SIGCHLD,
                    p[0] as usize as *mut libc::c_void,
                )
            };
            assert!(child > 0, "clone: {}", std::io::Error::last_os_error());
            writeln!(
                out,
                r#"{{"parent":{},"child":{child}}}"#,
                std::process::id()
            )
            .unwrap();
            writeln!(out, "done").unwrap();
            wait_go();
            // SAFETY: a one-byte write to our pipe.
            unsafe { libc::write(p[1], b"x".as_ptr().cast(), 1) };
            reap(child);
            writeln!(out, "done").unwrap();
            wait_go();
        }
        // Every fd above 2 made close-on-exec, then n files opened without (`exec-leak`)
        // or with (`exec-cloexec`) O_CLOEXEC, checked with fcntl(F_GETFD); then exec of
        // `sh -c 'ls /proc/$$/fd'`, which lists the fds sh got.
        "exec-leak" | "exec-cloexec" => {
            let cloexec = name == "exec-cloexec";
            for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
                let fd: i32 = e.file_name().to_str().unwrap().parse().unwrap();
                if fd > 2 {
                    // SAFETY: fcntl on an fd number; a closed one fails harmlessly.
                    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
                }
            }
            let mut fds = Vec::new();
            for _ in 0..n {
                let flags = libc::O_RDONLY | if cloexec { libc::O_CLOEXEC } else { 0 };
                // SAFETY: open with a NUL-terminated path.
                let fd = unsafe { libc::open(c"/dev/null".as_ptr(), flags) };
                assert!(fd > 2);
                // SAFETY: fcntl on our own fd.
                let got = unsafe { libc::fcntl(fd, libc::F_GETFD) };
                assert_eq!(
                    got & libc::FD_CLOEXEC != 0,
                    cloexec,
                    "fcntl(F_GETFD) of {fd}"
                );
                fds.push(fd);
            }
            writeln!(
                out,
                r#"{{"pid":{},"fds":{fds:?},"cloexec":{cloexec}}}"#,
                std::process::id()
            )
            .unwrap();
            out.flush().unwrap();
            let argv = [
                c"/bin/sh".as_ptr(),
                c"-c".as_ptr(),
                // Not the last command: a shell that execs its last one (busybox does) would
                // list ls's own directory fd too.
                c"ls /proc/$$/fd; exit 0".as_ptr(),
                std::ptr::null(),
            ];
            // SAFETY: execv with NUL-terminated strings and a NULL-terminated array.
            unsafe { libc::execv(argv[0], argv.as_ptr()) };
            panic!("execv: {}", std::io::Error::last_os_error());
        }
        _ => return false,
    }
    true
}
