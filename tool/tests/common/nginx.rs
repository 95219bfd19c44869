//! nginx (Debian's, installed by `cargo xtask setup`) with one worker serving one file of
//! known size on a free loopback port, for the tests that need a real server.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// nginx with one worker, serving `dir/f.bin` on a free loopback port, in the
/// foreground; stopped (and its files removed) on drop.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
    /// Whether it has been stopped (and reaped) already.
    stopped: bool,
}

impl Nginx {
    /// Starts it serving a file of `size` bytes; `None` (the test skipped) where nginx is
    /// not installed, but under CI, where that fails the test.
    pub fn start(sendfile: bool, size: u64) -> Option<Self> {
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
        let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
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
        let n = Self {
            child,
            dir,
            port,
            stopped: false,
        };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(n);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nginx did not listen on {port}");
    }

    /// The master's pid.
    pub fn master(&self) -> u32 {
        self.child.id()
    }

    /// The worker's pid (the master's only child).
    pub fn worker(&self) -> u32 {
        let master = self.child.id();
        children(master)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("nginx {master} has no worker"))
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Fetches the file; returns the body's length.
    pub fn fetch(&self) -> u64 {
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

impl Nginx {
    /// Stops it and waits until the master has exited (SIGTERM: the master stops its
    /// worker and exits; SIGKILL would orphan the worker). A worker left behind is killed.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let workers = children(self.child.id());
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
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The children of `pid`, from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect()
}
