//! `proclens serve`: a Prometheus/OpenMetrics exporter. A collector task folds every
//! interval into cumulative counters; `GET /metrics` encodes them with prometheus-client.
//! The HTTP side is built to be left running on a fleet: loopback by default, a bounded
//! number of connections, bounded request heads, and time limits on slow clients.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    net::SocketAddr,
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result};
use clap::Args;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

use super::{Filter, parse_interval, top};
use crate::{
    collect::{
        extras::Extras,
        procfs,
        session::{self, RowKinds, Snapshot},
        tracer::{Health, Tracer, TracerOptions},
    },
    model::{
        exporter::{
            ExporterState, ExtrasDelta, ForkDelta, KernelDrops, LabelledDelta, Labels, ProcDelta,
            SystemTotals, ZombieLabels,
        },
        switches::Key,
    },
    render::prometheus::{Format, Shared, exposition},
};

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub filter: Filter,
    /// Address to serve /metrics on. Loopback unless told otherwise: put anything wider
    /// behind a proxy that authenticates.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
    /// Seconds between collections from the kernel: the counters advance this often.
    /// Prometheus scrapes every 15 s or more as a rule; collecting every second costs the
    /// agent about 3x the CPU (BENCHMARKS.md) for resolution no scrape sees.
    #[arg(short = 'i', long, value_name = "SECS", default_value = "5", value_parser = parse_interval)]
    pub interval: f64,
    /// Label series with the pid too. One series set per process: on a busy host this
    /// multiplies Prometheus's series count (exited processes' series are dropped).
    #[arg(long)]
    pub per_pid: bool,
    /// Seconds after which the series of a label set (command and cgroup) none of whose
    /// processes is left are dropped from /metrics, so that finished jobs and containers
    /// do not accumulate series; 0 keeps them for as long as proclens runs.
    #[arg(long, value_name = "SECS", default_value = "600", value_parser = parse_expiry)]
    pub expire: f64,
    /// Connections served at once; further ones are closed immediately.
    #[arg(long, value_name = "N", default_value = "64", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_connections: u32,
    /// Also account bytes by copy path (proclens_copy_*): classic tracepoints on the
    /// read/write, send/recv, sendfile, splice, tee, copy_file_range and mmap syscalls,
    /// which cost every such call of every traced process a few hundred ns (see
    /// BENCHMARKS.md). Without tracefs or a usable syscall format, serve warns once and
    /// carries on without them.
    #[arg(long)]
    pub copies: bool,
}

fn parse_expiry(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds (0 or more)")),
    }
}

/// `--expire` in collections (`None`: never), at least one whole interval.
fn expiry_collections(expire_s: f64, interval_s: f64) -> Option<u64> {
    (expire_s > 0.0).then(|| (expire_s / interval_s).ceil().max(1.0) as u64)
}

