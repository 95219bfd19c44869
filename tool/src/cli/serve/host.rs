//! The machine's and proclens's own figures for `/metrics`, read from /proc: processes,
//! threads and pid limits every collection, proclens's CPU, memory and descriptors at
//! every scrape.

use std::fs;

use crate::{
    collect::extras::Extras,
    model::exporter::{HostGauges, SelfGauges},
};

/// Threads the kernel counts: the denominator of /proc/loadavg's fourth field
/// (`running/total`).
fn parse_loadavg_threads(text: &str) -> Option<u64> {
    text.split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

fn read_u64(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Processes: the numeric entries of /proc (one per thread-group leader, zombies
/// included). A readdir, without opening any of them.
fn count_processes() -> u64 {
    fs::read_dir("/proc").map_or(0, |d| {
        d.flatten()
            .filter(|e| {
                e.file_name()
                    .as_encoded_bytes()
                    .iter()
                    .all(u8::is_ascii_digit)
            })
            .count() as u64
    })
}

/// The machine's gauges; the zombies come from the process table in `extras`.
pub(super) fn gauges(extras: &Extras) -> HostGauges {
    let threads = fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| parse_loadavg_threads(&t))
        .unwrap_or(0);
    let pid_max = read_u64("/proc/sys/kernel/pid_max").unwrap_or(u64::MAX);
    let threads_max = read_u64("/proc/sys/kernel/threads-max").unwrap_or(u64::MAX);
    HostGauges {
        processes: count_processes(),
        threads,
        zombies: extras.all_zombies.unwrap_or(0) as u64,
        pid_headroom: HostGauges::headroom(pid_max, threads_max, threads),
    }
}

/// Fields of /proc/self/stat after the command: utime, stime (clock ticks), starttime
/// (ticks since boot), vsize (bytes), `num_threads`.
fn parse_stat(stat: &str) -> Option<[u64; 5]> {
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command, field 3 (state) is f[0]: utime 14, stime 15, num_threads 20,
    // starttime 22, vsize 23.
    let at = |n: usize| f.get(n - 3)?.parse().ok();
    Some([at(14)?, at(15)?, at(22)?, at(23)?, at(20)?])
}

/// `VmRSS` of a /proc status text, in bytes. /proc/PID/stat's rss field reads the
/// kernel's per-CPU counters without summing them (pages off, as `ps` and the status
/// file show it); the status file sums them.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The soft limit of /proc/self/limits' "Max open files" line.
fn parse_max_fds(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// proclens's own figures, now.
pub(super) fn own() -> SelfGauges {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let stat = fs::read_to_string("/proc/self/stat").ok();
    let [utime, stime, start, vsize, threads] =
        stat.as_deref().and_then(parse_stat).unwrap_or_default();
    // The boot time does not change: /proc/stat (a line per CPU and per interrupt) is
    // read once.
    static BOOT: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
    let boot = *BOOT.get_or_init(|| {
        fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
    });
    SelfGauges {
        cpu_seconds: (utime + stime) as f64 / hz,
        resident_bytes: fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| parse_vm_rss(&s))
            .unwrap_or(0),
        virtual_bytes: vsize,
        // Less the descriptor reading the directory holds.
        open_fds: fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1) as u64),
        max_fds: fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| parse_max_fds(&l))
            .unwrap_or(0),
        start_time_seconds: boot.map_or(0.0, |b| b + start as f64 / hz),
        threads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_texts() {
        assert_eq!(
            parse_loadavg_threads("0.52 0.48 0.41 2/412 96131\n"),
            Some(412)
        );
        assert_eq!(parse_loadavg_threads("0.52 0.48"), None);
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 5 0 1234 8192000 300 18446744073709551615";
        assert_eq!(parse_stat(stat), Some([7, 3, 1234, 8_192_000, 5]));
        assert_eq!(
            parse_vm_rss("Name:\tx\nVmRSS:\t   47616 kB\n"),
            Some(47616 * 1024)
        );
        assert_eq!(parse_stat("42 (x) S 1"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
    }

    #[test]
    fn own_figures_match_proc_self() {
        let me = own();
        assert!(me.cpu_seconds >= 0.0 && me.resident_bytes > 0 && me.threads >= 1);
        assert!(me.open_fds >= 3 && me.max_fds >= me.open_fds);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(me.start_time_seconds > 0.0 && me.start_time_seconds <= now + 1.0);
        let host = gauges(&Extras::default());
        assert!(host.processes >= 1 && host.threads >= host.processes);
    }
}
