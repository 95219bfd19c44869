//! Workloads for the interrupt tests (tests/irq.rs), run in a child process through
//! [`super::workload`]'s protocol.
//!
//! - `spinner:CPU`: `ready`; on `go` it spins pinned to CPU, named `irqspin`, at the
//!   lowest real-time priority (`SCHED_FIFO` 1): no ordinary task, ksoftirqd included, runs
//!   on its CPU but in the 5% of each second the kernel's real-time throttling leaves
//!   them, so on a shared machine it is still the task current on its CPU. A thread
//!   reads commands: `cpu N` moves the spin to CPU N (it answers `on N` once there),
//!   `stop` ends it (`done`); then it blocks until stdin closes.
//! - `timer-spinner:CPU`: a spinner with threads on its CPU that one timer interrupt wakes
//!   together every millisecond (see `sleepers`): long hard IRQs that land in whatever the
//!   CPU runs, its softirqs included.
//! - `udp-flood:MS`: `ready`; on `go`, pinned to CPU 0, it sends 64-byte UDP datagrams
//!   over 127.0.0.1 for MS ms to a socket of its own that never reads them (their receive
//!   path runs in `NET_RX` wherever the test's RPS mask steers it; a full queue drops):
//!   bursts of 4 (one `sendmmsg`) 500 µs apart, so that each burst is one IPI and one
//!   short `NET_RX` on the receiving CPU, even under emulation (a flood the CPU cannot keep
//!   up with is left to its ksoftirqd); prints `sent N`, `done`.
//! - `irq-run:MS` (for `proclens run`, no hand-shake): forks a spinner as above on CPU 1,
//!   floods as `udp-flood` for MS ms once it spins, then kills it and exits: every `NET_RX`
//!   the flood raises on CPU 1 hits the command's own process.
//! - `udp-burst:MS`: the same without the pause: bursts of 32 back to back, more than a
//!   CPU can take in its interrupts' exits, so that its ksoftirqd gets some of it.

use std::{
    io::{BufRead as _, Write as _},
    net::UdpSocket,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use super::workload::pin_to_cpu;

/// The spinner's process name.
pub const SPINNER_COMM: &str = "irqspin";

/// Names this thread, and the process (its leader, whose name /proc/PID/comm and the
/// views show), `name`.
fn set_name(name: &str) {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: PR_SET_NAME with a NUL-terminated string.
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr(), 0, 0, 0) };
    let _ = std::fs::write("/proc/self/comm", name);
}

/// The `irq-run` command: a spinner child on CPU 1, a flood from here.
fn irq_run(ms: u64) {
    let (mut ready_rx, mut ready_tx) = super::workload::pipe();
    // Named before the fork: the child must not allocate.
    set_name(SPINNER_COMM);
    // SAFETY: the child only spins and writes to a pipe (nothing allocates) and exits.
    let child = unsafe { libc::fork() };
    assert!(child >= 0);
    if child == 0 {
        drop(ready_rx);
        let (target, stop) = (AtomicUsize::new(1), AtomicBool::new(false));
        spin(&target, &stop, |_| {
            let _ = std::io::Write::write_all(&mut ready_tx, b"r");
        });
        unsafe { libc::_exit(0) };
    }
    drop(ready_tx);
    let _ = std::io::Read::read(&mut ready_rx, &mut [0u8; 1]);
    flood(ms, true);
    // SAFETY: kill and reap our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
}

/// Spins at `SCHED_FIFO` 1 on `cpu` (see the module's comment) until `stop`, moving to the
/// CPU `target` names; `on` is told each CPU it settles on.
fn spin(target: &AtomicUsize, stop: &AtomicBool, mut on_cpu: impl FnMut(usize)) {
    let fifo = libc::sched_param { sched_priority: 1 };
    // SAFETY: sched_setscheduler on this thread with a valid parameter.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const fifo) };
    assert_eq!(r, 0, "SCHED_FIFO: {}", std::io::Error::last_os_error());
    let mut on = usize::MAX;
    while !stop.load(Ordering::Relaxed) {
        let want = target.load(Ordering::Relaxed);
        if want != on {
            pin_to_cpu(want);
            on = want;
            on_cpu(on);
        }
        std::hint::spin_loop();
    }
}

