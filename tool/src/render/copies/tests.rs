use std::collections::HashMap;

use ::syscalls::Sysno;
use proclens_common::copies::{CopyKey, CopyStats, SysKey, fd_kind, op};

use super::*;
use crate::model::copy_report::CopiesModel;

fn frame() -> Frame {
    let mut m = CopiesModel::new();
    let k = |o, s, d| CopyKey {
        tgid: 9,
        op: o,
        src: s,
        dst: d,
        flags: 0,
        start_ns: 77,
        cpu: 0,
        _pad: 0,
    };
    let copies = HashMap::from([
        (
            k(op::READ, fd_kind::FILE, fd_kind::USER),
            CopyStats {
                bytes: 8 << 20,
                calls: 128,
                errors: 0,
                ..CopyStats::default()
            },
        ),
        (
            k(op::WRITE, fd_kind::USER, fd_kind::SOCKET),
            CopyStats {
                bytes: 8 << 20,
                calls: 128,
                errors: 0,
                ..CopyStats::default()
            },
        ),
        (
            k(op::SENDFILE64, fd_kind::FILE, fd_kind::SOCKET),
            CopyStats {
                bytes: 1 << 20,
                calls: 2,
                errors: 1,
                ..CopyStats::default()
            },
        ),
        (
            k(op::READ, fd_kind::UNKNOWN, fd_kind::USER),
            CopyStats {
                bytes: 0,
                calls: 0,
                errors: 1,
                ..CopyStats::default()
            },
        ),
        (
            k(op::READ, fd_kind::SOCKET, fd_kind::USER),
            CopyStats {
                would_block: 6,
                interrupted: 2,
                ..CopyStats::default()
            },
        ),
        (
            k(op::SPLICE, fd_kind::SOCKET, fd_kind::PIPE),
            CopyStats {
                bytes: 1 << 20,
                calls: 1,
                ..CopyStats::default()
            },
        ),
        (
            // The kernel paired half the file reads with socket writes.
            k(op::SENDFILE_ELIGIBLE, fd_kind::FILE, fd_kind::SOCKET),
            CopyStats {
                bytes: 4 << 20,
                calls: 64,
                ..CopyStats::default()
            },
        ),
        (
            // A 32-bit read: the same path.
            CopyKey {
                flags: proclens_common::copies::flags::COMPAT,
                ..k(op::READ, fd_kind::FILE, fd_kind::USER)
            },
            CopyStats {
                bytes: 100,
                calls: 1,
                ..CopyStats::default()
            },
        ),
    ]);
    let sys = HashMap::from([
        (
            SysKey {
                tgid: 9,
                nr: Sysno::read.id() as u32,
                start_ns: 77,
                cpu: 0,
                _pad: 0,
            },
            129,
        ),
        (
            SysKey {
                tgid: 9,
                nr: Sysno::io_uring_enter.id() as u32,
                start_ns: 77,
                cpu: 0,
                _pad: 0,
            },
            1,
        ),
        (
            SysKey {
                tgid: 9,
                nr: 3 | proclens_common::copies::COMPAT_NR,
                start_ns: 77,
                cpu: 0,
                _pad: 0,
            },
            1,
        ),
    ]);
    let rows = m.update(&copies, &sys);
    Frame {
        unix_time: 1.0,
        clock: "12:00:00".into(),
        elapsed_s: 2.0,
        top_syscalls: Some(3),
        dropped: Dropped::default(),
        rows: rows
            .into_iter()
            .map(|r| (r, "srv".to_string(), true))
            .collect(),
    }
}

