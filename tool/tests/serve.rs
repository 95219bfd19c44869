//! Real BPF: `proclens serve` scraped by curl-like requests, checked by promtool, and by a
//! real Prometheus server; plus abusive clients (many connections, slowloris, huge heads)
//! that must neither stop it nor grow its memory without bound.
mod common;

use std::{
    io::Write as _,
    net::TcpStream,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{
    can_trace,
    cgroup::{TestCgroup, pids_hierarchy},
    exporter::{Named, Prometheus, Server, comm_of, http, sample_sum, samples, try_http, wait_for},
    workload::Workload,
};

workload_entry!();

#[test]
fn metrics_show_a_known_workload_and_pass_promtool() {
    if !can_trace() {
        return;
    }
    let server = Server::start(&["--copies"]);
    let w = Named::start();
    let needle = format!("proclens_context_switches_total{{comm=\"{}\"", w.comm);
    let mut body = String::new();
    wait_for("the workload in /metrics", Duration::from_secs(10), || {
        body = http(server.addr, "GET", "/metrics", None).1;
        body.lines()
            .any(|l| l.starts_with(&needle) && l.contains("voluntary") && !l.ends_with(" 0"))
    });
    // Every family is there, the kernel's drop counters included (0 or more).
    for family in [
        "proclens_syscalls_total",
        "proclens_copy_bytes_total",
        "proclens_copy_calls_total",
        "proclens_copy_errors_total",
        "proclens_forks_total",
        "proclens_child_exits_total",
        "proclens_child_failures_total",
        "proclens_zombies",
        "proclens_dropped_total",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{body}"
        );
    }
    for reason in [
        "ringbuf_full",
        "thread_map_full",
        "inflight_map_full",
        "copy_map_full",
        "syscall_map_full",
    ] {
        assert!(
            !samples(&body, "proclens_dropped_total", &[("reason", reason)]).is_empty(),
            "drop counter {reason} missing"
        );
    }
    assert!(
        sample_sum(&body, "proclens_syscalls_total", &[("comm", &w.comm)]) > 0.0,
        "the workload's syscalls"
    );
    // The classic text format goes through promtool's parser and linter.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (cargo xtask setup installs prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // OpenMetrics when asked for it.
    let (status, om) = http(
        server.addr,
        "GET",
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    );
    assert_eq!(status, 200);
    assert!(om.trim_end().ends_with("# EOF"));
    // Only GET/HEAD on known paths.
    assert_eq!(http(server.addr, "GET", "/healthz", None).0, 200);
    assert_eq!(http(server.addr, "POST", "/metrics", None).0, 405);
    assert_eq!(http(server.addr, "GET", "/", None).0, 404);
    assert_eq!(http(server.addr, "DELETE", "/other", None).0, 404);
}

#[test]
fn a_real_prometheus_scrapes_it() {
    if !can_trace() {
        return;
    }
    let server = Server::start(&[]);
    let w = Named::start();
    let prom = Prometheus::start(&[server.addr]);
    let query = format!(
        "proclens_context_switches_total{{comm=\"{}\",kind=\"voluntary\"}}",
        w.comm
    );
    let mut found = Vec::new();
    wait_for(
        "Prometheus to have scraped the workload",
        Duration::from_mins(1),
        || {
            found = prom.vector(&query);
            !found.is_empty()
        },
    );
    // The value is a positive count of voluntary switches.
    assert!(found[0].1 > 0.0, "{found:?}");
}

#[test]
fn abusive_clients_neither_stop_it_nor_grow_its_memory() {
    if !can_trace() {
        return;
    }
    let server = Server::start(&["--max-connections", "64"]);
    assert_eq!(http(server.addr, "GET", "/metrics", None).0, 200);
    let rss_before = server.rss_kib();
    let started = Instant::now();
    // 1,000 connections at once: slowloris (half a request head, never finished), huge
    // heads, and idle sockets.
    let mut held = Vec::new();
    for i in 0..1000 {
        let Ok(mut s) = TcpStream::connect_timeout(&server.addr, Duration::from_secs(2)) else {
            continue;
        };
        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
        match i % 3 {
            0 => {
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ");
            }
            1 => {
                let big = format!(
                    "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n",
                    "a".repeat(64 * 1024)
                );
                let _ = s.write_all(big.as_bytes());
            }
            _ => {}
        }
        held.push(s);
    }
    assert!(started.elapsed() < Duration::from_mins(1));
    // While they are held, and once the header timeout has cut them, it still serves.
    wait_for(
        "a successful scrape under abuse",
        Duration::from_secs(20),
        || try_http(server.addr, "GET", "/metrics", None).is_ok_and(|(status, _)| status == 200),
    );
    drop(held);
    thread::sleep(Duration::from_secs(1));
    assert_eq!(http(server.addr, "GET", "/metrics", None).0, 200);
    let rss_after = server.rss_kib();
    eprintln!("RSS before {rss_before} KiB, after {rss_after} KiB");
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
}

