//! Real BPF: what the copy figures claim (issue 17), each against a workload whose
//! answer the test knows: recvmmsg/sendmmsg bytes from the messages' lengths,
//! `process_vm_readv/writev`, calls that would block or are interrupted counted apart from
//! errors, file reads that never pair with socket writes, an `io_uring` set up before
//! proclens started.
mod common;

use common::{
    can_trace,
    copy_window::{measure_sized, syscall_total},
    figure_workloads::MMSG_SIZES,
};

workload_entry!();

#[test]
fn udp_recvmmsg_and_sendmmsg_count_each_messages_bytes() {
    if !can_trace() {
        return;
    }
    const ROUNDS: u64 = 200;
    let per_call: u64 = MMSG_SIZES.iter().sum::<usize>() as u64;
    let w = measure_sized("copy-mmsg", ROUNDS);
    // Each call returns 8 (messages); its bytes are the msg_len the kernel wrote back.
    assert_eq!(
        w.delta("sendmmsg", "user->socket"),
        (ROUNDS * per_call, ROUNDS, 0)
    );
    assert_eq!(
        w.delta("recvmmsg", "socket->user"),
        (ROUNDS * per_call, ROUNDS, 0)
    );
    assert_eq!(w.after["paths"]["sendmmsg"]["class"], "user_copy");
}

#[test]
fn process_vm_readv_and_writev_are_exact() {
    if !can_trace() {
        return;
    }
    const SIZE: u64 = 1 << 20;
    let w = measure_sized("copy-pvm", SIZE);
    assert_eq!(
        w.delta("process_vm_readv", "process->user"),
        (SIZE, SIZE / 65536, 0)
    );
    assert_eq!(
        w.delta("process_vm_writev", "user->process"),
        (SIZE, SIZE / 65536, 0)
    );
    assert_eq!(w.after["paths"]["process_vm_readv"]["class"], "user_copy");
}

/// A non-blocking reader hits EAGAIN N times; a blocked reader is interrupted by a
/// signal N times with `SA_RESTART` (the kernel restarts its read) and once without
/// (EINTR): none of them is an error.
#[test]
fn would_block_and_interrupted_calls_are_not_errors() {
    if !can_trace() {
        return;
    }
    const N: u64 = 50;
    let w = measure_sized("copy-nonblock", N);
    let (bytes, calls, errors) = w.delta("read", "pipe->user");
    // Plus the workload's read of its go line ("go\n" from its stdin pipe): it was under
    // way when the window opened, and a call is counted as it returns.
    assert_eq!(
        (bytes, calls, errors),
        (200 + 3, 2 + 1, 0),
        "{}",
        w.after["paths"]["read"]
    );
    assert_eq!(w.field("read", "pipe->user", "would_block_total"), N);
    assert_eq!(w.field("read", "pipe->user", "interrupted_total"), N + 1);
}

/// pread64 of 8 KiB pages answered with 100-byte sends (a database's shape): the file
/// data never goes to the socket, and sendfile would save nothing.
#[test]
fn file_reads_answered_with_fewer_bytes_save_nothing_by_sendfile() {
    if !can_trace() {
        return;
    }
    const N: u64 = 2000;
    let w = measure_sized("copy-pread-send", N);
    assert_eq!(w.delta("pread64", "file->user"), (N * 8192, N, 0));
    assert_eq!(w.delta("sendto", "user->socket"), (N * 100, N, 0));
    let saved = |v: &serde_json::Value| {
        v["sendfile_would_save_total"]["eligible_bytes"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(saved(&w.after) - saved(&w.before), 0, "{}", w.after);
}

/// An `io_uring` set up before proclens started, and never entered again: flagged from
/// its fd, from the first report on.
#[test]
fn io_uring_set_up_before_proclens_started_is_flagged() {
    if !can_trace() {
        return;
    }
    let w = measure_sized("copy-uring-held", 0);
    assert_eq!(w.before["io_uring"], true, "{}", w.before);
    assert_eq!(w.after["io_uring"], true, "{}", w.after);
    for s in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert_eq!(syscall_total(&w.after, s), 0, "{s} after proclens started");
    }
    assert_eq!(w.bytes("write", "user->other"), 80);
}

/// Syscalls are counted as they return; three kinds do not return as themselves, and each
/// is counted exactly: a handled signal's `rt_sigreturn` (the kernel restores the
/// interrupted registers, leaving `-1` where the number was), a thread's `exit` (never
/// returns: counted at the thread's exit), and the `clone3` a new thread also returns from
/// (with 0: no call of its own). The workload's own counts are the oracle.
#[test]
fn calls_that_do_not_return_as_themselves_are_counted_exactly() {
    if !can_trace() {
        return;
    }
    const N: u64 = 100;
    let w = measure_sized("copy-unreturned", N);
    let delta = |name: &str| syscall_total(&w.after, name) - syscall_total(&w.before, name);
    assert_eq!(delta("rt_sigreturn"), N, "{}", w.after);
    assert_eq!(delta("tgkill"), N, "{}", w.after);
    assert_eq!(
        delta("exit"),
        common::figure_workloads::UNRETURNED_THREADS,
        "{}",
        w.after
    );
    assert_eq!(
        delta("clone3") + delta("clone"),
        common::figure_workloads::UNRETURNED_THREADS,
        "{}",
        w.after
    );
    assert_eq!(delta("exit_group"), 0, "the workload lives on: {}", w.after);
}
