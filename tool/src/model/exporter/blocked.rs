//! `serve`'s blocked time by syscall (`proclens_blocked_in_seconds_total`,
//! `proclens_blocked_in_switches_total`): each block charged to the syscall it began in
//! (see `model::waits`), the syscall folded into a bounded set of label values, so that a
//! label set shows at most [`LABELS`] syscalls however many a process blocks in.

use proclens_common::waits;

use super::Labels;
use crate::model::{syscalls, waits::ProcWaits};

/// The syscalls a block keeps its own label for: where programs wait (readiness, futexes,
/// reads and receives, accepts, sleeps, child waits, `io_uring`).
pub const SYSCALLS: [&str; 21] = [
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "futex",
    "read",
    "readv",
    "pread64",
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "accept",
    "accept4",
    "nanosleep",
    "clock_nanosleep",
    "wait4",
    "waitid",
    "io_uring_enter",
];
/// Any other syscall.
pub const OTHER: &str = "other";
/// A block outside any syscall (a page fault from user mode, a stop on the way back to
/// user mode).
pub const OUTSIDE: &str = "outside_syscall";
/// A block whose syscall the kernel cannot tell (before 5.15: no `bpf_task_pt_regs`).
pub const UNKNOWN: &str = "unknown";
/// Label values in all: [`SYSCALLS`], [`OTHER`], [`OUTSIDE`], [`UNKNOWN`].
pub const LABELS: usize = SYSCALLS.len() + 3;

/// The `syscall` label of a block that began in `nr` (`SysKey::nr`). A 32-bit call goes
/// with its 64-bit counterpart: the `_time64` variants, `_newselect`, `waitpid`.
pub fn syscall_label(nr: u32) -> &'static str {
    if nr == waits::OUTSIDE_SYSCALL {
        return OUTSIDE;
    }
    if nr == waits::UNKNOWN_SYSCALL {
        return UNKNOWN;
    }
    let name = syscalls::name(nr);
    let name = if syscalls::is_compat(nr) {
        match name.strip_suffix("_time64").unwrap_or(&name) {
            "_newselect" => "select",
            "waitpid" => "wait4",
            n => n,
        }
    } else {
        &name
    };
    SYSCALLS
        .iter()
        .find(|s| **s == name)
        .copied()
        .unwrap_or(OTHER)
}

/// Blocked time and the voluntary switches that began the blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Blocked {
    pub ns: u64,
    pub switches: u64,
}

impl Blocked {
    pub fn add(&mut self, o: &Blocked) {
        self.ns += o.ns;
        self.switches += o.switches;
    }

    pub fn is_zero(&self) -> bool {
        self.ns == 0 && self.switches == 0
    }
}

/// A process's blocks over one interval, by `syscall` label (those without any left
/// out), in label order.
pub fn interval(p: &ProcWaits) -> Vec<(&'static str, Blocked)> {
    let mut out: Vec<(&'static str, Blocked)> = Vec::new();
    for s in &p.syscalls {
        let d = Blocked {
            ns: s.delta.blocked_ns,
            switches: s.delta.switches,
        };
        if d.is_zero() {
            continue;
        }
        let label = syscall_label(s.nr);
        match out.iter_mut().find(|(l, _)| *l == label) {
            Some((_, b)) => b.add(&d),
            None => out.push((label, d)),
        }
    }
    out.sort_by_key(|(l, _)| *l);
    out
}

/// A process's blocks over one interval, labelled as its other families are.
pub struct BlockedDelta {
    pub labels: Labels,
    /// By `syscall` label (see [`interval`]).
    pub syscalls: Vec<(&'static str, Blocked)>,
    pub alive: bool,
}

#[cfg(test)]
mod tests {
    use ::syscalls::Sysno;
    use proclens_common::copies::COMPAT_NR;

    use super::*;
    use crate::model::{
        proctable::Key,
        waits::{Figures, SyscallWaits},
    };

    fn nr(s: Sysno) -> u32 {
        s.id() as u32
    }

    fn i386(name: &str) -> u32 {
        name.parse::<::syscalls::x86::Sysno>().unwrap().id() as u32 | COMPAT_NR
    }

    #[test]
    fn syscalls_fold_into_a_bounded_set() {
        assert_eq!(syscall_label(nr(Sysno::nanosleep)), "nanosleep");
        assert_eq!(syscall_label(nr(Sysno::epoll_pwait2)), "epoll_pwait2");
        assert_eq!(syscall_label(nr(Sysno::io_uring_enter)), "io_uring_enter");
        assert_eq!(syscall_label(nr(Sysno::write)), OTHER);
        assert_eq!(syscall_label(nr(Sysno::sendto)), OTHER);
        assert_eq!(syscall_label(4000), OTHER, "a number no table names");
        assert_eq!(syscall_label(waits::OUTSIDE_SYSCALL), OUTSIDE);
        assert_eq!(syscall_label(waits::UNKNOWN_SYSCALL), UNKNOWN);
        // 32-bit calls: by their own table's names (3 is read there, close here), and
        // with their 64-bit counterparts.
        assert_eq!(syscall_label(i386("read")), "read");
        assert_eq!(syscall_label(3), OTHER, "close");
        assert_eq!(
            syscall_label(i386("clock_nanosleep_time64")),
            "clock_nanosleep"
        );
        assert_eq!(syscall_label(i386("_newselect")), "select");
        assert_eq!(syscall_label(i386("waitpid")), "wait4");
        assert_eq!(syscall_label(i386("socketcall")), OTHER);
        // Every value is one of the LABELS, each of the named ones its own.
        let mut all: Vec<&str> = (0..1024)
            .chain([waits::OUTSIDE_SYSCALL, waits::UNKNOWN_SYSCALL])
            .chain((0..512).map(|n| n | COMPAT_NR))
            .map(syscall_label)
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), LABELS, "{all:?}");
    }

    #[test]
    fn an_interval_sums_the_syscalls_of_one_label() {
        let s = |nr, ns, switches| SyscallWaits {
            nr,
            delta: Figures {
                blocked_ns: ns,
                switches,
                ..Figures::default()
            },
            total: Figures::default(),
        };
        let p = ProcWaits {
            key: Key {
                tgid: 1,
                start_ns: 1,
            },
            syscalls: vec![
                s(nr(Sysno::write), 5, 1),
                s(nr(Sysno::nanosleep), 100, 2),
                s(nr(Sysno::fsync), 7, 1),
                s(nr(Sysno::read), 0, 0),
            ],
        };
        assert_eq!(
            interval(&p),
            [
                (
                    "nanosleep",
                    Blocked {
                        ns: 100,
                        switches: 2
                    }
                ),
                (
                    OTHER,
                    Blocked {
                        ns: 12,
                        switches: 2
                    }
                ),
            ]
        );
    }
}
