//! Real BPF: proclens's per-path byte counts against workloads that move a known number of
//! bytes by one path each. Exact equality, not tolerance: every byte a syscall returned is
//! counted once, on the path (syscall, source kind → destination kind) it took.
mod common;

use std::time::Duration;

use common::{
    Bounded as _, COMMAND_LIMIT, PROCLENS, Proclens, can_trace,
    copy_window::{Window, kinds_of, measure_sized, path_totals, syscall_total},
    workload::Workload,
};
use serde_json::Value;

workload_entry!();

/// 8 MiB, moved by each path.
const SIZE: u64 = 8 << 20;

/// Runs copy workload `kind` (moving `SIZE` bytes) under `proclens copies` and returns
/// the window around it.
fn measure(kind: &str) -> Window {
    measure_sized(kind, SIZE)
}

#[test]
fn read_write_file_to_socket_counts_each_byte_once_per_side() {
    if !can_trace() {
        return;
    }
    let w = measure("copy-rw");
    let (bytes, calls, errors) = w.delta("read", "file->user");
    assert_eq!(bytes, SIZE, "read file->user");
    assert_eq!(
        (calls, errors),
        (SIZE / 65536 + 1, 0),
        "128 full reads and the one at end of file"
    );
    assert_eq!(w.bytes("write", "user->socket"), SIZE, "write user->socket");
    assert_eq!(
        w.bytes("read", "socket->user"),
        SIZE,
        "the peer's read socket->user"
    );
    // Mode switches: the syscall counter and the copy-path programs agree on
    // every write(2) of the window (socket writes and the workload's `done` line), each
    // made and finished inside it.
    let writes = syscall_total(&w.after, "write") - syscall_total(&w.before, "write");
    assert!(writes >= SIZE / 65536, "write syscalls counted: {writes}");
    assert_eq!(
        writes,
        w.op_delta("write", "calls_total") + w.op_delta("write", "errors_total"),
        "write(2) syscalls vs write path calls + errors"
    );
    // What sendfile would save since start: all 8 MiB went file → socket through user
    // space, copied twice by the CPU.
    let s = &w.after["sendfile_would_save_total"];
    assert_eq!(s["eligible_bytes"], SIZE, "{s}");
    assert_eq!(s["cpu_copy_bytes"], 2 * SIZE, "{s}");
}

#[test]
fn sendfile_file_to_tcp_socket_is_exact_and_zero_copy() {
    if !can_trace() {
        return;
    }
    let w = measure("copy-sendfile");
    let (bytes, calls, errors) = w.delta("sendfile", "file->socket");
    assert_eq!(bytes, SIZE, "sendfile file->socket");
    assert!(calls >= 1 && errors == 0);
    assert_eq!(kinds_of(&w.after, "sendfile"), vec!["file->socket"]);
    // Page references into the socket (loopback does scatter-gather): no copy.
    assert_eq!(w.after["paths"]["sendfile"]["class"], "zero_copy");
    assert_eq!(w.row_delta("zero_copy_bytes_total"), SIZE);
    assert_eq!(
        w.bytes("read", "socket->user"),
        SIZE,
        "the peer's read socket->user"
    );
    assert_eq!(w.row_delta("in_kernel_copy_bytes_total"), 0);
}

#[test]
fn splice_file_to_pipe_to_socket_is_exact() {
    if !can_trace() {
        return;
    }
    let w = measure("copy-splice");
    assert_eq!(w.bytes("splice", "file->pipe"), SIZE);
    assert_eq!(w.bytes("splice", "pipe->socket"), SIZE);
    assert_eq!(w.bytes("read", "socket->user"), SIZE);
    // Page-cache pages into the pipe, then into the socket: referenced, never copied.
    assert_eq!(w.after["paths"]["splice"]["class"], "zero_copy");
    assert_eq!(w.row_delta("zero_copy_bytes_total"), 2 * SIZE);
}

#[test]
fn vmsplice_into_a_pipe_and_tee_are_exact() {
    if !can_trace() {
        return;
    }
    let w = measure("copy-vmsplice");
    assert_eq!(
        w.bytes("vmsplice", "user->pipe"),
        SIZE,
        "vmsplice to a pipe open for writing"
    );
    assert_eq!(w.bytes("tee", "pipe->pipe"), SIZE);
    assert_eq!(
        w.bytes("splice", "pipe->other"),
        2 * SIZE,
        "both pipes drained to /dev/null"
    );
    let class = |op: &str, kinds: &str| w.after["paths"][op]["fds"][kinds]["class"].clone();
    assert_eq!(
        class("vmsplice", "user->pipe"),
        "zero_copy",
        "user pages referenced"
    );
    assert_eq!(class("tee", "pipe->pipe"), "zero_copy");
    assert_eq!(
        class("splice", "pipe->other"),
        "in_kernel_copy",
        "into a device"
    );
}

