//! Small reads from /proc.

use std::{collections::HashMap, fs, path::Path};

use crate::error::Fatal;

/// The command name of a task, or `None` once it has gone.
pub fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end_matches('\n').to_string())
}

/// The cgroup v2 path of a process (`0::/system.slice/x.service` → `/system.slice/x.service`).
pub fn cgroup(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    v2_path(&text).map(str::to_string)
}

/// The cgroup v2 path in a /proc/PID/cgroup text.
pub fn v2_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// Whether a process exists.
pub fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// What /proc/PID/fd/N links to for an `io_uring` instance.
const IO_URING_FD: &str = "anon_inode:[io_uring]";

static IO_URING_AT_START: std::sync::OnceLock<HashMap<u32, u64>> = std::sync::OnceLock::new();

/// Finds the processes holding an `io_uring` fd now, while proclens may still read every
/// process's fds (privileges are dropped after start-up): see [`io_uring_at_start`].
pub fn remember_io_uring_holders() {
    IO_URING_AT_START.get_or_init(io_uring_holders);
}

/// The processes that held an `io_uring` fd at start-up, with their start (field 22, clock
/// ticks): one set up before proclens started makes no `io_uring` syscall it could see, and
/// with SQPOLL none at all. Empty unless [`remember_io_uring_holders`] ran.
pub fn io_uring_at_start() -> HashMap<u32, u64> {
    IO_URING_AT_START.get().cloned().unwrap_or_default()
}

fn io_uring_holders() -> HashMap<u32, u64> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == IO_URING_FD))
            })
        })
        .filter_map(|pid| Some((pid, stat(pid)?.start_ticks)))
        .collect()
}

/// Fails with exit code 4 for the first pid that does not exist.
pub fn check_pids(pids: &[u32]) -> anyhow::Result<()> {
    match pids.iter().find(|p| !exists(**p)) {
        Some(p) => Err(Fatal::NoSuchProcess(*p).into()),
        None => Ok(()),
    }
}

/// The inode of the initial pid namespace (`PROC_PID_INIT_INO`), the same on every
/// kernel.
const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;

/// Fails with exit code 7 unless proclens runs in the initial pid namespace with a /proc
/// of it. The programs see the kernel's own (initial namespace) pids; inside a container
/// without the host's pid namespace, `getpid()` and /proc show the container's, and every
/// pid proclens printed or matched would be wrong.
pub fn check_pid_namespace() -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    const HOW: &str = "run it in the host's pid namespace (docker/podman --pid host, Kubernetes hostPID: true) with the host's /proc";
    match fs::metadata("/proc/self/ns/pid") {
        Ok(m) if m.ino() == INIT_PID_NS_INO => Ok(()),
        Ok(_) => Err(Fatal::PidNamespace(format!(
            "proclens is not in the initial pid namespace, so the pids the kernel reports are not this /proc's; {HOW}"
        ))
        .into()),
        Err(e) => Err(Fatal::PidNamespace(format!(
            "cannot read /proc/self/ns/pid ({e}): /proc is not this pid namespace's; {HOW}"
        ))
        .into()),
    }
}

/// The fields of /proc/PID/stat proclens uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    /// Field 20: threads in the process (a zombie, dead for good, shows 1).
    pub num_threads: u32,
    /// Field 22: start time in clock ticks since boot (`start_boottime`).
    pub start_ticks: u64,
    /// Field 52 (Linux 3.5+): the wait status of a dead process.
    pub exit_code: u32,
}

/// Parses a /proc/PID/stat line. The command name may hold spaces and parentheses, so it
/// runs from the first `(` to the last `)`. Malformed input is `None`, never a panic.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] is field 3.
    let field = |n: usize| rest.get(n - 3).copied();
    Some(Stat {
        pid,
        comm,
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        num_threads: field(20)?.parse().ok()?,
        start_ticks: field(22)?.parse().ok()?,
        exit_code: field(52)
            .and_then(|v| v.parse::<i64>().ok())
            .map_or(0, |v| v as u32),
    })
}

