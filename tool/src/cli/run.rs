//! `proclens run -- CMD`: trace one command and all its descendants from its first
//! instruction to its exit, then print one report. Exit code: the command's.

use std::{
    ffi::CString,
    io::Write as _,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::PathBuf,
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use clap::Args;
use proclens_common::event::ThreadExit;
use tokio::signal::unix::{SignalKind, signal};

use super::Output;
use crate::{
    collect::{
        cgroup::RunCgroup,
        events::{Event, EventStream},
        extras::ZOMBIE_MIN_AGE_NS,
        lifecycle, privilege,
        procfs::{self, CommCache},
        tracer::{Tracer, TracerOptions},
    },
    model::{
        copy_report::CopiesModel,
        proctable::{Notice, ProcTable, Zombie},
        run_report::{self, ExitInfo, RunFacts},
        run_sections,
        switches::{Key, SwitchModel},
    },
    render,
};
use proclens_common::lifecycle::fork_flags;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub output: Output,
    /// Write the report to FILE instead of standard error (the command keeps stdout).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output_file: Option<PathBuf>,
    /// The command to run and its arguments, after `--`. Under sudo it runs as the
    /// invoking user (SUDO_UID/SUDO_GID). If it cannot be started proclens exits with 127.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

/// The user to run the command as when proclens was started through sudo.
#[derive(Debug, Clone)]
struct Identity {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

fn invoking_user() -> Result<Option<Identity>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let (Ok(uid), Ok(gid)) = (std::env::var("SUDO_UID"), std::env::var("SUDO_GID")) else {
        return Ok(None);
    };
    let uid: libc::uid_t = uid.parse().context("SUDO_UID is not a number")?;
    let gid: libc::gid_t = gid.parse().context("SUDO_GID is not a number")?;
    if uid == 0 {
        return Ok(None);
    }
    let groups = match std::env::var("SUDO_USER") {
        Ok(user) => {
            nix::unistd::getgrouplist(&CString::new(user)?, nix::unistd::Gid::from_raw(gid))
                .map(|g| g.into_iter().map(nix::unistd::Gid::as_raw).collect())
                .unwrap_or_else(|_| vec![gid])
        }
        Err(_) => vec![gid],
    };
    Ok(Some(Identity { uid, gid, groups }))
}

/// The command, set to join `cgroup` (and drop to `user`) between fork and exec, so it is
/// traced from its first instruction.
fn command(args: &[String], cgroup: &RunCgroup, user: Option<Identity>) -> Result<Command> {
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..]);
    let procs = CString::new(cgroup.procs_file().as_os_str().as_bytes())?;
    let hook = move || -> std::io::Result<()> {
        // Only async-signal-safe calls from here to exec.
        // SAFETY: plain syscalls on valid pointers; "0" names the writing process.
        unsafe {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if written != 1 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(u) = &user
                && (libc::setgroups(u.groups.len(), u.groups.as_ptr()) != 0
                    || libc::setgid(u.gid) != 0
                    || libc::setuid(u.uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe system calls.
    unsafe { cmd.pre_exec(hook) };
    Ok(cmd)
}

struct Reaped {
    exit: ExitInfo,
    user_s: f64,
    system_s: f64,
}

fn wait4(pid: i32) -> std::io::Result<Reaped> {
    let mut status = 0;
    // SAFETY: zeroed rusage is valid; wait4 with valid pointers.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let exit = if libc::WIFEXITED(status) {
        ExitInfo {
            code: Some(libc::WEXITSTATUS(status)),
            signal: None,
        }
    } else {
        ExitInfo {
            code: None,
            signal: Some(libc::WTERMSIG(status)),
        }
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Reaped {
        exit,
        user_s: tv(ru.ru_utime),
        system_s: tv(ru.ru_stime),
    })
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    privilege::check_can_trace()?;
    let cgroup = RunCgroup::create()?;
    let (tracer, copies_on) = start_tracer(&cgroup)?;
    let user = invoking_user()?;
    // Keep only what starting the command as the invoking user and removing its cgroup
    // take; the rest goes now, before any other thread exists.
    let mut keep = RunCgroup::REMOVAL_CAPS.to_vec();
    if user.is_some() {
        keep.extend([caps::Capability::CAP_SETUID, caps::Capability::CAP_SETGID]);
    }
    tracer.drop_privileges(&keep)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(trace_command(tracer, copies_on, &cgroup, user, args))
}

/// Loads the programs for the command's cgroup: switches, lifecycle, syscalls and copy
/// paths (left out, with a warning, without tracefs). Returns the tracer and whether it
/// accounts copy paths.
fn start_tracer(cgroup: &RunCgroup) -> Result<(Tracer, bool)> {
    Tracer::start_copies_if_possible(&TracerOptions {
        include_self: false,
        cgroup: Some(cgroup.filter.clone()),
        syscalls: true,
        copies: true,
        no_switches: false,
    })
}

/// The command's process table, fed from its lifecycle events (the kernel sends only the
/// command's cgroup's, and every free).
struct CommandLifecycle {
    table: ProcTable,
    /// Reap notices of processes that died at least `ZOMBIE_MIN_AGE_NS` before.
    late_reaps: Vec<Notice>,
    /// Notices of the event being applied.
    fresh: Vec<Notice>,
    /// Names of processes freed during the run, for blaming a parent that is gone.
    freed_comms: std::collections::HashMap<u32, String>,
    forked_processes: u64,
    forked_threads: u64,
}

impl CommandLifecycle {
    fn new() -> Self {
        Self {
            table: ProcTable::new(procfs::tick_ns()),
            late_reaps: Vec::new(),
            fresh: Vec::new(),
            freed_comms: Default::default(),
            forked_processes: 0,
            forked_threads: 0,
        }
    }

    /// Adds the command's own process (started by proclens, so no fork event names it).
    fn seed_leader(&mut self, pid: u32) {
        if let Some(st) = procfs::stat(pid) {
            self.table
                .seed(&[lifecycle::seed_proc(st)], procfs::boot_ns());
        }
    }

    /// Applies the lifecycle events of `events` and removes them; thread exits stay.
    fn absorb(&mut self, events: &mut Vec<Event>) {
        events.retain(|ev| {
            match ev {
                Event::ThreadExit(_) => return true,
                Event::Fork(f) if f.flags & fork_flags::THREAD != 0 => self.forked_threads += 1,
                Event::Fork(_) => self.forked_processes += 1,
                _ => {}
            }
            self.table.apply(ev, &mut self.fresh);
            for n in self.fresh.drain(..) {
                if let Notice::Reaped {
                    proc: p,
                    dead_for_ns,
                    ..
                } = &n
                {
                    self.freed_comms.insert(p.key.tgid, p.comm.to_string());
                    // Only the late ones make the report: a fork storm's would pile up.
                    if dead_for_ns.is_some_and(|d| d >= ZOMBIE_MIN_AGE_NS) {
                        self.late_reaps.push(n);
                    }
                }
            }
            false
        });
    }

    /// Dead processes of the command that /proc still shows as zombies.
    fn left_behind(&self) -> Vec<Zombie> {
        let tick_ns = procfs::tick_ns();
        self.table
            .zombies(procfs::boot_ns(), 0)
            .into_iter()
            .filter(|z| lifecycle::is_zombie_now(&z.key, tick_ns))
            .collect()
    }

    /// Whether every process of the command that died has been freed.
    fn all_freed(&self) -> bool {
        self.table.zombies(procfs::boot_ns(), 0).is_empty()
    }

    /// The name of a parent, live or freed during the run.
    fn parent_comm(&self, ppid: u32) -> Option<String> {
        self.table
            .comm_of_pid(ppid)
            .map(str::to_string)
            .or_else(|| self.freed_comms.get(&ppid).cloned())
    }

    /// Zombies at least the minimum age still unreaped, and those reaped late.
    fn section(&self) -> run_sections::ZombiesSection {
        let left: Vec<Zombie> = self
            .left_behind()
            .into_iter()
            .filter(|z| z.age_ns >= ZOMBIE_MIN_AGE_NS)
            .map(|mut z| {
                if z.parent_comm == "?"
                    && let Some(c) = self.parent_comm(z.ppid)
                {
                    z.parent_comm = c;
                }
                z
            })
            .collect();
        run_sections::zombies(&left, &self.late_reaps, ZOMBIE_MIN_AGE_NS, |ppid| {
            self.parent_comm(ppid)
        })
    }
}

async fn trace_command(
    mut tracer: Tracer,
    copies_on: bool,
    cgroup: &RunCgroup,
    user: Option<Identity>,
    args: RunArgs,
) -> Result<ExitCode> {
    let mut stream = EventStream::new(tracer.take_events().context("ring buffer already taken")?)?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;

    let started = Instant::now();
    let child = match command(&args.command, cgroup, user)?.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("proclens: cannot run `{}`: {e}", args.command[0]);
            return Ok(ExitCode::from(127));
        }
    };
    let pid = child.id() as i32;
    let mut life = CommandLifecycle::new();
    life.seed_leader(pid as u32);
    // The command runs as its user now; proclens needs no more than map reads and, at
    // the end, removing the cgroup take.
    tracer.drop_privileges(RunCgroup::REMOVAL_CAPS)?;
    let mut waiter = tokio::task::spawn_blocking(move || wait4(pid));
    let mut events: Vec<Event> = Vec::new();
    let reaped = loop {
        tokio::select! {
            r = &mut waiter => break r.context("waiting for the command")??,
            r = stream.recv(&mut events) => {
                r?;
                life.absorb(&mut events);
            }
            // Ctrl-C reaches the command through the terminal; proclens reports after it.
            _ = sigint.recv() => {}
            _ = sigterm.recv() => forward(pid, libc::SIGTERM),
            _ = sighup.recv() => forward(pid, libc::SIGHUP),
        }
    };
    let wall_s = started.elapsed().as_secs_f64();

    // The leader's last switch comes just after its parent could reap it: wait for its
    // final counts, for its other threads' entries to go, and for the frees of the
    // processes that died (an RCU grace period after their reap).
    let deadline = Instant::now() + Duration::from_secs(2);
    // Dead processes get this long after the leader's end to be reaped and freed; those
    // still unreaped then are reported as left behind.
    let reap_grace = Duration::from_millis(300);
    let mut leader_done_at: Option<Instant> = None;
    let live = loop {
        stream.drain(&mut events);
        life.absorb(&mut events);
        let live = tracer.threads()?;
        let leader_done = events
            .iter()
            .filter_map(Event::thread_exit)
            .any(|t| t.header.tid == pid as u32);
        let leader_threads_left = live.values().any(|t| t.tgid == pid as u32);
        let now = Instant::now();
        let leader_gone = leader_done && !leader_threads_left;
        if leader_gone && leader_done_at.is_none() {
            leader_done_at = Some(now);
        }
        let reaps_settled =
            life.all_freed() || leader_done_at.is_some_and(|t| now > t + reap_grace);
        if (leader_gone && reaps_settled) || now > deadline {
            break live;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let exits: Vec<ThreadExit> = events
        .iter()
        .filter_map(Event::thread_exit)
        .copied()
        .collect();
    let threads_seen = exits.len() as u64 + live.values().filter(|t| t.tgid != 0).count() as u64;
    let mut model = SwitchModel::new(false);
    let rows = model.update(&live, &exits);
    let mut comms: CommCache<Key> = CommCache::default();
    let rows: Vec<_> = rows
        .into_iter()
        .map(|r| {
            let comm = comms.get(r.key, r.key.id, r.alive, r.exit_comm.as_deref());
            (r, comm)
        })
        .collect();
    let health = tracer.health()?;
    let facts = RunFacts {
        wall_s,
        user_cpu_s: reaped.user_s,
        system_cpu_s: reaped.system_s,
        threads_seen,
        lost_events: health.ringbuf_drops,
        untracked_threads: health.thread_map_full,
        uncounted_syscalls: health.syscall_map_full,
        uncounted_copies: health.inflight_full + health.copy_map_full,
    };
    let mut report = run_report::build(args.command.clone(), reaped.exit, facts, &rows);
    report.forked_processes = life.forked_processes;
    report.forked_threads = life.forked_threads;
    report.zombies = life.section();
    if let Some(maps) = tracer.copy_maps() {
        let copy_rows = CopiesModel::new().update(&maps.copies()?, &maps.syscalls()?);
        for p in &mut report.per_process {
            p.syscalls = Some(
                copy_rows
                    .iter()
                    .filter(|r| r.tgid == p.pid)
                    .map(|r| r.syscalls.total)
                    .sum(),
            );
        }
        if copies_on {
            report.copies = Some(run_sections::copies(&copy_rows, wall_s));
        }
    }
    let text = if args.output.json {
        render::run::json(&report) + "\n"
    } else {
        render::run::plain(&report)
    };
    match &args.output_file {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stderr().write_all(text.as_bytes())?,
    }
    Ok(ExitCode::from(reaped.exit.shell_code()))
}

fn forward(pid: i32, sig: i32) {
    // SAFETY: kill with our child's pid.
    unsafe { libc::kill(pid, sig) };
}
