//! Issue 18: label sets were unbounded — whoever names a process chooses `comm`, and each
//! new name added ~35 series kept for 600 s. 5,000 processes with distinct names give at
//! most `--max-series` series, the rest folded into `comm="other"`, and the folded
//! counter says how many label sets that took (computed by the test from the names
//! /metrics does show).
mod common;

use std::{collections::BTreeSet, time::Duration};

use proclens_xtask::idle::Idle;

use common::{
    can_trace,
    exporter::{Server, http, samples, wait_for},
};

workload_entry!();

const PROCESSES: usize = 5000;
const MAX_SERIES: usize = 2000;
const PREFIX: &str = "plcard-";

#[test]
fn five_thousand_names_stay_under_the_cap_and_the_folds_are_counted() {
    if !can_trace() {
        return;
    }
    let max = MAX_SERIES.to_string();
    // Only the workload's processes (--comm), so that every label set is one of its names.
    let server = Server::start(&["--max-series", &max, "--comm", PREFIX]);
    // Each wakes every 200 ms, so it switches in every collection.
    let names: Vec<String> = (0..PROCESSES).map(|i| format!("{PREFIX}{i:04}")).collect();
    let _named = Idle::start(PROCESSES, &names, Duration::from_millis(200)).unwrap();
    let shown = |body: &str| -> BTreeSet<String> {
        samples(body, "proclens_context_switches_total", &[])
            .into_iter()
            .filter_map(|(labels, _)| {
                labels
                    .into_iter()
                    .find(|(k, _)| k == "comm")
                    .map(|(_, v)| v)
            })
            .filter(|c| c.starts_with(PREFIX))
            .collect()
    };
    let folded = |body: &str| samples(body, "proclens_folded_label_sets_total", &[])[0].1;
    let mut body = String::new();
    wait_for("every name shown or folded", Duration::from_mins(1), || {
        body = http(server.addr, "GET", "/metrics", None).1;
        shown(&body).len() as f64 + folded(&body) == PROCESSES as f64
    });
    let names = shown(&body);
    assert!(
        !names.is_empty() && names.len() < PROCESSES,
        "{} shown",
        names.len()
    );
    let lines = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    assert!(
        lines <= MAX_SERIES,
        "{lines} series > --max-series {MAX_SERIES}"
    );
    assert_eq!(folded(&body), (PROCESSES - names.len()) as f64);
    // The folded processes are counted under comm="other", in their own cgroup.
    let other = samples(
        &body,
        "proclens_context_switches_total",
        &[("comm", "other"), ("kind", "voluntary")],
    );
    assert_eq!(other.len(), 1, "{other:?}");
    assert!(other[0].1 > 0.0);
    assert!(
        other[0]
            .0
            .iter()
            .any(|(k, v)| k == "cgroup" && v != "other")
    );
    // Later collections fold the same names again without counting them again.
    std::thread::sleep(Duration::from_secs(1));
    let later = http(server.addr, "GET", "/metrics", None).1;
    assert_eq!(folded(&later), folded(&body));
    assert_eq!(shown(&later), names);
}