impl Stat {
    /// A zombie process: dead and unreaped. State `Z` alone is not enough: a process whose
    /// leader thread exited while other threads run also shows `Z` (ps: `Zl`).
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z' && self.num_threads <= 1
    }
}

/// /proc/PID/stat of a process, or `None` once it has gone.
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The stat of the process that started at `start_ns` (boot clock) as pid `tgid`, when
/// /proc still shows that process: `None` when the pid is gone or names another process
/// now. /proc gives the start in clock ticks (`tick_ns` each), so that is the comparison.
pub fn stat_of(tgid: u32, start_ns: u64, tick_ns: u64) -> Option<Stat> {
    stat(tgid).filter(|s| s.start_ticks == start_ns / tick_ns.max(1))
}

/// Every process in /proc (thread-group leaders only).
pub fn processes() -> Vec<Stat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter_map(stat)
        .collect()
}

/// The pids /proc lists (thread-group leaders), without reading any of them.
pub fn pids() -> rustc_hash::FxHashSet<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return rustc_hash::FxHashSet::default();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .collect()
}

/// Nanoseconds per /proc clock tick (`sysconf(_SC_CLK_TCK)`, usually 100 Hz).
pub fn tick_ns() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        10_000_000
    } else {
        1_000_000_000 / hz as u64
    }
}

/// The boot clock (`CLOCK_BOOTTIME`, ns), the clock of lifecycle events and of field 22.
pub fn boot_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

/// `CLOCK_MONOTONIC` in ns: the clock of `task_struct.start_time`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid pointer.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A per-process text from /proc (command name, cgroup) by row key: read when a key is
/// first seen and again once the last reading is [`NameCache::MAX_AGE`] old while the
/// task lives (exec renames it: callers that see exec events call [`NameCache::forget`]
/// for an exact name at once), remembered after it exits. One /proc read per process per
/// [`NameCache::MAX_AGE`] instead of per interval: with 1,000 processes that was a fifth
/// of the agent's time.
#[derive(Debug)]
pub struct NameCache<K> {
    names: HashMap<K, (String, std::time::Instant)>,
    read: fn(u32) -> Option<String>,
}

/// Command names by row key.
pub type CommCache<K> = NameCache<K>;

impl<K> Default for NameCache<K> {
    fn default() -> Self {
        Self {
            names: HashMap::new(),
            read: comm,
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy> NameCache<K> {
    /// For renames with `prctl(PR_SET_NAME)`, the only change no event brings here: at
    /// 5 s, `serve` (every 5 s) read every name again at every interval, in three caches.
    pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30);

    /// The text for `pid` under row `key`, else the last one seen, else `hint` (from an
    /// exit event), else `?`.
    pub fn get(&mut self, key: K, pid: u32, alive: bool, hint: Option<&str>) -> String {
        let now = std::time::Instant::now();
        let fresh = self
            .names
            .get(&key)
            .filter(|(_, at)| now.duration_since(*at) < Self::MAX_AGE)
            .map(|(n, _)| n.clone());
        if alive {
            if let Some(n) = fresh {
                return n;
            }
            if let Some(c) = (self.read)(pid) {
                self.names.insert(key, (c.clone(), now));
                return c;
            }
        }
        if let Some(h) = hint {
            return h.to_string();
        }
        self.names
            .get(&key)
            .map_or_else(|| "?".into(), |(n, _)| n.clone())
    }

    /// Forgets the texts of keys `which` selects (e.g. a process that exec'd).
    pub fn forget(&mut self, which: impl Fn(&K) -> bool) {
        self.names.retain(|k, _| !which(k));
    }

    /// Forgets keys not in `keep`.
    pub fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.names.retain(|k, _| keep(k));
        crate::model::spare::map(&mut self.names);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_stat_lines() {
        // A zombie with a command name holding a space and a parenthesis.
        let z = "4242 (my (odd) cmd) Z 4200 4242 4200 0 -1 4227084 0 0 0 0 0 0 0 0 20 0 1 0 123456 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 768\n";
        let s = parse_stat(z).unwrap();
        assert_eq!(
            (
                s.pid,
                s.comm.as_str(),
                s.state,
                s.ppid,
                s.start_ticks,
                s.exit_code
            ),
            (4242, "my (odd) cmd", 'Z', 4200, 123_456, 768)
        );
        assert!(s.is_zombie());
        // A dead leader with a live thread: `Z` with 2 threads is no zombie.
        let zl = z.replace(" 20 0 1 0 123456", " 20 0 2 0 123456");
        let s = parse_stat(&zl).unwrap();
        assert_eq!((s.state, s.num_threads), ('Z', 2));
        assert!(!s.is_zombie());
        // Old kernels have fewer fields: no exit code.
        let old = "1 (init) S 0 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5 0";
        assert_eq!(parse_stat(old).unwrap().exit_code, 0);
        for bad in [
            "",
            "1 init S 0",
            "x (a) S 0",
            "1 (a) S",
            "1 (a) S zz 1 1",
            ") 1 (",
            "1 (a) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 20 0 1 0 nope",
        ] {
            assert_eq!(parse_stat(bad), None, "{bad:?}");
        }
    }

    /// Command names as the kernel may show them: up to 15 characters, often spaces and
    /// parentheses (any name a process gives itself with `prctl(PR_SET_NAME)`).
    fn comm_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![Just(')'), Just('('), Just(' '), Just('\n'), any::<char>()],
            0..16,
        )
        .prop_map(|c| c.into_iter().collect())
    }

