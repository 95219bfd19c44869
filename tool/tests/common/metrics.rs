//! Reading a running `proclens serve` from outside: its address from its first line on
//! stderr, and `/metrics` fetched over plain HTTP and parsed as Prometheus text.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A running `proclens serve`, stopped when dropped (also when a test fails).
pub struct Serve {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `proclens serve ARGS` on an ephemeral loopback port.
pub fn serve(args: &[&str]) -> Serve {
    let mut child = Command::new(super::PROCLENS)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    // Its address, after any notes (5.10's on the privileges it keeps).
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "serve ended early"
        );
        if let Some(addr) = line
            .trim()
            .strip_prefix("proclens: serving http://")
            .and_then(|r| r.strip_suffix("/metrics"))
        {
            break addr.parse().unwrap();
        }
        assert!(
            line.starts_with("proclens: note: "),
            "unexpected line from serve: {line:?}"
        );
    };
    // Keep draining stderr so proclens never blocks on it.
    std::thread::spawn(move || for _ in stderr.lines() {});
    Serve { child, addr }
}

/// The body of `GET /metrics`.
pub fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: proclens\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    body.to_string()
}

/// The sum of the samples of metric `name` whose labels include every `(label, value)`.
pub fn sum(body: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            (metric == name
                && want
                    .iter()
                    .all(|(k, v)| labels.split(',').any(|kv| kv == format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}