/// Longest a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one connection may stay open.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head accepted (hyper's buffer).
const MAX_HEAD: usize = 16 * 1024;

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    if args.per_pid {
        eprintln!(
            "proclens: warning: --per-pid labels every series with a pid; expect many series on busy hosts"
        );
    }
    let (tracer, copies) = start(&args.filter, args.copies)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        eprintln!(
            "proclens: serving http://{}/metrics",
            listener.local_addr()?
        );
        let shared = Shared::default();
        let state = shared.clone();
        let mut labeller = Labeller::new(args.filter.clone(), args.per_pid);
        let expire_after = expiry_collections(args.expire, args.interval);
        let collector = session::periodic(
            tracer,
            RowKinds::Processes,
            top::top_extras(&args.filter),
            args.interval,
            None,
            move |snap| {
                let mut st = state
                    .0
                    .lock()
                    .map_err(|_| anyhow::anyhow!("exporter state poisoned"))?;
                labeller.fold(&snap, copies, &mut st);
                if let Some(n) = expire_after {
                    st.expire(n);
                }
                Ok(())
            },
        );
        tokio::select! {
            r = collector => r,
            r = serve_http(listener, shared, args.max_connections as usize) => r,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Loads and attaches the programs: switches, syscalls and the lifecycle as `top` does,
/// plus the copy programs when asked for. When those cannot be had (no tracefs, an
/// unexpected tracepoint format), one warning and the rest goes on without them.
fn start(filter: &Filter, copies: bool) -> Result<(Tracer, bool)> {
    if !copies {
        return Ok((top::start_with(filter, top::TOP_TRACING)?, false));
    }
    let with_copies = TracerOptions {
        copies: true,
        ..top::TOP_TRACING
    };
    match top::start_with(filter, with_copies) {
        Ok(t) => Ok((t, true)),
        Err(e) => {
            // Whatever also stops the plain tracer (privileges, a missing pid) is its error.
            let t = top::start_with(filter, top::TOP_TRACING)?;
            eprintln!(
                "proclens: warning: copy accounting unavailable, serving without proclens_copy_* metrics: {e:#}"
            );
            Ok((t, false))
        }
    }
}

/// Intervals between two reads of a live process's cgroup: a process rarely moves, and
/// reading /proc/PID/cgroup of every process every interval was the largest /proc cost of
/// serve (see BENCHMARKS.md). A process that moves takes at most this many intervals to
/// carry its new cgroup label.
const CGROUP_REFRESH: u64 = 30;

/// Cgroup labels by process: read when a process first shows up and every
/// [`CGROUP_REFRESH`] intervals while it lives, the last one kept once it is gone;
/// forgotten when a process is no longer among the rows.
#[derive(Debug, Default)]
struct CgroupCache {
    /// The cgroup and the interval it was read in.
    known: HashMap<Key, (String, u64)>,
    seen: HashSet<Key>,
    interval: u64,
}

impl CgroupCache {
    fn get(&mut self, key: Key, alive: bool) -> String {
        self.seen.insert(key);
        let now = self.interval;
        let stale = self
            .known
            .get(&key)
            .is_none_or(|(_, at)| now - at >= CGROUP_REFRESH);
        if alive
            && stale
            && let Some(c) = procfs::cgroup(key.tgid)
        {
            self.known.insert(key, (c.clone(), now));
            return c;
        }
        self.known
            .get(&key)
            .map_or_else(|| "?".into(), |(c, _)| c.clone())
    }

    fn end_interval(&mut self) {
        let seen = std::mem::take(&mut self.seen);
        self.known.retain(|k, _| seen.contains(k));
        self.interval += 1;
    }
}

/// Turns each interval's rows into labelled deltas for the exporter state: command and
/// cgroup (and pid with `--per-pid`), the same labels for every family of one process.
struct Labeller {
    filter: Filter,
    per_pid: bool,
    cgroups: CgroupCache,
    /// Labels of processes seen in the extras but not among the switch rows, by tgid.
    others: HashMap<u32, Labels>,
    /// This interval: processes looked up in `others`, and switch rows the filter left out.
    seen: HashSet<u32>,
    excluded: HashSet<u32>,
    me: u32,
}

impl Labeller {
    fn new(filter: Filter, per_pid: bool) -> Self {
        Self {
            filter,
            per_pid,
            cgroups: CgroupCache::default(),
            others: HashMap::new(),
            seen: HashSet::new(),
            excluded: HashSet::new(),
            me: std::process::id(),
        }
    }

    fn wanted(&self, tgid: u32, comm: &str) -> bool {
        (self.filter.pids.is_empty() || self.filter.pids.contains(&tgid))
            && self
                .filter
                .comm
                .as_ref()
                .is_none_or(|want| comm.contains(want.as_str()))
    }

    fn labels(&self, comm: &str, cgroup: String, tgid: u32) -> Labels {
        Labels {
            comm: stable_comm(comm),
            cgroup,
            pid: self.per_pid.then_some(tgid),
        }
    }

    /// Folds one snapshot into `st`.
    fn fold(&mut self, snap: &Snapshot, copies: bool, st: &mut ExporterState) {
        let (rows, excluded): (Vec<_>, Vec<_>) = snap
            .rows
            .iter()
            .partition(|(r, c)| top::selected(&self.filter, r, c));
        self.excluded = excluded.iter().map(|(r, _)| r.key.tgid).collect();
        let mut by_tgid: HashMap<u32, (Labels, bool)> = HashMap::with_capacity(rows.len());
        let switch_rows: Vec<_> = rows
            .iter()
            .map(|(r, comm)| {
                let cgroup = self.cgroups.get(r.key, r.alive);
                let labels = self.labels(comm, cgroup, r.key.tgid);
                by_tgid.insert(r.key.tgid, (labels.clone(), r.alive));
                LabelledDelta {
                    labels,
                    delta: &r.delta,
                    alive: r.alive,
                }
            })
            .collect();
        self.cgroups.end_interval();
        st.apply(
            switch_rows,
            SystemTotals {
                switches: snap.system.switches,
                same_process: snap.system.same_process,
                cross_process: snap.system.cross_process,
                idle_or_kernel: snap.system.idle_or_kernel,
            },
        );
        st.lost_events = snap.health.ringbuf_drops;
        st.untracked_threads = snap.health.thread_map_full;
        st.programs.clone_from(&snap.programs);
        self.seen.clear();
        let extras = self.extras(&snap.extras, &snap.health, copies, &by_tgid);
        st.apply_extras(extras);
        let seen = &self.seen;
        self.others.retain(|t, _| seen.contains(t));
    }

    /// The labels and liveness of `tgid`: from its switch row, else read from /proc
    /// (remembered while the process shows up), `None` when the filter leaves it out.
    fn process(
        &mut self,
        tgid: u32,
        comm_hint: Option<&str>,
        by_tgid: &HashMap<u32, (Labels, bool)>,
    ) -> Option<(Labels, bool)> {
        if let Some(l) = by_tgid.get(&tgid) {
            return Some(l.clone());
        }
        // proclens's own figures, like its switches, only with --include-self.
        if self.excluded.contains(&tgid) || (tgid == self.me && !self.filter.include_self) {
            return None;
        }
        self.seen.insert(tgid);
        let alive = procfs::exists(tgid);
        let labels = match self.others.get(&tgid) {
            Some(l) => l.clone(),
            None => {
                let comm = procfs::comm(tgid)
                    .or_else(|| comm_hint.map(str::to_string))
                    .unwrap_or_else(|| "?".into());
                let cgroup = procfs::cgroup(tgid).unwrap_or_else(|| "?".into());
                let l = self.labels(&comm, cgroup, tgid);
                self.others.insert(tgid, l.clone());
                l
            }
        };
        if !alive {
            self.others.remove(&tgid);
        }
        self.wanted(tgid, &labels.comm).then_some((labels, alive))
    }

    fn extras<'a>(
        &mut self,
        x: &'a Extras,
        health: &Health,
        copies: bool,
        by_tgid: &HashMap<u32, (Labels, bool)>,
    ) -> ExtrasDelta<'a> {
        let procs = x.procs.as_ref().map(|rows| {
            rows.iter()
                .filter(|r| !r.is_idle())
                .filter_map(|r| {
                    let (labels, alive) = self.process(r.tgid, None, by_tgid)?;
                    Some(ProcDelta {
                        labels,
                        syscalls: r.syscalls.delta,
                        paths: &r.copies.paths,
                        alive,
                    })
                })
                .collect()
        });
        let forks = x
            .forks
            .iter()
            .filter_map(|f| {
                let (labels, alive) = self.process(f.tgid, Some(&f.comm), by_tgid)?;
                Some(ForkDelta {
                    labels,
                    delta: f.delta,
                    alive,
                })
            })
            .collect();
        let zombies = x.zombies.as_ref().map(|zs| {
            zs.iter()
                .filter(|z| self.wanted(z.ppid, &z.parent_comm))
                .map(|z| ZombieLabels {
                    parent_comm: stable_comm(&z.parent_comm),
                    parent_pid: self.per_pid.then_some(z.ppid),
                })
                .collect()
        });
        ExtrasDelta {
            procs,
            copies,
            forks,
            zombies,
            drops: KernelDrops {
                ringbuf_full: health.ringbuf_drops,
                thread_map_full: health.thread_map_full,
                inflight_map_full: health.inflight_full,
                copy_map_full: health.copy_map_full,
                syscall_map_full: health.syscall_map_full,
            },
        }
    }
}

