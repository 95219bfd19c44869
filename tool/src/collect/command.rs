//! The command `run` traces: started as the invoking user (under sudo) in the cgroup the
//! programs filter on, joined between fork and exec so that it is traced from its first
//! instruction; and its end, with what the kernel says of its CPU time.

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    process::Command,
};

use anyhow::{Context as _, Result};

use super::cgroup::RunCgroup;
use crate::model::run_report::ExitInfo;

/// The user to run the command as when proclens was started through sudo.
#[derive(Debug, Clone)]
pub struct Identity {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

pub fn invoking_user() -> Result<Option<Identity>> {
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
                .map_or_else(
                    |_| vec![gid],
                    |g| g.into_iter().map(nix::unistd::Gid::as_raw).collect(),
                )
        }
        Err(_) => vec![gid],
    };
    Ok(Some(Identity { uid, gid, groups }))
}

/// The command, set to join `cgroup` (and drop to `user`) between fork and exec, so it is
/// traced from its first instruction.
pub fn command(args: &[String], cgroup: &RunCgroup, user: Option<Identity>) -> Result<Command> {
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

/// How the command ended and the CPU time the kernel charged it and its reaped
/// descendants (rusage).
pub struct Reaped {
    pub exit: ExitInfo,
    pub user_s: f64,
    pub system_s: f64,
}

/// Waits for the command (blocking: run it on a blocking thread).
pub fn wait4(pid: i32) -> std::io::Result<Reaped> {
    let mut status = 0;
    // SAFETY: zeroed rusage is valid; wait4 with valid pointers.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut ru) };
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