#[test]
fn copy_file_range_file_to_file_is_exact() {
    if !can_trace() {
        return;
    }
    let w = measure("copy-cfr");
    let (bytes, calls, errors) = w.delta("copy_file_range", "file->file");
    assert_eq!(bytes, SIZE);
    assert!(calls >= 1 && errors == 0);
    // Copied inside the kernel, not through user memory, and not zero-copy either.
    assert_eq!(
        w.after["paths"]["copy_file_range"]["class"],
        "in_kernel_copy"
    );
    assert_eq!(w.row_delta("in_kernel_copy_bytes_total"), SIZE);
    assert_eq!(w.row_delta("zero_copy_bytes_total"), 0);
}

#[test]
fn mmap_then_write_counts_the_mapping_and_the_written_bytes() {
    if !can_trace() {
        return;
    }
    let w = measure("copy-mmap");
    assert_eq!(
        w.delta("mmap", "file->user"),
        (SIZE, 1, 0),
        "one file-backed mapping of 8 MiB"
    );
    assert_eq!(w.bytes("write", "user->socket"), SIZE);
    assert_eq!(w.bytes("read", "socket->user"), SIZE);
}

#[test]
fn short_calls_count_returned_bytes_and_failures_count_as_errors() {
    if !can_trace() {
        return;
    }
    let w = measure("copy-short");
    assert_eq!(
        w.delta("read", "socket->user"),
        (1000, 1, 0),
        "a 64 KiB read that returned 1000"
    );
    assert_eq!(
        w.delta("write", "user->file"),
        (10_000, 1, 1),
        "a write cut short by RLIMIT_FSIZE, then EFBIG"
    );
    assert_eq!(
        w.delta("read", "unknown->user"),
        (0, 0, 1),
        "read from a bad fd: an error, no bytes"
    );
    assert_eq!(
        w.delta("write", "user->unknown"),
        (0, 0, 1),
        "write to fd -1: an error, no bytes"
    );
}

/// The rest of the read/write family, 1 MiB each, one path each: the record layouts
/// (fd field per syscall) and the fd kinds are right for every one of them.
#[test]
fn every_read_write_family_syscall_is_exact() {
    if !can_trace() {
        return;
    }
    const MIB: u64 = 1 << 20;
    let w = measure_sized("copy-family", MIB);
    let calls = MIB / 65536;
    for (op, kinds) in [
        ("pread64", "file->user"),
        ("preadv", "file->user"),
        ("preadv2", "file->user"),
        ("readv", "file->user"),
        ("pwrite64", "user->file"),
        ("pwritev", "user->file"),
        ("pwritev2", "user->file"),
        ("writev", "user->other"),
        ("sendto", "user->socket"),
        ("sendmsg", "user->socket"),
    ] {
        assert_eq!(w.delta(op, kinds), (MIB, calls, 0), "{op} {kinds}");
        assert_eq!(
            kinds_of(&w.after, op),
            vec![kinds],
            "{op}: no other fd kinds"
        );
    }
    // The receiving side may need more than one call per chunk; the bytes are exact.
    for op in ["recvfrom", "recvmsg"] {
        assert_eq!(w.bytes(op, "socket->user"), MIB, "{op}");
        assert_eq!(w.op_delta(op, "errors_total"), 0, "{op}");
    }
}

/// Threads of one process on every CPU: their calls sum into one exact path.
#[test]
fn concurrent_threads_sum_exactly_into_one_path() {
    if !can_trace() {
        return;
    }
    let w = measure("copy-threads");
    assert_eq!(w.delta("write", "user->other"), (SIZE, SIZE / 4096, 0));
}

#[test]
fn io_uring_users_are_flagged() {
    if !can_trace() {
        return;
    }
    let w = measure("copy-uring");
    assert_eq!(w.before["io_uring"], false);
    assert_eq!(w.after["io_uring"], true, "{}", w.after);
    assert!(
        w.after["io_uring_note"]
            .as_str()
            .unwrap()
            .contains("not counted")
    );
}