    /// A /proc/PID/stat line with the given values and random numbers elsewhere; `fields`
    /// is how many fields it has (old kernels print fewer than 52).
    fn stat_line(s: &Stat, exit_code: i32, fields: usize, other: &[i64]) -> String {
        let mut line = format!("{} ({}) {}", s.pid, s.comm, s.state);
        for (n, random) in other.iter().enumerate().take(fields + 1).skip(4) {
            let v = match n {
                4 => s.ppid.to_string(),
                20 => s.num_threads.to_string(),
                22 => s.start_ticks.to_string(),
                52 => exit_code.to_string(),
                _ => random.to_string(),
            };
            line.push(' ');
            line.push_str(&v);
        }
        line.push('\n');
        line
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary text is parsed or rejected, never a panic.
        #[test]
        fn proptest_arbitrary_stat_text(text in any::<String>()) {
            if let Some(s) = parse_stat(&text) {
                let comm = format!("({})", s.comm);
                prop_assert!(text.contains(&comm), "{s:?}");
            }
        }

        /// A stat line whose command name holds spaces, parentheses and newlines parses to
        /// the right pid, name, state, ppid, thread count, start time and exit code, and
        /// every cut of it before the name's closing parenthesis is rejected (a name cannot
        /// pass for the fields after it).
        #[test]
        fn proptest_stat_lines_parse(
            pid in any::<u32>(),
            comm in comm_strategy(),
            state in prop::sample::select(vec!['R', 'S', 'D', 'Z', 'T', 't', 'X', 'I', 'P']),
            ppid in any::<u32>(),
            num_threads in any::<u32>(),
            start_ticks in any::<u64>(),
            exit_code in any::<i32>(),
            fields in prop_oneof![Just(52usize), 22usize..=52],
            other in prop::collection::vec(any::<i64>(), 53),
            cut in any::<prop::sample::Index>(),
        ) {
            let want = Stat { pid, comm, state, ppid, num_threads, start_ticks, exit_code: 0 };
            let line = stat_line(&want, exit_code, fields, &other);
            let want = Stat {
                exit_code: if fields >= 52 { exit_code as u32 } else { 0 },
                ..want
            };
            prop_assert_eq!(parse_stat(&line), Some(want));
            let close = line.rfind(')').unwrap();
            let cut = cut.index(close + 1);
            if line.is_char_boundary(cut) {
                prop_assert_eq!(parse_stat(&line[..cut]), None);
            }
        }
    }

    #[test]
    fn reads_this_process() {
        let me = stat(std::process::id()).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(me.start_ticks * tick_ns() <= boot_ns());
        assert!(processes().iter().any(|p| p.pid == 1));
    }
}
