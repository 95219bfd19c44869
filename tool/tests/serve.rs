//! Real BPF: `proclens serve` scraped by curl-like requests, checked by promtool, and by a
//! real Prometheus server; plus abusive clients (many connections, slowloris, huge heads)
//! that must neither stop it nor grow its memory without bound.
mod common;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{PROCLENS, can_trace, workload::Workload};

workload_entry!();

/// A running `proclens serve` and the address it listens on.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(PROCLENS)
            .args(["serve", "--listen", "127.0.0.1:0", "--interval", "0.3"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("proclens: serving http://")
            .and_then(|r| r.strip_suffix("/metrics"))
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .parse()
            .unwrap();
        // Keep draining stderr so proclens never blocks on it.
        thread::spawn(move || for _ in stderr.lines() {});
        Self { child, addr }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 request; returns (status, body).
fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    accept: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: x\r\n{accept}\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn http(addr: SocketAddr, method: &str, path: &str, accept: Option<&str>) -> (u16, String) {
    try_http(addr, method, path, accept).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// A workload with a name of its own: a shell loop running `sleep` under another name.
struct Named {
    child: Child,
    comm: String,
    _link: std::path::PathBuf,
}

impl Named {
    fn start() -> Self {
        let comm = format!("plw{}", std::process::id() % 100_000);
        let link = std::env::temp_dir().join(&comm);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/bin/sleep", &link).unwrap();
        let child = Command::new("sh")
            .args(["-c", &format!("while :; do {} 0.01; done", link.display())])
            .spawn()
            .unwrap();
        Self {
            child,
            comm,
            _link: link,
        }
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self._link);
    }
}

/// The `k="v"` pairs of a sample's label block (text after `{`), and the rest of the line.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches(',');
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => value.push(match chars.next()?.1 {
                    'n' => '\n',
                    c => c,
                }),
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        s = &rest[end + 1..];
    }
}

/// The values of the samples of `name` whose labels include every pair of `want`, with
/// their labels.
fn samples(body: &str, name: &str, want: &[(&str, &str)]) -> Vec<(Vec<(String, String)>, f64)> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => parse_labels(r)?,
                None if rest.starts_with(' ') => (Vec::new(), rest),
                None => return None,
            };
            let matches = want
                .iter()
                .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v));
            matches.then(|| (labels, value.trim().parse().unwrap()))
        })
        .collect()
}

/// The sum of those samples (0 when there are none).
fn sample_sum(body: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    samples(body, name, want).iter().map(|(_, v)| v).sum()
}

fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap()
        .trim_end()
        .to_string()
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(200));
    }
}

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
    let dir = std::env::temp_dir().join(format!("proclens-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: proclens\n    static_configs:\n      - targets: ['{}']\n", server.addr),
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let prom_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={prom_addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (cargo xtask setup installs it)");
    let query = format!(
        "/api/v1/query?query=proclens_context_switches_total%7Bcomm%3D%22{}%22%2Ckind%3D%22voluntary%22%7D",
        w.comm
    );
    let mut answer = String::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(
            "Prometheus to have scraped the workload",
            Duration::from_secs(60),
            || {
                if TcpStream::connect_timeout(&prom_addr, Duration::from_millis(200)).is_err() {
                    return false;
                }
                answer = http(prom_addr, "GET", &query, None).1;
                answer.contains("\"status\":\"success\"")
                    && answer.contains(&format!("\"comm\":\"{}\"", w.comm))
            },
        );
    }));
    let _ = prom.kill();
    let _ = prom.wait();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    // The value is a positive count of voluntary switches.
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let value: f64 = v["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(value > 0.0, "{answer}");
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
    assert!(started.elapsed() < Duration::from_secs(60));
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
    for (k, v) in [("class", "in_kernel"), ("src", "file"), ("dst", "socket")] {
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

#[test]
fn zombies_gauge_and_fork_counters_follow_a_parent() {
    if !can_trace() {
        return;
    }
    const K: f64 = 3.0;
    let server = Server::start(&[]);
    let mut w = Workload::spawn("zombies:3");
    let comm = comm_of(w.pid());
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
    let (forks, exits, failures) = figures(&body);
    assert_eq!(forks - forks0, K, "processes forked");
    assert_eq!(exits - exits0, K, "children that died");
    assert_eq!(failures - failures0, K, "children that exited non-zero");
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
