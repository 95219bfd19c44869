//! Mode switches: syscalls (user→kernel transitions) per process, totals and interval
//! deltas from successive snapshots of the kernel's per-(process, syscall) counts, the top
//! syscalls of a process (like `syscount`), and whether it uses `io_uring`.
//!
//! Syscall names come from the `syscalls` crate's tables: the build target's ABI, and the
//! 32-bit one (i386) for numbers the kernel side flagged as compat (`COMPAT_NR`): on a
//! 64-bit kernel, 3 is `close` in one and `read` in the other. The numbers themselves
//! come from the running kernel (the number `sys_exit` finds in the task's registers).

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
};

use proclens_common::copies::{COMPAT_NR, SysKey};
use syscalls::Sysno;

use super::proctable::Key;

/// Whether a counted number is a 32-bit (compat) syscall's.
pub fn is_compat(nr: u32) -> bool {
    nr & COMPAT_NR != 0
}

/// The number in its own ABI's table.
pub fn number(nr: u32) -> u32 {
    nr & !COMPAT_NR
}

/// The ABI of a counted number: the build target's, or `i386` for a 32-bit syscall.
pub fn abi(nr: u32) -> &'static str {
    if is_compat(nr) {
        "i386"
    } else {
        std::env::consts::ARCH
    }
}

/// The name of syscall `nr` in its ABI's table, or `syscall_<nr>`.
pub fn name(nr: u32) -> Cow<'static, str> {
    let n = number(nr);
    let known = if is_compat(nr) {
        syscalls::x86::Sysno::new(n as usize).map(|s| s.name())
    } else {
        Sysno::new(n as usize).map(|s| s.name())
    };
    match known {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(format!("syscall_{n}")),
    }
}

/// The name with its ABI when it is not the native one: `read (i386)`.
pub fn label(nr: u32) -> String {
    if is_compat(nr) {
        format!("{} (i386)", name(nr))
    } else {
        name(nr).into_owned()
    }
}

/// Syscalls through which a process drives `io_uring`: its submissions then bypass the
/// copy-family syscalls, so their bytes are not counted. (They have the same numbers in
/// both x86 ABIs.)
fn is_io_uring(nr: u32) -> bool {
    let n = number(nr);
    [
        Sysno::io_uring_setup,
        Sysno::io_uring_enter,
        Sysno::io_uring_register,
    ]
    .iter()
    .any(|s| s.id() as u32 == n)
}

/// One syscall's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NrCount {
    pub nr: u32,
    pub delta: u64,
    pub total: u64,
}

/// A process's syscalls: interval delta, running total since proclens started, per
/// syscall number (sorted busiest first in the interval, then by total).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcSyscalls {
    pub delta: u64,
    pub total: u64,
    pub by_nr: Vec<NrCount>,
    /// `io_uring_setup/enter/register` seen since proclens started, or an `io_uring` fd
    /// open when it started.
    pub io_uring: bool,
    /// 32-bit (compat) syscalls since proclens started.
    pub compat_total: u64,
}

impl ProcSyscalls {
    /// The `n` busiest syscalls of the interval (those with a zero delta are left out).
    pub fn top(&self, n: usize) -> impl Iterator<Item = &NrCount> {
        self.by_nr.iter().filter(|c| c.delta > 0).take(n)
    }
}

/// Turns successive snapshots of the `SYSCALLS` map into per-process counts. Processes
/// missing from a snapshot (gone and pruned) are forgotten.
#[derive(Debug, Default)]
pub struct SyscallModel {
    last: HashMap<SysKey, u64>,
}

