//! `proclens serve` as the exporter tests drive it: the server, HTTP requests, the
//! exposition's samples, named workloads, and a real Prometheus scraping it.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use std::os::unix::process::CommandExt as _;

use super::PROCLENS;

/// A running `proclens serve` and the address it listens on.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// What it printed before it served.
    pub early: String,
}

impl Server {
    /// `proclens serve` on a free loopback port, collecting every 0.3 s, with `extra`.
    pub fn start(extra: &[&str]) -> Self {
        Self::with_args(&[&["--interval", "0.3"], extra].concat())
    }

    /// `proclens serve` on a free loopback port with `args` (its interval included).
    pub fn with_args(args: &[&str]) -> Self {
        let child = Command::new(PROCLENS)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self::from_child(child)
    }

    /// A started `serve` (stderr piped): waits for the line naming its address; what it
    /// printed before (warnings, notes) is in `early`.
    pub fn from_child(mut child: Child) -> Self {
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut early = String::new();
        let addr = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                let st = child.wait().unwrap();
                panic!("proclens serve exited ({st}) before serving: {early}");
            }
            if let Some(a) = line
                .trim()
                .strip_prefix("proclens: serving http://")
                .and_then(|r| r.strip_suffix("/metrics"))
            {
                break a.parse().unwrap();
            }
            early.push_str(&line);
        };
        // Keep draining stderr so proclens never blocks on it.
        thread::spawn(move || for _ in stderr.lines() {});
        Self { child, addr, early }
    }

    pub fn rss_kib(&self) -> u64 {
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
        // Unless the test ended it itself.
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.0 request; returns (status, body).
pub fn try_http(
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

pub fn http(addr: SocketAddr, method: &str, path: &str, accept: Option<&str>) -> (u16, String) {
    try_http(addr, method, path, accept).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The body of `GET /metrics`, which must answer 200.
pub fn scrape(addr: SocketAddr) -> String {
    let (status, body) = http(addr, "GET", "/metrics", None);
    assert_eq!(status, 200, "GET /metrics: {body}");
    body
}

/// A workload with a name of its own: a shell loop running `sleep` under another name.
pub struct Named {
    pub child: Child,
    pub comm: String,
    link: PathBuf,
}

impl Named {
    pub fn start() -> Self {
        let comm = format!("plw{}", std::process::id() % 100_000);
        Self::run(&comm, "/bin/sleep", |link| {
            format!("while :; do {link} 0.01; done")
        })
    }

    /// `program` run under the name `comm` (a symlink to it), by the shell line `script`
    /// makes from the link's path.
    pub fn run(comm: &str, program: &str, script: impl FnOnce(&str) -> String) -> Self {
        let link = std::env::temp_dir().join(comm);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(program, &link).unwrap();
        let child = Command::new("sh")
            .args(["-c", &script(&link.to_string_lossy())])
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        Self {
            child,
            comm: comm.to_string(),
            link,
        }
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        // The whole process group: the shell and whatever it started.
        // SAFETY: signalling the group this test made.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.link);
    }
}

/// The `k="v"` pairs of a sample's label block (text after `{`), and the rest of the line.
pub fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
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
pub fn samples(body: &str, name: &str, want: &[(&str, &str)]) -> Vec<(Vec<(String, String)>, f64)> {
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
pub fn sample_sum(body: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    samples(body, name, want).iter().map(|(_, v)| v).sum()
}

pub fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap()
        .trim_end()
        .to_string()
}

pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(200));
    }
}

/// A free TCP port on the loopback address.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A real Prometheus server scraping `targets` every second, in a throwaway directory;
/// killed on drop.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    pub fn start(targets: &[SocketAddr]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "proclens-prom-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: proclens\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (cargo xtask setup installs it)");
        let p = Self { child, addr, dir };
        wait_for("Prometheus to listen", Duration::from_secs(30), || {
            TcpStream::connect_timeout(&p.addr, Duration::from_millis(200)).is_ok()
        });
        p
    }

    /// The `data` of an instant query, evaluated now; panics unless it succeeds.
    pub fn query(&self, promql: &str) -> serde_json::Value {
        let (status, body) = http(
            self.addr,
            "GET",
            &format!("/api/v1/query?query={}", url_encode(promql)),
            None,
        );
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{promql}: {e}: {status} {body}"));
        assert_eq!(v["status"], "success", "{promql}: {body}");
        v["data"].clone()
    }

    /// The samples of an instant query: (labels, value).
    pub fn vector(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        self.query(promql)["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let v = r["value"][1].as_str().unwrap();
                let v = match v {
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    v => v.parse().unwrap(),
                };
                (r["metric"].clone(), v)
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