fn spinner(first_cpu: usize, sleepers_too: bool, out: &mut std::io::Stdout, wait_go: &dyn Fn()) {
    set_name(SPINNER_COMM);
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    wait_go();
    let target = Arc::new(AtomicUsize::new(first_cpu));
    let stop = Arc::new(AtomicBool::new(false));
    if sleepers_too {
        sleepers(first_cpu, &stop);
    }
    let (t, s) = (target.clone(), stop.clone());
    thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match line.trim().split_once(' ') {
                Some(("cpu", n)) => t.store(n.parse().unwrap(), Ordering::SeqCst),
                _ if line.trim() == "stop" => {
                    s.store(true, Ordering::SeqCst);
                    break;
                }
                _ => {}
            }
        }
    });
    spin(&target, &stop, |cpu| {
        writeln!(out, "on {cpu}").unwrap();
        out.flush().unwrap();
    });
    writeln!(out, "done").unwrap();
    out.flush().unwrap();
    // Until stdin closes (the reader thread has returned): block on a pipe nobody writes.
    let (mut hold, _keep) = super::workload::pipe();
    let _ = std::io::Read::read(&mut hold, &mut [0u8; 1]);
}

/// Threads of this process that wake together on `cpu` every millisecond until `stop`, at
/// a real-time priority above the spinner's: each sleeps until the same next millisecond
/// (real-time tasks have no timer slack), so one timer interrupt wakes them all and runs
/// for as long as [`SLEEPERS`] wakeups take, whatever it interrupted.
fn sleepers(cpu: usize, stop: &Arc<AtomicBool>) {
    for _ in 0..SLEEPERS {
        let stop = stop.clone();
        thread::spawn(move || {
            pin_to_cpu(cpu);
            let fifo = libc::sched_param { sched_priority: 2 };
            // SAFETY: sched_setscheduler on this thread with a valid parameter.
            let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const fifo) };
            assert_eq!(r, 0, "SCHED_FIFO: {}", std::io::Error::last_os_error());
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: a zeroed timespec is valid; clock_gettime fills it.
                let mut t: libc::timespec = unsafe { std::mem::zeroed() };
                unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut t) };
                t.tv_nsec = (t.tv_nsec / 1_000_000 + 1) * 1_000_000;
                if t.tv_nsec >= 1_000_000_000 {
                    t.tv_sec += 1;
                    t.tv_nsec -= 1_000_000_000;
                }
                // SAFETY: an absolute sleep on a valid timespec.
                unsafe {
                    libc::clock_nanosleep(
                        libc::CLOCK_MONOTONIC,
                        libc::TIMER_ABSTIME,
                        &raw const t,
                        std::ptr::null_mut(),
                    )
                };
            }
        });
    }
}

/// The threads [`sleepers`] starts.
const SLEEPERS: usize = 400;

fn udp_flood(ms: u64, paced: bool, out: &mut std::io::Stdout, wait_go: &dyn Fn()) {
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    wait_go();
    let sent = flood(ms, paced);
    writeln!(out, "sent {sent}").unwrap();
    writeln!(out, "done").unwrap();
    out.flush().unwrap();
    wait_go();
}

/// The flood itself (see the module's comment); returns the datagrams sent.
fn flood(ms: u64, paced: bool) -> u64 {
    pin_to_cpu(0);
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = sink.local_addr().unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let end = Instant::now() + Duration::from_millis(ms);
    let buf = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let (dest, dest_len) = sockaddr(to);
    // SAFETY: zeroed mmsghdrs are valid; each then points at the one buffer and address.
    let mut msgs: [libc::mmsghdr; 32] = unsafe { std::mem::zeroed() };
    let burst = if paced { 4 } else { msgs.len() };
    for m in &mut msgs {
        m.msg_hdr.msg_name = (&raw const dest).cast_mut().cast();
        m.msg_hdr.msg_namelen = dest_len;
        m.msg_hdr.msg_iov = &raw mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tx);
    let mut sent = 0u64;
    while Instant::now() < end {
        // SAFETY: sendmmsg with the headers above, which outlive the call.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), burst as u32, 0) };
        sent += n.max(0) as u64;
        if paced {
            thread::sleep(Duration::from_micros(500));
        }
    }
    drop(sink);
    sent
}

/// `to` as a C socket address (IPv4: the flood's own socket is bound on 127.0.0.1).
fn sockaddr(to: std::net::SocketAddr) -> (libc::sockaddr_in, libc::socklen_t) {
    let std::net::SocketAddr::V4(v4) = to else {
        panic!("not IPv4: {to}")
    };
    // SAFETY: a zeroed sockaddr_in is valid.
    let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    a.sin_family = libc::AF_INET as libc::sa_family_t;
    a.sin_port = v4.port().to_be();
    a.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
    (a, size_of::<libc::sockaddr_in>() as libc::socklen_t)
}

/// Runs the workload `name` if it is one of these.
pub fn run(name: &str, n: u64, out: &mut std::io::Stdout, wait_go: &dyn Fn()) -> bool {
    match name {
        "spinner" => spinner(n as usize, false, out, wait_go),
        "timer-spinner" => spinner(n as usize, true, out, wait_go),
        "udp-flood" => udp_flood(n, true, out, wait_go),
        "udp-burst" => udp_flood(n, false, out, wait_go),
        "irq-run" => irq_run(n),
        _ => return false,
    }
    true
}
