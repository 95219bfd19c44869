//! Real BPF against a real file server: nginx (Debian's, installed by `cargo xtask setup`)
//! serves a file of known size a known number of times. With `sendfile off` it reads
//! the file into user memory and writes it to the socket: exactly those bytes are what
//! sendfile would save (its headers are not file data). With `sendfile on` the same bytes
//! go by sendfile, page references with no copy, and there is nothing left to save.
mod common;

use std::time::Duration;

use common::{Proclens, can_trace, nginx::Nginx};
use serde_json::Value;

/// The file's size: not a multiple of nginx's 32 KiB buffers.
const SIZE: u64 = (1 << 20) + 123;
const FETCHES: u64 = 20;

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
    let Some(n) = Nginx::start(false, SIZE) else {
        return;
    };
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
    let Some(n) = Nginx::start(true, SIZE) else {
        return;
    };
    let v = serve_traced(&n);
    assert_eq!(
        v["paths"]["sendfile"]["fds"]["file->socket"]["bytes_total"],
        FETCHES * SIZE,
        "{v}"
    );
    assert_eq!(v["paths"]["sendfile"]["class"], "zero_copy");
    assert_eq!(v["sendfile_would_save_total"]["eligible_bytes"], 0, "{v}");
}