#[test]
fn sendfile_bytes_appear_exactly_in_copy_bytes() {
    if !can_trace() {
        return;
    }
    const N: u64 = 3 * 1024 * 1024 + 12_345;
    let server = Server::start(&["--copies"]);
    let mut w = Workload::spawn(&format!("copy-sendfile:{N}"));
    // The workload has this test binary's name; this process (same name) makes no
    // sendfile call.
    let comm = comm_of(w.pid());
    let scrape = || http(server.addr, "GET", "/metrics", None).1;
    let sendfile = [("comm", comm.as_str()), ("syscall", "sendfile")];
    // An interval has gone by since the workload started: its labels are known.
    wait_for("the workload in /metrics", Duration::from_secs(10), || {
        !samples(&scrape(), "proclens_syscalls_total", &[("comm", &comm)]).is_empty()
    });
    let before = scrape();
    let bytes0 = sample_sum(&before, "proclens_copy_bytes_total", &sendfile);
    let calls0 = sample_sum(&before, "proclens_copy_calls_total", &sendfile);
    let syscalls0 = sample_sum(&before, "proclens_syscalls_total", &[("comm", &comm)]);
    w.go();
    wait_for("the sendfile bytes", Duration::from_secs(10), || {
        sample_sum(&scrape(), "proclens_copy_bytes_total", &sendfile) >= bytes0 + N as f64
    });
    // Several more intervals: nothing else comes in.
    thread::sleep(Duration::from_secs(1));
    let after = scrape();
    assert_eq!(
        sample_sum(&after, "proclens_copy_bytes_total", &sendfile) - bytes0,
        N as f64,
        "sendfile bytes, exactly"
    );
    let series = samples(&after, "proclens_copy_bytes_total", &sendfile);
    assert_eq!(series.len(), 1, "one sendfile path: {series:?}");
    // sendfile into a socket references the file's pages: zero-copy (docs/guide.md).
    for (k, v) in [("class", "zero_copy"), ("src", "file"), ("dst", "socket")] {
        assert!(
            series[0].0.iter().any(|(lk, lv)| lk == k && lv == v),
            "{k}={v} in {series:?}"
        );
    }
    let calls = sample_sum(&after, "proclens_copy_calls_total", &sendfile) - calls0;
    assert!(calls >= 1.0, "sendfile calls: {calls}");
    assert_eq!(
        sample_sum(&after, "proclens_copy_errors_total", &sendfile),
        0.0
    );
    let syscalls = sample_sum(&after, "proclens_syscalls_total", &[("comm", &comm)]) - syscalls0;
    assert!(
        syscalls >= calls,
        "every sendfile call is a syscall: {syscalls} < {calls}"
    );
}

/// Also the pids controller of the parent's cgroup, next to its zombies, in /metrics and
/// in the zombies view: the kernel's `pids.current` (zombies count until reaped) and
/// `pids.max`.
#[test]
fn zombies_gauge_and_fork_counters_follow_a_parent() {
    if !can_trace() {
        return;
    }
    const K: f64 = 3.0;
    let server = Server::start(&[]);
    // Made first, so that it is removed after the workload is gone.
    let cg = TestCgroup::with_pids_max("zombie-pids", 64);
    let mut w = Workload::spawn("zombies:3");
    let comm = comm_of(w.pid());
    cg.add(w.pid());
    let cgroup = format!(
        "/{}",
        cg.dir.strip_prefix(pids_hierarchy()).unwrap().display()
    );
    let scrape = || http(server.addr, "GET", "/metrics", None).1;
    let figures = |body: &str| {
        let mine = [("comm", comm.as_str())];
        (
            sample_sum(
                body,
                "proclens_forks_total",
                &[("comm", &comm), ("kind", "process")],
            ),
            sample_sum(body, "proclens_child_exits_total", &mine),
            sample_sum(body, "proclens_child_failures_total", &mine),
        )
    };
    let zombies = |body: &str| samples(body, "proclens_zombies", &[("parent_comm", &comm)]);
    // This process (same name) spawned the workload: wait until that fork is in and the
    // counters stand still.
    let mut last = figures(&scrape());
    wait_for("quiet fork counters", Duration::from_secs(20), || {
        thread::sleep(Duration::from_secs(1));
        let now = figures(&scrape());
        let quiet = now == last && now.0 >= 1.0;
        last = now;
        quiet
    });
    let (forks0, exits0, failures0) = last;
    // K children exit with codes 1..=K and stay unreaped.
    w.go();
    let mut body = String::new();
    wait_for("K zombies in the gauge", Duration::from_secs(15), || {
        body = scrape();
        zombies(&body).iter().map(|(_, v)| v).sum::<f64>() >= K
    });
    let z = zombies(&body);
    assert_eq!(z.len(), 1, "one series for the parent command: {z:?}");
    assert_eq!(z[0].1, K, "zombies held");
    // The parent's threads and its K zombies, as the kernel counts them (read after the
    // scrape; nothing in the cgroup moves meanwhile), and the limit.
    let pids = |name| sample_sum(&body, name, &[("cgroup", &cgroup)]);
    assert_eq!(
        pids("proclens_zombie_cgroup_pids"),
        cg.pids_current() as f64,
        "{body}"
    );
    let threads = std::fs::read_dir(format!("/proc/{}/task", w.pid()))
        .unwrap()
        .count();
    assert_eq!(cg.pids_current(), threads as u64 + K as u64);
    assert_eq!(pids("proclens_zombie_cgroup_pids_max"), 64.0);
    let (forks, exits, failures) = figures(&body);
    assert_eq!(forks - forks0, K, "processes forked");
    assert_eq!(exits - exits0, K, "children that died");
    assert_eq!(failures - failures0, K, "children that exited non-zero");
    // The zombies view says the same of the parent, from the same kernel counters.
    let (_, zs, _) = common::zombies::snapshot(&["--min-age", "0"]);
    let mine: Vec<_> = zs.iter().filter(|z| z["ppid"] == w.pid()).collect();
    assert_eq!(mine.len(), K as usize, "{zs:?}");
    for z in mine {
        assert_eq!(z["parent"]["pids_current"], cg.pids_current(), "{z}");
        assert_eq!(z["parent"]["pids_max"], 64, "{z}");
    }
    // That snapshot was a fork and a child's exit of this command too: the counters'
    // baseline from here on, once they show it.
    let mut settled = figures(&scrape());
    wait_for(
        "the snapshot in the counters",
        Duration::from_secs(20),
        || {
            thread::sleep(Duration::from_secs(1));
            let now = figures(&scrape());
            let quiet = now == settled && now.0 == forks + 1.0 && now.1 == exits + 1.0;
            settled = now;
            quiet
        },
    );
    let (forks, exits, failures) = settled;
    // It reaps them: the gauge goes to 0, the counters stay.
    w.go();
    wait_for("the gauge back to 0", Duration::from_secs(10), || {
        body = scrape();
        zombies(&body).iter().all(|(_, v)| *v == 0.0)
    });
    assert_eq!(
        zombies(&body).len(),
        1,
        "the parent command's series stays, at 0"
    );
    assert_eq!(figures(&body), (forks, exits, failures));
    // Holding no zombies, its cgroup is not shown.
    assert!(!body.contains(&format!("cgroup=\"{cgroup}\"")), "{body}");
}

