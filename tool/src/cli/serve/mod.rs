//! `proclens serve`: a Prometheus/OpenMetrics exporter. A collector task folds every
//! interval into cumulative counters; `GET /metrics` encodes them with prometheus-client.
//! The HTTP side is built to be left running on a fleet: loopback by default, a bounded
//! number of connections in all and per client address, bounded request heads, and time
//! limits on slow clients.

mod attribution;
mod host;
mod http;
mod labels;

use std::{net::SocketAddr, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::Args;
use tokio::net::TcpListener;

use super::{Filter, parse_interval};
use crate::{
    collect::{
        copies::Want,
        session::{self, RowKinds},
        tracer::{Tracer, TracerOptions},
    },
    model::exporter::ExporterState,
    render::prometheus::Shared,
};
use attribution::{Attributor, LabelGroup};
use labels::Labeller;

#[derive(Args, Debug)]
#[allow(
    clippy::doc_markdown,
    reason = "the doc comments are the --help text, printed as written"
)]
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
    /// Labels of the per-process series, comma-separated: `comm`; `cgroup` (the raw cgroup
    /// v2 path); `unit` (`systemd_unit`: the innermost systemd unit, off Kubernetes);
    /// `pod` (`k8s_namespace`, `k8s_pod_name`, `k8s_pod_uid`, `k8s_container_name`,
    /// `container_id`: the pod uid and container id from the cgroup path, for the
    /// systemd and cgroupfs drivers and containerd, CRI-O, Docker and podman, the names
    /// from the kubelet's log directories); `container` (`container_id` alone). The
    /// attribution labels follow the cgroup, so they add no series beyond it; leaving
    /// `cgroup` out (`comm,pod`) keeps fewer.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "comm,cgroup"
    )]
    pub labels: Vec<LabelGroup>,
    /// The kubelet's pod log directory (`<namespace>_<pod>_<uid>/`), which names the pods
    /// for `--labels pod`; container names come from the `containers` directory beside
    /// it (`<pod>_<namespace>_<container>-<id>.log`). Mount both read-only in a container.
    #[arg(long, value_name = "DIR", default_value = "/var/log/pods")]
    pub pod_log_dir: std::path::PathBuf,
    /// The most series /metrics shows, every family counted. Whoever names a process
    /// chooses its command label: label sets that would go past the cap fold into
    /// `comm="other"` (keeping their other labels while those fit, else every label
    /// `other`), counted by proclens_folded_label_sets_total. The default holds ~200
    /// label sets that block in three syscalls each: twice what a busy node shows.
    #[arg(long, value_name = "N", default_value = "10000", value_parser = clap::value_parser!(u64).range(1000..=100_000_000))]
    pub max_series: u64,
    /// Connections served at once; further ones are closed immediately.
    #[arg(long, value_name = "N", default_value = "64", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_connections: u32,
    /// Connections served at once to one client address, so that one client cannot take
    /// every connection from the scrapers (a Prometheus holds one per target).
    #[arg(long, value_name = "N", default_value = "4", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_connections_per_peer: u32,
    /// Also account bytes by copy path (proclens_copy_*): the read/write, send/recv,
    /// sendfile, splice, tee, copy_file_range and mmap families, dispatched by syscall
    /// number in the sys_exit program, which costs every such call of every traced
    /// process a few hundred ns (see BENCHMARKS.md). Where the kernel lacks what
    /// they need, serve warns once and carries on without them.
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
        *shared
            .state
            .lock()
            .map_err(|_| anyhow::anyhow!("exporter state poisoned"))? =
            ExporterState::with_max_series(args.max_series as usize);
        let state = shared.clone();
        let attributor = Attributor::new(&args.labels, args.pod_log_dir.clone());
        let mut labeller = Labeller::new(args.filter.clone(), args.per_pid, attributor);
        let expire_after = expiry_collections(args.expire, args.interval);
        let collector = session::periodic(
            tracer,
            RowKinds::Processes,
            super::table_extras(&args.filter),
            args.interval,
            None,
            move |snap| {
                let host = host::gauges(&snap.extras);
                let mut st = state
                    .state
                    .lock()
                    .map_err(|_| anyhow::anyhow!("exporter state poisoned"))?;
                labeller.fold(&snap, copies, &mut st);
                st.host = host;
                let table = snap.extras.table.unwrap_or_default();
                st.tracked_processes = table.tracked as u64;
                st.table_repairs = table.repairs;
                if let Some(n) = expire_after {
                    st.expire(n);
                }
                Ok(())
            },
        );
        tokio::select! {
            r = collector => r,
            r = http::serve_http(listener, shared, http::Limits {
                connections: args.max_connections as usize,
                per_peer: args.max_connections_per_peer as usize,
            }) => r,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Loads and attaches the programs: switches, syscalls and the lifecycle as `top` does,
/// blocked time by syscall, plus the copy programs when asked for. When the blocked time
/// or the copy programs cannot be had (a kernel without what they read), one warning and
/// the rest goes on without them.
fn start(filter: &Filter, copies: bool) -> Result<(Tracer, bool)> {
    let tracer = filter.start(TracerOptions {
        copies: if copies { Want::IfAvailable } else { Want::Off },
        waits: Want::IfAvailable,
        // Only the blocked time is exported: no readiness programs (and no
        // perf_event_open, which the systemd unit's filter refuses).
        no_readiness: true,
        ..super::table_tracing()
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

    #[test]
    fn labels_and_limits_parse() {
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from([
            "proclens",
            "serve",
            "--labels",
            "comm,cgroup,unit,pod",
            "--max-series",
            "5000",
        ])
        .unwrap();
        let crate::cli::Command::Serve(a) = cli.command else {
            panic!("not serve")
        };
        use LabelGroup::*;
        assert_eq!(a.labels, [Comm, Cgroup, Unit, Pod]);
        assert_eq!((a.max_series, a.max_connections_per_peer), (5000, 4));
        for bad in [
            &["proclens", "serve", "--labels", "comm,nope"][..],
            &["proclens", "serve", "--max-series", "10"],
            &["proclens", "serve", "--max-connections-per-peer", "0"],
        ] {
            let e = crate::cli::Cli::try_parse_from(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }
}
