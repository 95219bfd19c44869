//! Issue 18: what a fleet's Prometheus computes from `serve`. PromQL's
//! `histogram_quantile(0.99, ...)` over the run-queue histogram of a workload with known
//! run-queue waits (two CPU hogs pinned to one CPU) lands within one log2 bucket of
//! bpftrace's p99 bucket (runqlat's rule) and of the p99 `proclens latency` prints for the
//! same window, every bucket series is cumulative
//! and ends with `+Inf` = `_count`; and every query of deploy/grafana-dashboard.json
//! returns data.
mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use common::{
    Proclens,
    bpftrace::{Bpftrace, hist},
    can_trace,
    exporter::{Named, Prometheus, Server, wait_for},
    workload::Workload,
};

workload_entry!();

/// Two busy loops named `comm`, both on CPU 1: each waits while the other runs.
fn hogs(comm: &str) -> Named {
    Named::run(comm, "/bin/sh", |link| {
        let spin = format!("{link} -c 'while :; do :; done'");
        format!("taskset -c 1 sh -c \"{spin} & {spin} & wait\"")
    })
}

fn le(labels: &serde_json::Value) -> f64 {
    match labels["le"].as_str().unwrap() {
        "+Inf" => f64::INFINITY,
        v => v.parse().unwrap(),
    }
}

#[test]
fn promql_p99_is_within_a_log2_bucket_of_bpftrace_and_proclens_latency() {
    if !can_trace() {
        return;
    }
    let comm = format!("plhog{}", std::process::id() % 100_000);
    let _hogs = hogs(&comm);
    let server = Server::start(&[]);
    let prom = Prometheus::start(&[server.addr]);
    let bucket = format!("proclens_runqueue_latency_seconds_bucket{{comm=\"{comm}\"}}");
    wait_for(
        "Prometheus to have the hogs' histogram",
        Duration::from_secs(30),
        || !prom.vector(&bucket).is_empty(),
    );
    // bpftrace's run-queue latency of the hogs (runqlat's rule: from a wakeup, or a
    // switch that leaves the task runnable, to its next switch in; the tracepoint gives
    // a preempted task TASK_REPORT_MAX, 0x100, and one that yielded 0), proclens latency
    // over the next 10 s, and Prometheus's view of the same 10 s.
    let bt = Bpftrace::start(&format!(
        "tracepoint:sched:sched_wakeup,tracepoint:sched:sched_wakeup_new /args->comm == \"{comm}\"/ \
         {{ @queued[args->pid] = nsecs; }} \
         tracepoint:sched:sched_switch /args->prev_comm == \"{comm}\" && (args->prev_state & 0xff) == 0/ \
         {{ @queued[args->prev_pid] = nsecs; }} \
         tracepoint:sched:sched_switch /@queued[args->next_pid]/ \
         {{ @ns = hist(nsecs - @queued[args->next_pid]); delete(@queued[args->next_pid]); }} \
         END {{ clear(@queued); }}"
    ));
    const WINDOW: u64 = 10;
    let latency = Proclens::spawn(&[
        "latency",
        "--comm",
        &comm,
        "--json",
        "--interval",
        &WINDOW.to_string(),
        "--count",
        "1",
    ]);
    let report = latency.json_until(Duration::from_secs(WINDOW + 20), |v| v["type"] == "latency");
    let ended = Instant::now();
    let anchor = hist(&bt.stop(), "ns");
    let p99_us = report["p99_us"].as_f64().unwrap();
    assert!(report["count"].as_u64().unwrap() > 100, "{report}");
    // Let Prometheus scrape a collection made after the report.
    std::thread::sleep(Duration::from_millis(2500));
    let range = WINDOW + ended.elapsed().as_secs();
    let q = format!("histogram_quantile(0.99, sum by (le) (increase({bucket}[{range}s])))");
    let v = prom.vector(&q);
    assert_eq!(v.len(), 1, "{q}: {v:?}");
    let promql_us = v[0].1 * 1e6;
    assert!(
        promql_us.is_finite() && promql_us > 0.0,
        "{q} = {promql_us}"
    );
    // bpftrace's p99 is in the log2 bucket where its count passes 99%: PromQL's
    // estimate (interpolated in proclens's own log2 buckets) is within one bucket of it.
    let total: u64 = anchor.iter().map(|b| b.1).sum();
    assert!(total > 100, "bpftrace saw {total} waits: {anchor:?}");
    let mut seen = 0;
    let low_ns = anchor
        .iter()
        .find(|b| {
            seen += b.1;
            seen * 100 >= total * 99
        })
        .unwrap()
        .0;
    let (low_us, high_us) = (low_ns as f64 / 1e3, (low_ns.max(1) * 2) as f64 / 1e3);
    eprintln!(
        "run-queue p99: PromQL {promql_us:.0} us, proclens latency {p99_us} us, bpftrace [{low_us}, {high_us}) us of {total} waits"
    );
    assert!(
        promql_us >= low_us / 2.0 && promql_us <= high_us * 2.0,
        "PromQL p99 {promql_us:.0} us, bpftrace's p99 bucket [{low_us}, {high_us}) us"
    );
    let apart = (promql_us.log2() - p99_us.log2()).abs();
    assert!(
        apart <= 1.0,
        "PromQL p99 {promql_us:.0} us, proclens latency p99 {p99_us} us: {apart:.2} log2 buckets apart"
    );
    // The buckets and _count of one evaluation: cumulative, ending in +Inf = _count.
    let both = prom.vector(&format!(
        "{bucket} or proclens_runqueue_latency_seconds_count{{comm=\"{comm}\"}}"
    ));
    let count = both
        .iter()
        .find(|(l, _)| l["__name__"] == "proclens_runqueue_latency_seconds_count")
        .unwrap()
        .1;
    let mut buckets: Vec<(f64, f64)> = both
        .iter()
        .filter(|(l, _)| l["__name__"] == "proclens_runqueue_latency_seconds_bucket")
        .map(|(l, v)| (le(l), *v))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(buckets.len(), 27, "{buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "not cumulative: {buckets:?}"
    );
    let last = buckets.last().unwrap();
    assert_eq!(last.0, f64::INFINITY);
    assert_eq!(last.1, count, "+Inf bucket = _count");
}

