//! Real BPF, issue 16: a long-running agent stays exact. `serve` and `zombies --watch` run
//! through two minutes of `stress-ng --vfork 2 --fork 1` and 30 s of quiet after it. Then
//! each tracks as many processes as /proc lists (±0.5%), its resident memory is back within
//! 5 MiB of what it was after warm-up, and neither lost an event.
mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    Proclens, can_trace,
    exporter::{Server, sample_sum, scrape, wait_for},
    now_unix,
};

const STORM: Duration = Duration::from_mins(2);
const QUIET: Duration = Duration::from_secs(30);

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS of {pid}"))
}

/// Processes /proc lists now.
fn proc_count() -> u64 {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .count() as u64
}

/// The watch's first `stats` line stamped after `after`.
fn stats_after(watch: &Proclens, after: f64) -> serde_json::Value {
    watch.json_until(Duration::from_secs(30), |v| {
        v["type"] == "stats" && v["time"].as_f64().unwrap() > after
    })
}

/// `tracked` within 0.5% of /proc's count, read just before and just after it (processes
/// that start or end between the reads widen the bracket).
fn assert_tracks_proc(who: &str, before: u64, tracked: u64, after: u64) {
    let (lo, hi) = (before.min(after), before.max(after));
    let slack = hi / 200;
    assert!(
        tracked + slack >= lo && tracked <= hi + slack,
        "{who} tracks {tracked} processes; /proc listed {before} then {after} (±{slack})"
    );
}

#[test]
fn serve_and_watch_stay_exact_and_bounded_through_a_two_minute_fork_storm() {
    if !can_trace() {
        return;
    }
    let server = Server::with_args(&["--interval", "1"]);
    let watch = Proclens::spawn(&["zombies", "--watch", "--json", "--interval", "1"]);
    let tracked_by_serve = || sample_sum(&scrape(server.addr), "proclens_tracked_processes", &[]);
    wait_for("serve's first collections", Duration::from_secs(30), || {
        tracked_by_serve() > 0.0
    });
    stats_after(&watch, now_unix() + 2.0);
    let warm = [rss_kib(server.child.id()), rss_kib(watch.pid())];

    let started = Instant::now();
    let storm = Command::new("stress-ng")
        .args(["--vfork", "2", "--fork", "1", "--metrics-brief", "-t"])
        .arg(format!("{}s", STORM.as_secs()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("stress-ng (cargo xtask setup installs it)");
    assert!(storm.status.success(), "{storm:?}");
    let during = [rss_kib(server.child.id()), rss_kib(watch.pid())];
    eprintln!(
        "storm of {:?}: {}",
        started.elapsed(),
        String::from_utf8_lossy(&storm.stderr)
    );
    std::thread::sleep(QUIET);

    let before = proc_count();
    let serve_tracked = tracked_by_serve() as u64;
    let stats = stats_after(&watch, now_unix());
    let after = proc_count();
    let body = scrape(server.addr);
    let rss = [rss_kib(server.child.id()), rss_kib(watch.pid())];
    eprintln!(
        "RSS KiB (serve, watch): warm {warm:?}, end of storm {during:?}, after quiet {rss:?}; \
         /proc {before}..{after}, serve tracks {serve_tracked}, watch {stats}"
    );
    assert_eq!(sample_sum(&body, "proclens_lost_events_total", &[]), 0.0);
    assert_eq!(stats["lost_events"], 0, "{stats}");
    assert_tracks_proc("serve", before, serve_tracked, after);
    assert_tracks_proc(
        "zombies --watch",
        before,
        stats["tracked_processes"].as_u64().unwrap(),
        after,
    );
    for (who, (w, r)) in ["serve", "zombies --watch"]
        .iter()
        .zip(warm.iter().zip(&rss))
    {
        assert!(
            *r <= w + 5 * 1024,
            "{who}: {r} KiB after the storm and the quiet, {w} KiB after warm-up"
        );
    }
}
