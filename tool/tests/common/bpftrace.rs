//! bpftrace as an anchor beside proclens on the same run: a script's maps, printed when
//! it is stopped, parsed.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

pub struct Bpftrace {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// What it said on stderr (but the memlock warning it prints everywhere here).
    errors: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Bpftrace {
    /// Starts `script` and returns once its probes are attached.
    pub fn start(script: &str) -> Self {
        let mut child = Command::new("bpftrace")
            .args(["-e", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bpftrace (cargo xtask setup installs it)");
        // Its errors (a program the verifier refused) come after "Attaching": kept, and
        // checked when it stops.
        let err = BufReader::new(child.stderr.take().unwrap());
        let errors = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let kept = errors.clone();
        std::thread::spawn(move || {
            for l in err.lines().map_while(Result::ok) {
                if !l.contains("RLIMIT_MEMLOCK") {
                    kept.lock().unwrap().push_str(&l);
                }
            }
        });
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_mins(1))
            .expect("bpftrace said nothing within 60 s");
        assert!(first.starts_with("Attaching"), "bpftrace: {first}");
        Self {
            child,
            lines,
            errors,
        }
    }

    /// Waits until it prints the line `want` (a `BEGIN { printf(...) }` runs once every
    /// probe is attached: "Attaching" comes before).
    pub fn wait_for(&self, want: &str) {
        let deadline = std::time::Instant::now() + Duration::from_mins(1);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l == want => return,
                Ok(_) => {}
                Err(e) => panic!(
                    "bpftrace did not print {want:?}: {e}; {}",
                    self.errors.lock().unwrap()
                ),
            }
        }
    }

    /// Stops it (SIGINT: it prints its maps) and returns what it printed.
    pub fn stop(mut self) -> String {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let st = super::wait_within(&mut self.child, super::COMMAND_LIMIT, "bpftrace");
        let errors = self.errors.lock().unwrap().clone();
        assert!(
            st.success() && errors.is_empty(),
            "bpftrace: {st}: {errors}"
        );
        let mut out = String::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(1)) {
            out.push_str(&l);
            out.push('\n');
        }
        out
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The entries of map `@name` keyed by two integers (`@name[a, b]: n`).
pub fn pairs(out: &str, name: &str) -> HashMap<(u64, u64), u64> {
    let prefix = format!("@{name}[");
    out.lines()
        .filter_map(|l| {
            let (key, n) = l.strip_prefix(&prefix)?.split_once("]: ")?;
            let (a, b) = key.split_once(", ")?;
            Some(((a.parse().ok()?, b.parse().ok()?), n.trim().parse().ok()?))
        })
        .collect()
}

/// The entries of map `@name` keyed by one integer (`@name[a]: n`).
pub fn by_key(out: &str, name: &str) -> HashMap<u64, u64> {
    let prefix = format!("@{name}[");
    out.lines()
        .filter_map(|l| {
            let (key, n) = l.strip_prefix(&prefix)?.split_once("]: ")?;
            Some((key.parse().ok()?, n.trim().parse().ok()?))
        })
        .collect()
}

/// The value of count map `@name` (0 when it was never written, as bpftrace prints none).
pub fn count(out: &str, name: &str) -> u64 {
    let prefix = format!("@{name}: ");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The buckets of log2 histogram `@name` (`hist()`), as (low bound, count), lowest first.
/// Bounds print as `[0]`, `[1]`, `[2, 4)`, `[4K, 8K)`, `[1M, 2M)` (powers of 1024).
pub fn hist(out: &str, name: &str) -> Vec<(u64, u64)> {
    let bound = |s: &str| -> Option<u64> {
        let s = s.trim();
        let (digits, scale) = match s.chars().last()? {
            'K' => (&s[..s.len() - 1], 1 << 10),
            'M' => (&s[..s.len() - 1], 1 << 20),
            'G' => (&s[..s.len() - 1], 1 << 30),
            _ => (s, 1),
        };
        Some(digits.parse::<u64>().ok()? * scale)
    };
    out.lines()
        .skip_while(|l| !l.starts_with(&format!("@{name}:")))
        .skip(1)
        .map_while(|l| {
            let rest = l.strip_prefix('[')?;
            let (range, tail) = rest.split_once([')', ']'])?;
            let low = bound(range.split(',').next()?)?;
            let n = tail.split_whitespace().next()?.parse().ok()?;
            Some((low, n))
        })
        .collect()
}
