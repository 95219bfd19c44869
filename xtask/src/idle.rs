//! Idle-but-alive processes with chosen names: the background a benchmark or a test puts
//! beside proclens (1,000 processes under 100 names; 5,000 distinct names). Each wakes
//! every `nap`, so it switches and makes a syscall that often, and never forks; all are
//! killed (and reaped) on drop, and each exits by itself if its parent dies.

use std::{ffi::CString, time::Duration};

use anyhow::{Result, bail};

pub struct Idle {
    pids: Vec<libc::pid_t>,
}

impl Idle {
    /// `n` processes, the `i`th named `names[i % names.len()]`.
    pub fn start(n: usize, names: &[String], nap: Duration) -> Result<Self> {
        let parent = std::process::id() as libc::pid_t;
        // Made before forking: the children must not allocate.
        let names: Vec<CString> = names
            .iter()
            .map(|n| CString::new(n.as_str()))
            .collect::<Result<_, _>>()?;
        let nap = libc::timespec {
            tv_sec: nap.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(nap.subsec_nanos()),
        };
        let mut idle = Self {
            pids: Vec::with_capacity(n),
        };
        for i in 0..n {
            let name = names[i % names.len()].as_ptr();
            // SAFETY: the child calls only async-signal-safe functions (prctl, nanosleep,
            // getppid, _exit) and never returns into Rust.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                bail!("fork: {}", std::io::Error::last_os_error());
            }
            if pid == 0 {
                // SAFETY: see above.
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    libc::prctl(libc::PR_SET_NAME, name);
                    loop {
                        libc::nanosleep(&raw const nap, std::ptr::null_mut());
                        if libc::getppid() != parent {
                            libc::_exit(0);
                        }
                    }
                }
            }
            idle.pids.push(pid);
        }
        Ok(idle)
    }

    pub fn pids(&self) -> &[libc::pid_t] {
        &self.pids
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        for &p in &self.pids {
            // SAFETY: signalling and reaping our own children.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        for &p in &self.pids {
            // SAFETY: as above.
            unsafe { libc::waitpid(p, std::ptr::null_mut(), 0) };
        }
    }
}
