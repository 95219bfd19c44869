//! Issue 18: gauges that are always in /metrics — the machine's processes, threads,
//! zombies and pid headroom, proclens's own CPU, memory, descriptors, series and scrape
//! durations — each against an oracle outside proclens: ps, /proc read by the test, the
//! kernel's limits, the exposition's own lines.
mod common;

use std::{
    fs,
    process::Command,
    time::{Duration, Instant},
};

use common::{
    can_trace,
    exporter::{Server, http, sample_sum, wait_for},
    workload::Workload,
};

workload_entry!();

fn gauge(body: &str, name: &str) -> f64 {
    let v: Vec<f64> = body
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .collect();
    assert_eq!(v.len(), 1, "{name} is one unlabelled sample:\n{body}");
    v[0]
}

/// (processes, zombies, threads) by ps, which reads every /proc entry itself.
fn ps_counts() -> (u64, u64, u64) {
    let out = Command::new("ps")
        .args(["-e", "-o", "stat=,nlwp="])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut c = (0, 0, 0);
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let (stat, nlwp) = (f.next().unwrap(), f.next().unwrap().parse::<u64>().unwrap());
        c.0 += 1;
        c.1 += u64::from(stat.starts_with('Z'));
        c.2 += nlwp;
    }
    c
}

fn read_u64(path: &str) -> u64 {
    fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

/// Scrapes until the exposition agrees with ps taken just before and just after it (the
/// machine has other processes that come and go), and returns that scrape.
fn agreeing_scrape(
    server: &Server,
    what: &str,
    agree: impl Fn(&str, (u64, u64, u64)) -> bool,
) -> String {
    let mut last = String::new();
    wait_for(what, Duration::from_secs(20), || {
        let before = ps_counts();
        last = http(server.addr, "GET", "/metrics", None).1;
        let after = ps_counts();
        before == after && agree(&last, before)
    });
    last
}

#[test]
fn machine_gauges_agree_with_ps_and_the_kernel_limits() {
    if !can_trace() {
        return;
    }
    let server = Server::start(&[]);
    // ps counts itself, one process of one thread, which proclens's collection (0.3 s
    // before) cannot have seen: the gauges are ps's figures less ps.
    let body = agreeing_scrape(
        &server,
        "gauges equal to ps",
        |body, (procs, zombies, threads)| {
            gauge(body, "proclens_system_processes") == (procs - 1) as f64
                && gauge(body, "proclens_system_threads") == (threads - 1) as f64
                && gauge(body, "proclens_system_zombies") == zombies as f64
        },
    );
    let threads = gauge(&body, "proclens_system_threads") as u64;
    let limit = read_u64("/proc/sys/kernel/pid_max").min(read_u64("/proc/sys/kernel/threads-max"));
    assert_eq!(
        gauge(&body, "proclens_system_pid_headroom") as u64,
        limit - threads
    );
    // Three zombies more, then none: the gauge follows, and reads 0 rather than vanish.
    let base = gauge(&body, "proclens_system_zombies");
    let mut w = Workload::spawn("zombies:3");
    w.go();
    agreeing_scrape(&server, "three zombies more", |body, (_, zombies, _)| {
        gauge(body, "proclens_system_zombies") == zombies as f64 && zombies as f64 == base + 3.0
    });
    w.go();
    agreeing_scrape(&server, "the zombies reaped", |body, (_, zombies, _)| {
        gauge(body, "proclens_system_zombies") == zombies as f64 && zombies as f64 == base
    });
}

/// /proc/PID/stat's utime + stime in seconds, and `VmRSS` in bytes.
fn cpu_and_rss(pid: u32) -> (f64, u64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap();
    (ticks as f64 / hz, kib * 1024)
}

#[test]
fn own_figures_agree_with_proc_and_the_exposition() {
    if !can_trace() {
        return;
    }
    let server = Server::start(&[]);
    let pid = server.child.id();
    wait_for("a first collection", Duration::from_secs(10), || {
        gauge(
            &http(server.addr, "GET", "/metrics", None).1,
            "proclens_tracked_processes",
        ) > 0.0
    });
    let scrapes_before = gauge(
        &http(server.addr, "GET", "/metrics", None).1,
        "proclens_scrape_duration_seconds_count",
    );
    let mut client_seconds = 0.0;
    let mut body = String::new();
    let mut brackets = Vec::new();
    for _ in 0..5 {
        let before = cpu_and_rss(pid);
        let t = Instant::now();
        body = http(server.addr, "GET", "/metrics", None).1;
        client_seconds += t.elapsed().as_secs_f64();
        let after = cpu_and_rss(pid);
        brackets.push((before, after, body.clone()));
    }
    for ((cpu0, rss0), (cpu1, rss1), body) in &brackets {
        let cpu = gauge(body, "process_cpu_seconds_total");
        assert!(*cpu0 <= cpu && cpu <= *cpu1, "{cpu0} <= {cpu} <= {cpu1}");
        let rss = gauge(body, "process_resident_memory_bytes") as u64;
        let (lo, hi) = (rss0.min(rss1), rss0.max(rss1));
        assert!(*lo <= rss && rss <= *hi, "{lo} <= {rss} <= {hi}");
    }
    // Every sample line counted, this one included.
    let lines = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    assert_eq!(gauge(&body, "proclens_series"), lines as f64);
    // Each scrape is counted in the next one; the time the server measured is within the
    // time the client waited.
    let after = http(server.addr, "GET", "/metrics", None).1;
    assert_eq!(
        gauge(&after, "proclens_scrape_duration_seconds_count"),
        scrapes_before + 6.0
    );
    let sum = gauge(&after, "proclens_scrape_duration_seconds_sum")
        - gauge(&body, "proclens_scrape_duration_seconds_sum");
    assert!(
        sum > 0.0 && sum <= client_seconds,
        "{sum} <= {client_seconds}"
    );
    // Descriptors and limits as /proc shows them: the scrape's own socket is open while
    // the exposition is made (and the last one's may still be closing before it).
    let fds = || fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as f64;
    wait_for(
        "open fds = idle fds + the scrape's",
        Duration::from_secs(10),
        || {
            std::thread::sleep(Duration::from_millis(200));
            let idle = fds();
            let body = http(server.addr, "GET", "/metrics", None).1;
            std::thread::sleep(Duration::from_millis(200));
            idle == fds() && gauge(&body, "process_open_fds") == idle + 1.0
        },
    );
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft: f64 = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert_eq!(gauge(&after, "process_max_fds"), soft);
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start_ticks: f64 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let btime = common::proc_stat("btime") as f64;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let start = gauge(&after, "process_start_time_seconds");
    assert!((start - (btime + start_ticks / hz)).abs() < 1e-6, "{start}");
    assert!(sample_sum(&after, "proclens_folded_label_sets_total", &[]) == 0.0);
}
