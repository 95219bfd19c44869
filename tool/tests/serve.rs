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

use common::{PROCLENS, can_trace};

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
    let server = Server::start(&[]);
    let w = Named::start();
    let needle = format!("proclens_context_switches_total{{comm=\"{}\"", w.comm);
    let mut body = String::new();
    wait_for("the workload in /metrics", Duration::from_secs(10), || {
        body = http(server.addr, "GET", "/metrics", None).1;
        body.lines()
            .any(|l| l.starts_with(&needle) && l.contains("voluntary") && !l.ends_with(" 0"))
    });
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
