//! Workloads with known switching, run in a child process: this test binary re-executed
//! with `PROCLENS_WORKLOAD` set. The child waits for a line on stdin before it starts and
//! prints `done` when it has finished, then blocks (quiet) until stdin closes.
//!
//! Every integration-test file that uses them must contain `workload_entry!();`.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::fd::{FromRawFd as _, OwnedFd},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    thread,
    time::Duration,
};

const ENV: &str = "PROCLENS_WORKLOAD";

/// Declares the test through which a workload child runs.
#[macro_export]
macro_rules! workload_entry {
    () => {
        #[test]
        fn __workload_entry() {
            common::workload::run_if_child();
        }
    };
}

/// A workload child process.
pub struct Workload {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Workload {
    /// The command line of a workload child: this test binary, running only the entry.
    pub fn argv() -> Vec<String> {
        let exe = std::env::current_exe()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let args = [
            "--exact",
            "__workload_entry",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ];
        let mut argv = vec![exe];
        argv.extend(args.iter().map(ToString::to_string));
        argv
    }

    /// The command line and environment that run `kind` with the hand-shake, for a
    /// command proclens starts (`proclens run -- ...`) that the test talks to.
    pub fn command(kind: &str) -> (Vec<String>, (&'static str, String)) {
        (Self::argv(), (ENV, kind.to_string()))
    }

    /// The command line that runs `kind` at once (no hand-shake), for `proclens run -- ...`.
    pub fn auto_command(kind: &str) -> (Vec<String>, [(&'static str, String); 2]) {
        let (argv, env) = Self::command(kind);
        (argv, [env, ("PROCLENS_WORKLOAD_AUTO", "1".to_string())])
    }

    /// Starts `kind` (e.g. `thread-pingpong:2000`), held until [`Workload::go`].
    pub fn spawn(kind: &str) -> Self {
        Self::spawn_under(&[], kind, &[])
    }

    /// [`Workload::spawn`] with more environment.
    pub fn spawn_with_env(kind: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn_under(&[], kind, env)
    }

    /// Starts `kind` as the last argument of the command `prefix` (e.g. `unshare --pid
    /// --fork`, which then is the child this handle names), with more environment, held
    /// until [`Workload::go`].
    pub fn spawn_under(prefix: &[&str], kind: &str, env: &[(&str, &str)]) -> Self {
        let argv = Self::argv();
        let mut cmd = if let Some((first, rest)) = prefix.split_first() {
            let mut c = Command::new(first);
            c.args(rest).args(&argv);
            c
        } else {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        };
        let mut child = cmd
            .env(ENV, kind)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        // Wait until the workload is set up (threads started, pinned) and idle.
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "workload {kind} died during set-up"
            );
            if line.trim() == "ready" {
                break;
            }
        }
        Self {
            child,
            stdin,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs the workload and waits until it reports `done` (it is quiet afterwards).
    pub fn go(&mut self) {
        self.start();
        self.wait_done();
    }

    /// Lets the workload run, without waiting (several can then run at once).
    pub fn start(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits until the workload reports `done`; returns the lines it printed before.
    pub fn wait_done(&mut self) -> Vec<String> {
        self.wait_for("done")
    }

    /// Waits until the workload prints the line `want`; returns the lines before it.
    pub fn wait_for(&mut self, want: &str) -> Vec<String> {
        let mut lines = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "workload died"
            );
            if line.trim() == want {
                return lines;
            }
            lines.push(line.trim().to_string());
        }
    }

    /// Sends the workload a command line (workloads that take more than `go`).
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until child `pid` has exited, leaving it unreaped (a zombie whose /proc figures
/// stay readable).
pub fn wait_zombie(pid: i32) {
    // SAFETY: waitid with a zeroed siginfo; WNOWAIT leaves the child a zombie.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &raw mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    assert_eq!(r, 0, "waitid {pid}");
}

/// Where [`write_final_schedstat`] writes, when set.
pub const SCHEDSTAT_ENV: &str = "PROCLENS_SCHEDSTAT_OUT";

/// Waits for each child to exit without reaping it, reads the kernel's own final
/// accounting of the zombie (`/proc/PID/schedstat`: ns on CPU, ns waiting on a run
/// queue, runs; its exit path included, as nothing runs after it), then reaps it. Writes
/// `PID ONCPU_NS RUNQ_NS RUNS` per child to the file named by [`SCHEDSTAT_ENV`], if set.
pub fn write_final_schedstat(children: &[i32]) {
    let mut lines = String::new();
    for &pid in children {
        wait_zombie(pid);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap();
        let _ = write!(lines, "{pid} {stat}");
        let mut status = 0;
        // SAFETY: reaps the child waited for above.
        unsafe { libc::waitpid(pid, &raw mut status, 0) };
    }
    if let Ok(path) = std::env::var(SCHEDSTAT_ENV) {
        std::fs::write(path, lines).unwrap();
    }
}

/// Spins on the CPU for `ms` of wall time.
pub fn spin_for(ms: u64) {
    let end = std::time::Instant::now() + Duration::from_millis(ms);
    while std::time::Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// Forks a child that spins for `ms` of wall time and exits; returns its pid.
fn fork_spinner(ms: u64) -> i32 {
    // SAFETY: the child only spins and calls _exit.
    let child = unsafe { libc::fork() };
    assert!(child >= 0);
    if child == 0 {
        spin_for(ms);
        unsafe { libc::_exit(0) };
    }
    child
}

pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_setaffinity(0) is this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set),
            0
        );
    }
}

pub fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: pipe with a valid array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fresh fds we own.
    unsafe {
        (
            OwnedFd::from_raw_fd(fds[0]).into(),
            OwnedFd::from_raw_fd(fds[1]).into(),
        )
    }
}

/// Two parties pass one byte back and forth `n` times through two pipes.
pub fn pingpong_party(mut rx: std::fs::File, mut tx: std::fs::File, n: u64, starts: bool) {
    let mut b = [0u8; 1];
    for _ in 0..n {
        if starts {
            tx.write_all(b"x").unwrap();
            rx.read_exact(&mut b).unwrap();
        } else {
            rx.read_exact(&mut b).unwrap();
            tx.write_all(b"x").unwrap();
        }
    }
}

/// The CPU a thread ping-pong runs on (0 when unset).
pub const CPU_ENV: &str = "PROCLENS_WORKLOAD_CPU";

/// Entry point inside the child: runs the workload named by the environment, then exits.
pub fn run_if_child() {
    let Ok(kind) = std::env::var(ENV) else { return };
    let (name, arg) = kind.split_once(':').unwrap_or((kind.as_str(), "0"));
    let n: u64 = arg.parse().unwrap();
    let mut out = std::io::stdout();
    let stdin = std::io::stdin();
    let wait_go = || {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).unwrap();
    };
    // Under `proclens run` (PROCLENS_WORKLOAD_AUTO=1) there is nobody to hand-shake with:
    // start at once and exit when done.
    let auto = std::env::var_os("PROCLENS_WORKLOAD_AUTO").is_some();
    let ready_go = || {
        if !auto {
            println!("ready");
            wait_go();
        }
    };
    let finish = || {
        if !auto {
            println!("done");
            wait_go();
        }
    };
    match name {
        // Two threads of this process ping-pong n times on one CPU (`CPU_ENV`, else 0).
        "thread-pingpong" => {
            let cpu = std::env::var(CPU_ENV).map_or(0, |c| c.parse().unwrap());
            let (a_rx, b_tx) = pipe();
            let (b_rx, a_tx) = pipe();
            // Nobody ever writes to `hold`: reading it parks a thread without switching.
            let (hold_rx, hold_tx) = pipe();
            let hold = std::sync::Arc::new(hold_rx);
            let go = std::sync::Arc::new(std::sync::Barrier::new(3));
            let done = std::sync::Arc::new(std::sync::Barrier::new(3));
            for (rx, tx, starts) in [(a_rx, a_tx, true), (b_rx, b_tx, false)] {
                let (hold, go, done) = (hold.clone(), go.clone(), done.clone());
                thread::spawn(move || {
                    pin_to_cpu(cpu);
                    go.wait();
                    pingpong_party(rx, tx, n, starts);
                    done.wait();
                    // Stay alive and quiet so /proc keeps this thread's counters.
                    let _ = (&*hold).read(&mut [0u8; 1]);
                });
            }
            thread::sleep(Duration::from_millis(50));
            writeln!(out, "ready").unwrap();
            wait_go();
            go.wait();
            done.wait();
            writeln!(out, "done").unwrap();
            wait_go(); // until stdin closes
            drop(hold_tx);
        }
        // Sleeps n times for 1 ms.
        "sleeper" => {
            writeln!(out, "ready").unwrap();
            wait_go();
            for _ in 0..n {
                thread::sleep(Duration::from_millis(1));
            }
            writeln!(out, "done").unwrap();
            wait_go();
        }
        // Two processes (this one and a forked child) ping-pong n times on CPU 0.
        "process-pingpong" => {
            let (a_rx, b_tx) = pipe();
            let (b_rx, a_tx) = pipe();
            pin_to_cpu(0);
            ready_go();
            // SAFETY: the child only makes plain system calls, then _exits.
            let child = unsafe { libc::fork() };
            assert!(child >= 0);
            if child == 0 {
                pingpong_party(b_rx, b_tx, n, false);
                unsafe { libc::_exit(0) };
            }
            pingpong_party(a_rx, a_tx, n, true);
            let mut status = 0;
            unsafe { libc::waitpid(child, &raw mut status, 0) };
            finish();
        }
        // Two processes spin on CPU 1 for n ms each, competing for it.
        "cpu-contend" => {
            pin_to_cpu(1);
            ready_go();
            let child = fork_spinner(n);
            spin_for(n);
            let mut status = 0;
            unsafe { libc::waitpid(child, &raw mut status, 0) };
            finish();
        }
        // Two children spin on CPU 1 for n ms of wall time each, competing for it; their
        // final scheduler accounting is read while they are zombies (see
        // `write_final_schedstat`).
        "cpu-contend-children" => {
            pin_to_cpu(1);
            ready_go();
            let children = [fork_spinner(n), fork_spinner(n)];
            write_final_schedstat(&children);
            finish();
        }
        // Children with a known number of syscalls each (tests/run.rs).
        "forks-exact" => {
            ready_go();
            super::figure_workloads::forks_exact(n);
            finish();
        }
        // Copy paths with known byte counts (tests/copies.rs).
        copy if copy.starts_with("copy-") => super::copy_workloads::run(copy, n),
        other if super::lifecycle_workloads::run(other, n, &mut out, &wait_go) => {}
        other if super::load_workloads::run(other, n, &mut out, &wait_go) => {}
        other if super::switch_workloads::run(other, n, &mut out, &wait_go, auto) => {}
        other if super::fork_workloads::run(other, n, &mut out, &wait_go) => {}
        other if super::irq_workloads::run(other, n, &mut out, &wait_go) => {}
        other if super::blocking_workloads::run(other, n, &mut out, &wait_go, auto) => {}
        other if super::waits_workloads::run(other, n, &mut out, &wait_go) => {}
        other => panic!("unknown workload {other}"),
    }
    std::process::exit(0);
}
