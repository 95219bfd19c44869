//! The size of the switch programs' thread table, from the machine: the `THREADS` hash
//! holds an entry for every thread that can exist at once (`threads-max`, and no more
//! than there are thread ids, `pid_max`), up to a cap `--max-threads` can move; the
//! `UNTRACKED` marks hold a byte per thread id.

use aya::EbpfLoader;

/// Set to N, the `THREADS` hash has N entries, whatever the machine or `--max-threads`
/// say: so that the tests can fill it.
pub const MAX_THREADS_ENV: &str = "PROCLENS_MAX_THREADS";

/// The most entries the machine's limits give the table by default: each costs ~300
/// bytes preallocated (a 248-byte entry plus the hash's own), so 65,536 are ~20 MiB.
pub const DEFAULT_CAP: u32 = 65536;

/// The kernel's ceiling on `pid_max` (`PID_MAX_LIMIT` on 64-bit): the marks' size when
/// `pid_max` cannot be read.
const PID_MAX_LIMIT: u32 = 4 << 20;

/// Thread ids per `UNTRACKED` element.
const MARKS_PER_ENTRY: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadTable {
    /// Entries of `THREADS`.
    pub threads: u32,
    /// Entries of `UNTRACKED` (64 thread ids each).
    pub marks: u32,
}

impl ThreadTable {
    /// From the machine, `--max-threads` (`flag`) and [`MAX_THREADS_ENV`].
    pub fn resolve(flag: Option<u32>) -> Self {
        let read = |name: &str| {
            std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
                .ok()
                .and_then(|v| v.trim().parse().ok())
        };
        let env = std::env::var(MAX_THREADS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &u32| n > 0);
        Self::sized(read("threads-max"), read("pid_max"), env.or(flag))
    }

    /// The table for a machine with these limits (`None`: unreadable) and an asked-for
    /// size.
    pub fn sized(threads_max: Option<u32>, pid_max: Option<u32>, asked: Option<u32>) -> Self {
        let machine = match (threads_max, pid_max) {
            (Some(t), Some(p)) => t.min(p),
            (Some(n), None) | (None, Some(n)) => n,
            (None, None) => DEFAULT_CAP,
        };
        let threads = asked.unwrap_or(machine.min(DEFAULT_CAP)).max(1);
        let ids = pid_max.unwrap_or(PID_MAX_LIMIT).clamp(1, PID_MAX_LIMIT);
        Self {
            threads,
            marks: ids.div_ceil(MARKS_PER_ENTRY),
        }
    }

    pub fn configure(self, loader: &mut EbpfLoader<'_>) {
        loader.map_max_entries("THREADS", self.threads);
        loader.map_max_entries("UNTRACKED", self.marks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_every_thread_the_machine_can_have_up_to_the_cap() {
        // This machine's kind: 192,724 threads at most, ids up to 32,768.
        let t = ThreadTable::sized(Some(192_724), Some(32_768), None);
        assert_eq!(
            t,
            ThreadTable {
                threads: 32_768,
                marks: 512
            }
        );
        // A small machine: its thread limit.
        assert_eq!(
            ThreadTable::sized(Some(1_000), Some(32_768), None).threads,
            1_000
        );
        // Many CPUs and pid_max at the kernel's ceiling: the cap.
        let big = ThreadTable::sized(Some(1_000_000), Some(4_194_304), None);
        assert_eq!(
            big,
            ThreadTable {
                threads: DEFAULT_CAP,
                marks: 65_536
            }
        );
        // Asked for: whatever the machine says, never 0.
        assert_eq!(
            ThreadTable::sized(Some(1_000), Some(32_768), Some(200_000)).threads,
            200_000
        );
        assert_eq!(ThreadTable::sized(None, None, Some(0)).threads, 1);
        // Unreadable limits: the cap, and a mark for every possible thread id.
        assert_eq!(
            ThreadTable::sized(None, None, None),
            ThreadTable {
                threads: DEFAULT_CAP,
                marks: 65_536
            }
        );
        // pid_max not a multiple of 64: the last ids still have a mark.
        assert_eq!(ThreadTable::sized(None, Some(100), None).marks, 2);
    }
}
