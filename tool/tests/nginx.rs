//! Real BPF against a real file server: nginx (Debian's, installed by `cargo xtask setup`)
//! serves a file of known size a known number of times. With `sendfile off` it reads
//! the file into user memory and writes it to the socket: exactly those bytes are what
//! sendfile would save (its headers are not file data). With `sendfile on` the same bytes
//! go by sendfile, page references with no copy, and there is nothing left to save.
mod common;

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{Proclens, can_trace};
use serde_json::Value;

/// The file's size: not a multiple of nginx's 32 KiB buffers.
const SIZE: u64 = (1 << 20) + 123;
const FETCHES: u64 = 20;

/// nginx with one worker, serving `dir/f.bin` on a free loopback port, in the
/// foreground; stopped (and its files removed) on drop.
struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    fn start(sendfile: bool) -> Option<Self> {
        if !Path::new("/usr/sbin/nginx").exists() {
            let why = "nginx is not installed (cargo xtask setup)";
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
                "{why}"
            );
            eprintln!("skipped: {why}");
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("proclens-nginx-{}-{sendfile}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("www")).unwrap();
        let body: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join("www/f.bin"), body).unwrap();
        // The worker (www-data) must reach the file.
        for p in [&dir, &dir.join("www")] {
            std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        std::fs::set_permissions(
            dir.join("www/f.bin"),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; sendfile {}; tcp_nopush off;\n\
             client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
             uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
             server {{ listen 127.0.0.1:{port}; root {d}/www; }} }}\n",
            if sendfile { "on" } else { "off" }
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("/usr/sbin/nginx")
            .args(["-g", "daemon off;", "-p"])
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let n = Self { child, dir, port };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(n);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nginx did not listen on {port}");
    }

    /// The worker's pid (the master's only child).
    fn worker(&self) -> u32 {
        let master = self.child.id();
        common_children(master)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("nginx {master} has no worker"))
    }

    /// Fetches the file; returns the body's length.
    fn fetch(&self) -> u64 {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.write_all(b"GET /f.bin HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let head = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(
            all.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&all[..head])
        );
        (all.len() - head) as u64
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its worker and exits (SIGKILL would orphan the
        // worker).
        let workers = common_children(self.child.id());
        // SAFETY: signals to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for w in workers {
            if Path::new(&format!("/proc/{w}")).exists() {
                // SAFETY: the worker of our own nginx, left behind.
                unsafe { libc::kill(w as i32, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The children of `pid`, from /proc.
fn common_children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect()
}

/// Serves the file `FETCHES` times under `proclens copies -p WORKER`; the worker's report
/// after the last fetch.
fn serve_traced(n: &Nginx) -> Value {
    let worker = n.worker();
    let p = Proclens::spawn(&[
        "copies",
        "--json",
        "--interval",
        "0.3",
        "-p",
        &worker.to_string(),
    ]);
    p.json_until(Duration::from_secs(30), |v| {
        v["type"] == "copies" && v["pid"] == worker
    });
    for _ in 0..FETCHES {
        assert_eq!(n.fetch(), SIZE);
    }
    let after = common::now_unix();
    p.json_until(Duration::from_secs(15), |v| {
        v["type"] == "copies" && v["pid"] == worker && v["time"].as_f64().unwrap() > after
    })
}

#[test]
fn nginx_sendfile_off_would_save_exactly_its_file_bytes() {
    if !can_trace() {
        return;
    }
    let Some(n) = Nginx::start(false) else { return };
    let v = serve_traced(&n);
    let s = &v["sendfile_would_save_total"];
    assert_eq!(s["eligible_bytes"], FETCHES * SIZE, "{v}");
    assert_eq!(s["cpu_copy_bytes"], 2 * FETCHES * SIZE, "{v}");
    // The file went out through user memory: read from the file, written to the socket
    // with its headers.
    let sent: u64 = v["paths"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|p| p["fds"]["user->socket"]["bytes_total"].as_u64())
        .sum();
    assert!(sent > FETCHES * SIZE, "{v}");
    assert_eq!(v["zero_copy_bytes_total"], 0);
}

#[test]
fn nginx_sendfile_on_moves_the_file_without_a_copy_and_saves_nothing() {
    if !can_trace() {
        return;
    }
    let Some(n) = Nginx::start(true) else { return };
    let v = serve_traced(&n);
    assert_eq!(
        v["paths"]["sendfile"]["fds"]["file->socket"]["bytes_total"],
        FETCHES * SIZE,
        "{v}"
    );
    assert_eq!(v["paths"]["sendfile"]["class"], "zero_copy");
    assert_eq!(v["sendfile_would_save_total"]["eligible_bytes"], 0, "{v}");
}
