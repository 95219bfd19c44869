//! `proclens serve`: a Prometheus/OpenMetrics exporter. A collector task folds every
//! interval into cumulative counters; `GET /metrics` encodes them with prometheus-client.
//! The HTTP side is built to be left running on a fleet: loopback by default, a bounded
//! number of connections, bounded request heads, and time limits on slow clients.

use std::{convert::Infallible, net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

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
        procfs::{self, NameCache},
        session::{self, RowKinds},
    },
    model::{
        exporter::{LabelledDelta, Labels, SystemTotals},
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
    /// Seconds between collections from the kernel.
    #[arg(short = 'i', long, value_name = "SECS", default_value = "1", value_parser = parse_interval)]
    pub interval: f64,
    /// Label series with the pid too. One series set per process: on a busy host this
    /// multiplies Prometheus's series count (exited processes' series are dropped).
    #[arg(long)]
    pub per_pid: bool,
    /// Connections served at once; further ones are closed immediately.
    #[arg(long, value_name = "N", default_value = "64", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_connections: u32,
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
    let tracer = top::start(&args.filter)?;
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
        let mut cgroups: NameCache<Key> = NameCache::reading(procfs::cgroup);
        let filter = args.filter.clone();
        let per_pid = args.per_pid;
        let collector = session::periodic(
            tracer,
            RowKinds::Processes,
            Default::default(),
            args.interval,
            None,
            move |snap| {
                let rows: Vec<_> = snap
                    .rows
                    .iter()
                    .filter(|(r, c)| top::selected(&filter, r, c))
                    .collect();
                let cgroup_of: Vec<String> = rows
                    .iter()
                    .map(|(r, _)| cgroups.get(r.key, r.key.id, r.alive, None))
                    .collect();
                cgroups.retain(|k| rows.iter().any(|(r, _)| r.key == *k));
                let mut st = state
                    .0
                    .lock()
                    .map_err(|_| anyhow::anyhow!("exporter state poisoned"))?;
                st.apply(
                    rows.iter()
                        .zip(cgroup_of)
                        .map(|((r, comm), cgroup)| LabelledDelta {
                            labels: Labels {
                                comm: stable_comm(comm),
                                cgroup,
                                pid: per_pid.then_some(r.key.tgid),
                            },
                            delta: &r.delta,
                            alive: r.alive,
                        }),
                    SystemTotals {
                        switches: snap.system.switches,
                        same_process: snap.system.same_process,
                        cross_process: snap.system.cross_process,
                        idle_or_kernel: snap.system.idle_or_kernel,
                    },
                );
                st.lost_events = snap.health.ringbuf_drops;
                st.untracked_threads = snap.health.thread_map_full;
                st.programs = snap.programs;
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
    fn kworker_names_are_stable() {
        assert_eq!(stable_comm("kworker/1:1-events_freezable"), "kworker/1:1");
        assert_eq!(stable_comm("kworker/u8:2"), "kworker/u8:2");
        assert_eq!(stable_comm("nginx-worker"), "nginx-worker");
    }
}