/// Accepts connections until the collector ends (signal).
async fn serve_http(listener: TcpListener, shared: Shared, max: usize) -> Result<()> {
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            // Out of file descriptors and the like: back off instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream); // over the limit: close at once
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, shared.clone()));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(slot);
        });
    }
}

fn response(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.parse().expect("valid header value"),
    );
    r
}

async fn handle(
    req: Request<Incoming>,
    shared: Shared,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let known = matches!(path, "/metrics" | "/healthz");
    Ok(match (req.method(), known) {
        (_, false) => response(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        (&Method::GET | &Method::HEAD, true) if path == "/healthz" => {
            response(StatusCode::OK, "text/plain", "ok\n")
        }
        (&Method::GET | &Method::HEAD, true) => {
            let format = Format::from_accept(
                req.headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok()),
            );
            match exposition(&shared, format) {
                Ok(text) => response(StatusCode::OK, format.content_type(), text),
                Err(_) => response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "encoding failed\n",
                ),
            }
        }
        (_, true) => {
            let mut r = response(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "method not allowed\n",
            );
            r.headers_mut().insert(
                header::ALLOW,
                "GET, HEAD".parse().expect("valid header value"),
            );
            r
        }
    })
}

/// Kernel workers rename themselves after the work they run (`kworker/1:1-events`):
/// keep only the worker's own name so label values do not churn.
fn stable_comm(comm: &str) -> String {
    match comm.strip_prefix("kworker/") {
        Some(rest) => format!("kworker/{}", rest.split('-').next().unwrap_or(rest)),
        None => comm.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_counted_in_whole_collections() {
        assert_eq!(expiry_collections(0.0, 5.0), None);
        assert_eq!(expiry_collections(600.0, 5.0), Some(120));
        assert_eq!(expiry_collections(7.0, 5.0), Some(2));
        assert_eq!(expiry_collections(1.0, 5.0), Some(1));
        assert!(parse_expiry("-1").is_err() && parse_expiry("inf").is_err());
        assert_eq!(parse_expiry("0"), Ok(0.0));
    }

    #[test]
    fn cgroups_are_read_once_per_refresh_and_forgotten_with_the_row() {
        let me = std::process::id();
        let key = Key {
            id: me,
            tgid: me,
            start_ns: 1,
        };
        let mut c = CgroupCache::default();
        let first = c.get(key, true);
        assert_eq!(Some(first.clone()), procfs::cgroup(me));
        c.known.get_mut(&key).unwrap().0 = "/cached".into();
        c.end_interval();
        assert_eq!(
            c.get(key, true),
            "/cached",
            "not re-read before the refresh"
        );
        for _ in 0..CGROUP_REFRESH {
            c.get(key, false);
            c.end_interval();
        }
        assert_eq!(
            c.get(key, false),
            "/cached",
            "a gone process keeps its last"
        );
        assert_eq!(
            c.get(key, true),
            first,
            "re-read after CGROUP_REFRESH intervals"
        );
        c.end_interval();
        c.end_interval();
        assert!(c.known.is_empty(), "forgotten once not among the rows");
    }

    #[test]
    fn kworker_names_are_stable() {
        assert_eq!(stable_comm("kworker/1:1-events_freezable"), "kworker/1:1");
        assert_eq!(stable_comm("kworker/u8:2"), "kworker/u8:2");
        assert_eq!(stable_comm("nginx-worker"), "nginx-worker");
    }
}