impl SyscallModel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds in one snapshot; returns every process in it, by (tgid, leader start): two
    /// processes that had the same pid are two entries.
    pub fn update(&mut self, snapshot: &HashMap<SysKey, u64>) -> BTreeMap<Key, ProcSyscalls> {
        let mut out: BTreeMap<Key, ProcSyscalls> = BTreeMap::new();
        for (k, &total) in snapshot {
            // A counter never goes back; if it seems to, the entry was recreated and the
            // whole value is new.
            let delta = match self.last.get(k) {
                Some(&prev) if prev <= total => total - prev,
                _ => total,
            };
            let p = out
                .entry(Key {
                    tgid: k.tgid,
                    start_ns: k.start_ns,
                })
                .or_default();
            p.delta += delta;
            p.total += total;
            p.io_uring |= is_io_uring(k.nr) && total > 0;
            if is_compat(k.nr) {
                p.compat_total += total;
            }
            p.by_nr.push(NrCount {
                nr: k.nr,
                delta,
                total,
            });
        }
        for p in out.values_mut() {
            p.by_nr.sort_by(|a, b| {
                b.delta
                    .cmp(&a.delta)
                    .then(b.total.cmp(&a.total))
                    .then(a.nr.cmp(&b.nr))
            });
        }
        self.last.clone_from(snapshot);
        super::spare::map(&mut self.last);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tgid: u32, nr: Sysno) -> SysKey {
        SysKey {
            tgid,
            nr: nr.id() as u32,
            start_ns: 1000,
            cpu: 0,
            _pad: 0,
        }
    }

    fn proc(tgid: u32) -> Key {
        Key {
            tgid,
            start_ns: 1000,
        }
    }

    #[test]
    fn deltas_totals_and_top() {
        let mut m = SyscallModel::new();
        let mut snap = HashMap::from([
            (key(10, Sysno::read), 100),
            (key(10, Sysno::write), 50),
            (key(20, Sysno::close), 1),
        ]);
        let first = m.update(&snap);
        assert_eq!(
            (first[&proc(10)].delta, first[&proc(10)].total),
            (150, 150),
            "first sight: all is new"
        );
        snap.insert(key(10, Sysno::read), 110);
        snap.insert(key(10, Sysno::write), 80);
        let second = m.update(&snap);
        let p = &second[&proc(10)];
        assert_eq!((p.delta, p.total), (40, 190));
        let top: Vec<_> = p.top(5).map(|c| (name(c.nr), c.delta)).collect();
        assert_eq!(
            top,
            vec![(Cow::Borrowed("write"), 30), (Cow::Borrowed("read"), 10)]
        );
        assert_eq!(second[&proc(20)].delta, 0);
        assert_eq!(second[&proc(20)].top(5).count(), 0);
    }

    #[test]
    fn io_uring_users_are_flagged() {
        let mut m = SyscallModel::new();
        let out = m.update(&HashMap::from([
            (key(1, Sysno::io_uring_enter), 3),
            (key(2, Sysno::read), 3),
        ]));
        assert!(out[&proc(1)].io_uring);
        assert!(!out[&proc(2)].io_uring);
    }

    #[test]
    fn gone_processes_are_forgotten_and_reset_counters_restart() {
        let mut m = SyscallModel::new();
        m.update(&HashMap::from([(key(1, Sysno::read), 5)]));
        assert!(m.update(&HashMap::new()).is_empty());
        let again = m.update(&HashMap::from([(key(1, Sysno::read), 2)]));
        assert_eq!(again[&proc(1)].delta, 2);
    }

    /// Issue 7: a pid freed and given to a new process within one interval.
    #[test]
    fn a_reused_pid_is_two_processes() {
        let mut m = SyscallModel::new();
        let old = SysKey {
            start_ns: 5,
            ..key(42, Sysno::write)
        };
        let new = SysKey {
            start_ns: 9,
            ..key(42, Sysno::write)
        };
        m.update(&HashMap::from([(old, 3)]));
        let out = m.update(&HashMap::from([(old, 10), (new, 4)]));
        let a = &out[&Key {
            tgid: 42,
            start_ns: 5,
        }];
        let b = &out[&Key {
            tgid: 42,
            start_ns: 9,
        }];
        assert_eq!((a.delta, a.total), (7, 10));
        assert_eq!(
            (b.delta, b.total),
            (4, 4),
            "not merged with the old process"
        );
    }

    #[test]
    #[allow(
        clippy::decimal_bitwise_operands,
        reason = "syscall numbers are decimal in the kernel's tables; the flag is one high bit"
    )]
    fn names() {
        assert_eq!(name(Sysno::sendfile.id() as u32), "sendfile");
        assert_eq!(name(99_999), "syscall_99999");
        // A 32-bit read is 3, which is close in the 64-bit table.
        assert_eq!(name(3), "close");
        assert_eq!(name(3 | COMPAT_NR), "read");
        assert_eq!(label(3 | COMPAT_NR), "read (i386)");
        assert_eq!((abi(3 | COMPAT_NR), number(3 | COMPAT_NR)), ("i386", 3));
        assert_eq!(name(9999 | COMPAT_NR), "syscall_9999");
    }

    #[test]
    #[allow(
        clippy::decimal_bitwise_operands,
        reason = "syscall numbers are decimal in the kernel's tables; the flag is one high bit"
    )]
    fn compat_syscalls_are_counted_apart_and_flag_io_uring_too() {
        let mut m = SyscallModel::new();
        let k = |nr| SysKey {
            tgid: 1,
            nr,
            start_ns: 1000,
            cpu: 0,
            _pad: 0,
        };
        let out = m.update(&HashMap::from([
            (k(3 | COMPAT_NR), 5),
            (k(3), 2),
            (k(426 | COMPAT_NR), 1),
        ]));
        let p = &out[&proc(1)];
        assert_eq!((p.total, p.compat_total), (8, 6));
        assert!(p.io_uring, "io_uring_enter through the 32-bit ABI");
    }

    use proptest::prelude::Strategy as _;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any syscall number the kernel reports gets a name: this ABI's name, which maps
        /// back to the number, or `syscall_<nr>`.
        #[test]
        fn proptest_any_number_is_named(nr in proptest::prop_oneof![0u32..1024, (0u32..1024).prop_map(|n| n | COMPAT_NR), proptest::prelude::any::<u32>()]) {
            let n = name(nr);
            let back = if is_compat(nr) {
                n.parse::<syscalls::x86::Sysno>().map(|s| s.id() as u32).ok()
            } else {
                n.parse::<Sysno>().map(|s| s.id() as u32).ok()
            };
            match n.strip_prefix("syscall_") {
                Some(digits) if back.is_none() => {
                    proptest::prop_assert_eq!(digits, number(nr).to_string());
                }
                _ => proptest::prop_assert_eq!(back, Some(number(nr))),
            }
        }
    }
}
