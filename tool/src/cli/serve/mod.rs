//! `proclens serve`: a Prometheus/OpenMetrics exporter. A collector task folds every
//! interval into cumulative counters; `GET /metrics` encodes them with prometheus-client.
//! The HTTP side is built to be left running on a fleet: loopback by default, a bounded
//! number of connections, bounded request heads, and time limits on slow clients.

mod http;
mod labels;

use std::{net::SocketAddr, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::Args;
use tokio::net::TcpListener;

use super::{Filter, parse_interval, top};
use crate::{
    collect::{
        copies::Want,
        session::{self, RowKinds},
        tracer::{Tracer, TracerOptions},
    },
    render::prometheus::Shared,
};
use labels::Labeller;

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
            r = http::serve_http(listener, shared, args.max_connections as usize) => r,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Loads and attaches the programs: switches, syscalls and the lifecycle as `top` does,
/// plus the copy programs when asked for. When those cannot be had (no tracefs, an
/// unexpected tracepoint format), one warning and the rest goes on without them.
fn start(filter: &Filter, copies: bool) -> Result<(Tracer, bool)> {
    let tracer = filter.start(TracerOptions {
        copies: if copies { Want::IfAvailable } else { Want::Off },
        ..top::top_tracing()
    })?;
    let on = tracer.copies_on();
    Ok((tracer, on))
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
}