#[test]
fn json_schema() {
    let lines = json_lines(&frame());
    let sys: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(sys["type"], "copies_system");
    assert_eq!(sys["syscalls"], 131);
    for c in [
        "lost_events",
        "untracked_threads",
        "inflight_full",
        "copy_map_full",
        "syscall_map_full",
        "comm_map_full",
    ] {
        assert_eq!(sys[c], 0, "{c}");
    }
    let v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(v["type"], "copies");
    assert_eq!(v["pid"], 9);
    assert_eq!(v["start_ns"], 77);
    assert_eq!(v["io_uring"], true);
    assert_eq!(v["io_uring_note"], IO_URING_NOTE);
    assert_eq!(v["compat_syscalls_total"], 1);
    let sf = &v["paths"]["sendfile"];
    assert_eq!(sf["class"], "zero_copy");
    assert_eq!(sf["bytes_total"], 1 << 20);
    assert_eq!(sf["calls_total"], 2);
    assert_eq!(sf["errors"], 1);
    assert_eq!(sf["fds"]["file->socket"]["bytes"], 1 << 20);
    assert_eq!(sf["fds"]["file->socket"]["class"], "zero_copy");
    let sp = &v["paths"]["splice"];
    assert_eq!(sp["class"], "in_kernel_copy", "out of a socket");
    let rd = &v["paths"]["read"];
    assert_eq!(rd["class"], "user_copy");
    assert_eq!(rd["bytes"], (8 << 20) + 100, "both ABIs");
    assert_eq!(
        rd["fds"]["file->user"]["calls"], 129,
        "one path for both ABIs"
    );
    assert_eq!(rd["errors"], 1, "the failed read on a bad fd");
    assert_eq!(rd["would_block"], 6, "apart from errors");
    assert_eq!(rd["interrupted_total"], 2);
    assert_eq!(rd["fds"]["unknown->user"]["errors_total"], 1);
    assert_eq!(rd["fds"]["socket->user"]["would_block_total"], 6);
    assert_eq!(v["sendfile_would_save"]["eligible_bytes"], 4 << 20);
    assert_eq!(v["sendfile_would_save"]["cpu_copy_bytes"], 8 << 20);
    assert_eq!(v["sendfile_would_save"]["syscalls"], 64);
    assert_eq!(v["sendfile_would_save"]["mode_switches"], 128);
    assert_eq!(v["user_copy_bytes"], (16 << 20) + 100);
    assert_eq!(v["in_kernel_copy_bytes"], 1 << 20);
    assert_eq!(v["zero_copy_bytes"], 1 << 20);
    assert_eq!(v["top_syscalls"][0]["name"], "read");
    assert_eq!(v["top_syscalls"][0]["abi"], std::env::consts::ARCH);
    assert_eq!(v["top_syscalls"][0]["count"], 129);
    let compat = v["top_syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["abi"] == "i386")
        .expect("the 32-bit read");
    assert_eq!(
        (compat["name"].as_str(), compat["nr"].as_u64()),
        (Some("read"), Some(3))
    );
}

#[test]
fn plain_lines_show_paths_and_savings() {
    let lines = plain_lines(&frame());
    let text = lines.join("\n");
    assert!(lines[0].ends_with("; nothing dropped"), "{text}");
    assert!(
        lines[2].contains("srv") && lines[2].contains("io_uring") && lines[2].contains("32-bit"),
        "{text}"
    );
    assert!(text.contains("read             file->user"), "{text}");
    assert!(
        text.contains("3.0 would block/s, 1.0 interrupted/s"),
        "{text}"
    );
    assert!(
        text.contains("sendfile would save 4.0MiB/s of CPU copies and 64 mode switches/s (2.0MiB/s of file data"),
        "{text}"
    );
    assert!(text.contains("top syscalls: read 64/s"), "{text}");
    assert!(
        text.contains("read (i386) 0/s") || !text.contains("(i386)"),
        "{text}"
    );
}

#[test]
fn plain_lines_show_every_drop_counter() {
    let mut f = frame();
    f.dropped = Dropped {
        lost_events: 1,
        untracked_threads: 2,
        inflight_full: 3,
        copy_map_full: 4,
        syscall_map_full: 5,
        comm_map_full: 6,
    };
    let head = &plain_lines(&f)[0];
    assert!(
        head.ends_with(
            "; not counted (maps full): 3 calls in flight, 4 copy paths, 5 syscalls, 6 names; lost events 1, untracked threads 2"
        ),
        "{head}"
    );
}

#[test]
fn human_units() {
    assert_eq!(human_bytes(512.0), "512B");
    assert_eq!(human_bytes(1536.0), "1.5KiB");
    assert_eq!(human_bytes((8u64 << 20) as f64), "8.0MiB");
}
