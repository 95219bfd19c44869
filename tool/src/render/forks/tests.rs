use proclens_common::copies::fd_kind;

use super::*;
use crate::model::{
    fdtables::{ByKind, Holder, SharedFd},
    forks::InheritedFd,
    proctable::Key,
};

fn frame() -> Frame {
    let delta = Cost {
        forks: 1,
        fork_ns: 2_500_000,
        cow_faults: 16_384,
        cow_bytes: 16_384 * 4096,
        cow_after_fork: 10,
        after_fork_bytes: 10 * 4096,
        children_cow: 16_384,
        children_bytes: 16_384 * 4096,
        ..Cost::default()
    };
    Frame {
        unix_time: 1.5,
        clock: "12:00:00".into(),
        elapsed_s: 1.0,
        page_size: 4096,
        fds_source: Some("bpf_iter"),
        cow_faults_counted: true,
        timed_calls: vec!["fork", "vfork", "clone", "clone3"],
        dropped: Dropped::default(),
        rows: vec![ViewRow {
            row: CostRow {
                key: Key {
                    tgid: 10,
                    start_ns: 7,
                },
                creator: Some(1),
                delta,
                total: delta,
            },
            comm: "parent".into(),
            alive: true,
            fds: Some(ProcFds {
                pid: 10,
                start_ns: 7,
                open: 4,
                by_kind: ByKind {
                    file: 1,
                    pipe: 1,
                    other: 2,
                    ..ByKind::default()
                },
                cloexec: 1,
                no_cloexec: 1,
                table_shared_with: vec![],
                shared: vec![SharedFd {
                    fd: 3,
                    kind: "file",
                    with: vec![Holder { pid: 11, fd: 3 }],
                }],
            }),
        }],
        execs: vec![ExecEntry {
            at_ns: 9,
            pid: 12,
            start_ns: 8,
            comm: "sleep".into(),
            filename: "/usr/bin/sleep".into(),
            open: 6,
            inherited: 3,
            fds: (3..6)
                .map(|fd| InheritedFd {
                    fd,
                    kind: kind_name(fd_kind::FILE),
                })
                .collect(),
            incomplete: false,
        }],
    }
}

use crate::model::copies::kind_name;

#[test]
fn json_names_every_figure() {
    let lines = json_lines(&frame());
    assert_eq!(lines.len(), 3);
    let sys: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(sys["type"], "forks_system");
    assert_eq!(sys["fds_source"], "bpf_iter");
    assert_eq!(sys["cow_bytes"], 16_384 * 4096);
    let row: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(row["type"], "forks");
    assert_eq!(
        (row["pid"].as_u64(), row["ppid"].as_u64()),
        (Some(10), Some(1))
    );
    assert_eq!(row["fork_ms"], 2.5);
    assert_eq!(row["children_cow_faults"], 16_384);
    assert_eq!(row["faults_caused"], 16_394);
    assert_eq!(row["total"]["cow_faults"], 16_384);
    assert_eq!(row["fds"]["shared"][0]["with"][0]["pid"], 11);
    assert_eq!(row["fds"]["by_kind"]["pipe"], 1);
    let exec: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    assert_eq!(exec["type"], "exec");
    assert_eq!(exec["inherited"], 3);
    assert_eq!(exec["fds"][2]["fd"], 5);
    assert!(exec.get("at_ns").is_none());
}

#[test]
fn plain_lists_rows_sharing_and_execs() {
    let t = plain_lines(&frame()).join("\n");
    assert!(
        t.contains("forks 1 (2.50 ms), copy-on-write faults 16384 (64.0MiB)"),
        "{t}"
    );
    assert!(t.contains("fd tables from bpf_iter"), "{t}");
    assert!(t.contains("10: fd 3 (file) is also open in 11:3"), "{t}");
    assert!(
        t.contains("exec 12 sleep (/usr/bin/sleep): 3 fds inherited without close-on-exec: 3 (file), 4 (file), 5 (file)"),
        "{t}"
    );
}
