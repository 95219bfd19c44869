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
        privilege,
        procfs::CommCache,
        tracer::{Tracer, TracerOptions},
    },
    model::{
        run_report::{self, ExitInfo, RunFacts},
        switches::{Key, SwitchModel},
    },
    render,
};

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
    let tracer = Tracer::start(&TracerOptions {
        include_self: false,
        cgroup: Some(cgroup.filter.clone()),
        ..TracerOptions::default()
    })?;
    let user = invoking_user()?;
    // Keep only what starting the command as the invoking user takes; the rest goes now,
    // before any other thread exists.
    let keep: &[caps::Capability] = if user.is_some() {
        &[caps::Capability::CAP_SETUID, caps::Capability::CAP_SETGID]
    } else {
        &[]
    };
    tracer.drop_privileges(keep)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(trace_command(tracer, &cgroup, user, args))
}

async fn trace_command(
    mut tracer: Tracer,
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
    // The command runs as its user now; proclens needs no more than map reads take.
    tracer.drop_privileges(&[])?;
    let mut waiter = tokio::task::spawn_blocking(move || wait4(pid));
    let mut events: Vec<Event> = Vec::new();
    let reaped = loop {
        tokio::select! {
            r = &mut waiter => break r.context("waiting for the command")??,
            r = stream.recv(&mut events) => r?,
            // Ctrl-C reaches the command through the terminal; proclens reports after it.
            _ = sigint.recv() => {}
            _ = sigterm.recv() => forward(pid, libc::SIGTERM),
            _ = sighup.recv() => forward(pid, libc::SIGHUP),
        }
    };
    let wall_s = started.elapsed().as_secs_f64();

    // The leader's last switch comes just after its parent could reap it: wait for its
    // final counts, and for its other threads' entries to go.
    let deadline = Instant::now() + Duration::from_secs(2);
    let live = loop {
        stream.drain(&mut events);
        let live = tracer.threads()?;
        let leader_done = events
            .iter()
            .filter_map(Event::thread_exit)
            .any(|t| t.header.tid == pid as u32);
        let leader_threads_left = live.values().any(|t| t.tgid == pid as u32);
        if (leader_done && !leader_threads_left) || Instant::now() > deadline {
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
    let facts = RunFacts {
        wall_s,
        user_cpu_s: reaped.user_s,
        system_cpu_s: reaped.system_s,
        threads_seen,
        lost_events: tracer.health()?.ringbuf_drops,
    };
    let report = run_report::build(args.command.clone(), reaped.exit, facts, &rows);
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