/// proclens writes a report every interval; none of it may show up, unless asked.
#[test]
fn proclens_does_not_count_its_own_io() {
    if !can_trace() {
        return;
    }
    let rows_of_self = |args: &[&str]| -> (usize, u64) {
        let p = Proclens::spawn(args);
        let me = p.child.id();
        let mut rows = 0;
        let mut written = 0;
        let mut reports = 0;
        while reports < 6 {
            let line = p.line(Duration::from_secs(30));
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["type"] == "copies_system" {
                reports += 1;
            } else if v["pid"] == me {
                rows += 1;
                written += path_totals(&v, "write", "user->pipe").0;
            }
        }
        (rows, written)
    };
    let (rows, _) = rows_of_self(&["copies", "--json", "--interval", "0.2"]);
    assert_eq!(rows, 0, "proclens reported itself");
    // The control: with --include-self its own report writes to the pipe are seen.
    let (rows, written) =
        rows_of_self(&["copies", "--json", "--interval", "0.2", "--include-self"]);
    assert!(
        rows > 0 && written > 0,
        "--include-self shows proclens's own writes ({rows} rows, {written} bytes)"
    );
}

/// A process that has gone is reported once more (alive: false, its final totals), then
/// its kernel map entries are freed: it never shows up again.
#[test]
fn gone_processes_are_reported_once_then_pruned() {
    if !can_trace() {
        return;
    }
    let mut w = Workload::spawn(&format!("copy-rw:{SIZE}"));
    let pid = w.pid();
    let p = Proclens::spawn(&[
        "copies",
        "--json",
        "--interval",
        "0.2",
        "-p",
        &pid.to_string(),
    ]);
    p.json_until(Duration::from_secs(30), |v| v["type"] == "copies_system");
    w.go();
    drop(w); // killed and reaped
    let last = p.json_until(Duration::from_secs(15), |v| {
        v["type"] == "copies" && v["pid"] == pid && v["alive"] == false
    });
    assert_eq!(
        path_totals(&last, "read", "file->user").0,
        SIZE,
        "final totals in the last report"
    );
    let mut reports = 0;
    while reports < 5 {
        let v: Value = serde_json::from_str(&p.line(Duration::from_secs(15))).unwrap();
        if v["type"] == "copies_system" {
            reports += 1;
        } else {
            assert_ne!(v["pid"], pid, "reported again after it was gone: {v}");
        }
    }
}

/// Bad input: one line on stderr and a distinct exit code, before anything is loaded.
#[test]
fn bad_input_gets_one_line_and_its_exit_code() {
    // Above the largest pid_max Linux allows (2^22): cannot exist.
    let out = std::process::Command::new(PROCLENS)
        .args(["copies", "-p", "4194305"])
        .output_within(COMMAND_LIMIT);
    assert_eq!(out.status.code(), Some(4), "no such process");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no such process: 4194305"), "{err}");
    for bad in [
        &["copies", "--syscalls", "0"][..],
        &["copies", "--interval", "0"],
        &["copies", "-p", "abc"],
    ] {
        let out = std::process::Command::new(PROCLENS)
            .args(bad)
            .output_within(COMMAND_LIMIT);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
}

/// A process that starts and exits between two reports is still named (the kernel records
/// its command name) and its bytes are exact: dd copies 10 blocks of 512 bytes from
/// /dev/zero (a character device: `other`) to /dev/null.
#[test]
fn short_lived_process_is_named_and_counted() {
    if !can_trace() {
        return;
    }
    let name = format!("pldd{}", std::process::id() % 100_000);
    let exe = std::env::temp_dir().join(&name);
    std::fs::copy("/bin/dd", &exe).expect("dd is installed");
    let p = Proclens::spawn(&["copies", "--json", "--interval", "1", "--comm", &name]);
    p.json_until(Duration::from_secs(30), |v| v["type"] == "copies_system");
    let st = std::process::Command::new(&exe)
        .args([
            "if=/dev/zero",
            "of=/dev/null",
            "bs=512",
            "count=10",
            "status=none",
        ])
        .status_within(COMMAND_LIMIT);
    assert!(st.success());
    let v = p.json_until(Duration::from_secs(15), |v| {
        v["type"] == "copies" && v["comm"] == name.as_str()
    });
    let _ = std::fs::remove_file(&exe);
    assert_eq!(v["alive"], false, "{v}");
    assert_eq!(path_totals(&v, "read", "other->user"), (5120, 10, 0), "{v}");
    assert_eq!(
        path_totals(&v, "write", "user->other"),
        (5120, 10, 0),
        "{v}"
    );
}