/// `--expire`: once no process of a command is left, its series leave /metrics after that
/// long, not before; the series of commands still running stay.
#[test]
fn series_of_a_finished_command_expire() {
    if !can_trace() {
        return;
    }
    let server = Server::start(&["--expire", "1"]);
    let w = Named::start();
    let needle = format!("proclens_context_switches_total{{comm=\"{}\"", w.comm);
    let scrape = || http(server.addr, "GET", "/metrics", None).1;
    let listed = |body: &str| body.lines().any(|l| l.starts_with(&needle));
    wait_for("the workload in /metrics", Duration::from_secs(10), || {
        listed(&scrape())
    });
    drop(w);
    let ended = Instant::now();
    let mut body = String::new();
    wait_for("its series to expire", Duration::from_secs(10), || {
        body = scrape();
        !listed(&body)
    });
    // 1 s at 0.3 s per collection is 4 collections after the last one that saw it.
    assert!(
        ended.elapsed() >= Duration::from_millis(900),
        "expired {:?} after the command ended",
        ended.elapsed()
    );
    assert!(
        body.lines()
            .any(|l| l.starts_with("proclens_context_switches_total{")),
        "every series went, not just the finished command's:\n{body}"
    );
}

/// A connection to `server` from the loopback address `source` (127.0.0.2 is as local as
/// 127.0.0.1, and the server tells them apart).
fn connect_from(source: &str, server: std::net::SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let from: std::net::SocketAddr = format!("{source}:0").parse().unwrap();
    s.bind(&from.into()).unwrap();
    s.connect_timeout(&server.into(), Duration::from_secs(5))
        .unwrap();
    s.into()
}

/// Issue 18: one global limit of 64 connections let a single client starve the scrapes.
/// One client holding more connections than the whole limit gets `--max-connections-per-
/// peer` of them; a scraper from another address is served at once.
#[test]
fn one_client_cannot_take_the_connections_of_another() {
    if !can_trace() {
        return;
    }
    let server = Server::start(&["--max-connections", "8", "--max-connections-per-peer", "4"]);
    assert_eq!(http(server.addr, "GET", "/metrics", None).0, 200);
    // Client A: 8 idle connections (the global limit). The 5th and later are closed at
    // once: a read sees the end of the stream, long before the 5 s header timeout.
    let mut held: Vec<TcpStream> = (0..8)
        .map(|_| connect_from("127.0.0.1", server.addr))
        .collect();
    thread::sleep(Duration::from_millis(300));
    let mut closed = 0;
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut b = [0u8; 1];
        if matches!(std::io::Read::read(s, &mut b), Ok(0)) {
            closed += 1;
        }
    }
    assert_eq!(closed, 4, "client A keeps exactly 4 connections");
    // Client B scrapes while A still holds its 4.
    let started = Instant::now();
    let mut b = connect_from("127.0.0.2", server.addr);
    b.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut b, &mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.0 200"),
        "{}",
        resp.lines().next().unwrap_or("")
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "served after {:?}",
        started.elapsed()
    );
    drop(held);
}