/// The dashboard's queries with its variables set as Grafana would for this Prometheus.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana-dashboard.json");
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "job", "instance"]);
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "10s")
                .replace("$job", "proclens")
                .replace("$instance", ".*");
            assert!(!expr.contains('$'), "unknown variable in {expr}");
            out.push((p["title"].as_str().unwrap().to_string(), expr));
        }
    }
    out
}

#[test]
fn every_dashboard_query_returns_data_for_a_known_workload() {
    if !can_trace() {
        return;
    }
    let queries = dashboard_queries();
    let titles: std::collections::BTreeSet<&str> =
        queries.iter().map(|(t, _)| t.as_str()).collect();
    for want in [
        "Switches per second, busiest commands",
        "Address-space share of switches",
        "Run-queue latency p99, busiest commands",
        "Zombies by parent",
        "Bytes per second by copy path",
        "proclens CPU",
    ] {
        assert!(titles.contains(want), "no panel {want:?}");
    }
    let comm = format!("pldash{}", std::process::id() % 100_000);
    let _hogs = hogs(&comm);
    let mut zombies = Workload::spawn("zombies:3");
    zombies.go();
    // The copy-path panels need bytes moved while serve runs: one sendfile into a socket.
    let mut copies = Workload::spawn("copy-sendfile:1048576");
    let server = Server::start(&["--copies", "--labels", "comm,cgroup,unit,pod"]);
    let prom = Prometheus::start(&[server.addr]);
    copies.go();
    // Enough scrapes for every rate window.
    std::thread::sleep(Duration::from_secs(14));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let empty: Vec<_> = queries
            .iter()
            .filter(|(_, q)| prom.vector(q).is_empty())
            .collect();
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "panels without data after 30 s: {empty:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The run-queue panels give finite figures for the hogs.
    let p99 = prom.vector(&format!(
        "histogram_quantile(0.99, sum by (le, comm) (rate(proclens_runqueue_latency_seconds_bucket{{comm=\"{comm}\"}}[10s])))"
    ));
    assert!(p99[0].1.is_finite() && p99[0].1 > 0.0, "{p99:?}");
    zombies.go();
}
