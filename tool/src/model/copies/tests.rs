use super::*;

fn key(tgid: u32, op: u8, src: u8, dst: u8) -> CopyKey {
    CopyKey {
        tgid,
        op,
        src,
        dst,
        flags: 0,
        start_ns: 1000,
        cpu: 0,
        _pad: 0,
    }
}

fn proc(tgid: u32) -> Key {
    Key {
        tgid,
        start_ns: 1000,
    }
}

fn stats(bytes: u64, calls: u64, errors: u64) -> CopyStats {
    CopyStats {
        bytes,
        calls,
        errors,
        ..CopyStats::default()
    }
}

#[test]
fn deltas_and_totals_per_path() {
    let mut m = CopyModel::new();
    let k = key(7, op::SENDFILE64, fd_kind::FILE, fd_kind::SOCKET);
    m.update(&HashMap::from([(k, stats(100, 1, 0))]));
    let later = CopyStats {
        would_block: 4,
        interrupted: 2,
        ..stats(350, 3, 1)
    };
    let out = m.update(&HashMap::from([(k, later)]));
    let p = out[&proc(7)]
        .path(op::SENDFILE64, fd_kind::FILE, fd_kind::SOCKET)
        .unwrap();
    assert_eq!(
        p.delta,
        Counts {
            bytes: 250,
            calls: 2,
            errors: 1,
            would_block: 4,
            interrupted: 2,
        }
    );
    assert_eq!((p.total.bytes, p.total.calls, p.total.errors), (350, 3, 1));
    assert_eq!(p.kinds(), "file->socket");
    assert_eq!(op_name(p.op), "sendfile");
    assert_eq!(p.class(), Class::ZeroCopy);
    assert!(
        m.update(&HashMap::new()).is_empty(),
        "pruned processes are forgotten"
    );
}

/// What each syscall does with each kind of source and destination (`fs/splice.c`,
/// `fs/read_write.c`, `net/`).
#[test]
fn classes_follow_the_kernels_paths() {
    use fd_kind::{FILE, OTHER, PIPE, PROCESS, SOCKET, USER};
    for (op, src, dst, class) in [
        (op::READ, FILE, USER, Class::UserCopy),
        (op::SENDMMSG, USER, SOCKET, Class::UserCopy),
        (op::PROCESS_VM_READV, PROCESS, USER, Class::UserCopy),
        (op::VMSPLICE, PIPE, USER, Class::UserCopy),
        (op::VMSPLICE, USER, PIPE, Class::ZeroCopy),
        (op::SENDFILE64, FILE, SOCKET, Class::ZeroCopy),
        (op::SENDFILE64, FILE, PIPE, Class::ZeroCopy),
        (op::SENDFILE64, FILE, FILE, Class::InKernelCopy),
        (op::SENDFILE64, OTHER, SOCKET, Class::InKernelCopy),
        (op::SPLICE, FILE, PIPE, Class::ZeroCopy),
        (op::SPLICE, PIPE, SOCKET, Class::ZeroCopy),
        (op::SPLICE, PIPE, PIPE, Class::ZeroCopy),
        (op::SPLICE, SOCKET, PIPE, Class::InKernelCopy),
        (op::SPLICE, PIPE, FILE, Class::InKernelCopy),
        (op::SPLICE, OTHER, PIPE, Class::InKernelCopy),
        (op::SPLICE, PIPE, OTHER, Class::InKernelCopy),
        (op::TEE, PIPE, PIPE, Class::ZeroCopy),
        (op::COPY_FILE_RANGE, FILE, FILE, Class::InKernelCopy),
        (op::MMAP, FILE, USER, Class::Mmap),
    ] {
        assert_eq!(
            Class::of(op, src, dst),
            class,
            "{} {src}->{dst}",
            op_name(op)
        );
    }
}

#[test]
fn user_in_kernel_and_zero_copy_bytes_apart() {
    let mut m = CopyModel::new();
    let out = m.update(&HashMap::from([
        (
            key(1, op::READ, fd_kind::PIPE, fd_kind::USER),
            CopyStats {
                would_block: 7,
                interrupted: 1,
                ..stats(300, 3, 0)
            },
        ),
        (
            key(1, op::SPLICE, fd_kind::FILE, fd_kind::PIPE),
            stats(600, 1, 0),
        ),
        (
            key(1, op::SPLICE, fd_kind::SOCKET, fd_kind::PIPE),
            stats(200, 1, 0),
        ),
        (
            key(1, op::COPY_FILE_RANGE, fd_kind::FILE, fd_kind::FILE),
            stats(400, 1, 0),
        ),
        (
            key(1, op::VMSPLICE, fd_kind::USER, fd_kind::PIPE),
            stats(100, 1, 0),
        ),
        (
            key(1, op::VMSPLICE, fd_kind::PIPE, fd_kind::USER),
            stats(50, 1, 0),
        ),
        (
            key(1, op::MMAP, fd_kind::FILE, fd_kind::USER),
            stats(4096, 2, 1),
        ),
    ]));
    let d = out[&proc(1)].interval();
    assert_eq!(d.user_copy_bytes, 350);
    assert_eq!(d.in_kernel_copy_bytes, 600);
    assert_eq!(d.zero_copy_bytes, 700);
    assert!((d.zero_copy_pct() - 700.0 / 1650.0 * 100.0).abs() < 1e-9);
    assert_eq!((d.mmap_calls, d.mmap_bytes), (2, 4096));
    assert_eq!((d.calls, d.errors), (8, 1));
    assert_eq!((d.would_block, d.interrupted), (7, 1), "not errors");
    assert_eq!(d.sendfile, SendfileSaving::default(), "no file→socket flow");
}

#[test]
fn sendfile_saving_comes_from_the_paired_flows_only() {
    let mut m = CopyModel::new();
    // 8 MiB read from a file in 128 calls, 8 MiB written to a socket, of which 4 MiB
    // the kernel paired per thread (read, then written on in full).
    let out = m.update(&HashMap::from([
        (
            key(1, op::READ, fd_kind::FILE, fd_kind::USER),
            stats(8 << 20, 128, 0),
        ),
        (
            key(1, op::WRITE, fd_kind::USER, fd_kind::SOCKET),
            stats(8 << 20, 64, 0),
        ),
        (
            key(1, op::SENDFILE_ELIGIBLE, fd_kind::FILE, fd_kind::SOCKET),
            stats(4 << 20, 64, 0),
        ),
    ]));
    let p = &out[&proc(1)];
    assert_eq!(p.paths.len(), 2, "the flows are no path");
    let s = p.interval().sendfile;
    assert_eq!(
        s,
        SendfileSaving {
            eligible_bytes: 4 << 20,
            cpu_copy_bytes: 8 << 20,
            syscalls: 64,
            mode_switches: 128,
        }
    );
    let (d, t) = p.op_counts(op::WRITE);
    assert_eq!((d.bytes, t.calls), (8 << 20, 64));
    assert_eq!(p.paths[0].op, op::READ, "busiest path first");
    // Reads and writes that never paired (a database's page reads and short replies):
    // no saving, however many bytes each side moved.
    let mut m = CopyModel::new();
    let out = m.update(&HashMap::from([
        (
            key(2, op::PREAD64, fd_kind::FILE, fd_kind::USER),
            stats(8 << 20, 1024, 0),
        ),
        (
            key(2, op::SENDTO, fd_kind::USER, fd_kind::SOCKET),
            stats(100 << 10, 1024, 0),
        ),
    ]));
    assert_eq!(
        out[&proc(2)].since_start().sendfile,
        SendfileSaving::default()
    );
}

/// Issue 7: a pid freed and given to a new process within one interval.
#[test]
fn a_reused_pid_is_two_processes() {
    let mut m = CopyModel::new();
    let old = CopyKey {
        start_ns: 5,
        ..key(42, op::WRITE, fd_kind::USER, fd_kind::PIPE)
    };
    let new = CopyKey { start_ns: 9, ..old };
    let out = m.update(&HashMap::from([
        (old, stats(100, 1, 0)),
        (new, stats(7, 7, 0)),
    ]));
    assert_eq!(out.len(), 2);
    let bytes = |start_ns| {
        out[&Key { tgid: 42, start_ns }]
            .path(op::WRITE, fd_kind::USER, fd_kind::PIPE)
            .unwrap()
            .total
            .bytes
    };
    assert_eq!((bytes(5), bytes(9)), (100, 7));
}

#[test]
#[allow(
    clippy::unreadable_literal,
    reason = "st_mode values as ls and <sys/stat.h> write them"
)]
fn fd_kinds_from_inode_modes() {
    assert_eq!(fd_kind::from_mode(0o100644), fd_kind::FILE);
    assert_eq!(fd_kind::from_mode(0o140777), fd_kind::SOCKET);
    assert_eq!(fd_kind::from_mode(0o010600), fd_kind::PIPE);
    for other in [
        0o020620, /* tty */
        0o060660, /* block */
        0o040755, /* dir */
        0o600,    /* anon inode */
    ] {
        assert_eq!(fd_kind::from_mode(other), fd_kind::OTHER, "{other:o}");
    }
    assert_eq!(kind_name(fd_kind::UNKNOWN), "unknown");
    assert_eq!(kind_name(fd_kind::PROCESS), "process");
    assert_eq!(kind_name(99), "unknown");
}

#[test]
fn reset_counter_counts_as_new() {
    let c = Counts {
        bytes: 5,
        calls: 1,
        ..Counts::default()
    };
    let earlier = Counts {
        bytes: 10,
        calls: 2,
        ..Counts::default()
    };
    assert_eq!(c.since(&earlier), c);
    let back = Counts {
        would_block: 1,
        ..Counts::default()
    };
    assert_eq!(
        back.since(&Counts {
            would_block: 3,
            ..Counts::default()
        }),
        back,
        "any field going back"
    );
    let four = Counts {
        bytes: 10,
        calls: 4,
        ..Counts::default()
    };
    assert!((four.avg_bytes() - 2.5).abs() < 1e-9);
    assert_eq!(Counts::default().avg_bytes(), 0.0);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Any op or fd-kind code in a map key gets a name and a class: the table's for
    /// known codes, `?`/`unknown` for others.
    #[test]
    fn proptest_any_code_is_named(code in proptest::prelude::any::<u8>(), src in 0u8..8, dst in 0u8..8) {
        let known_op = (code as usize) < op::COUNT;
        proptest::prop_assert_eq!(op_name(code) == "?", !known_op);
        if known_op && code != op::SENDFILE64 {
            proptest::prop_assert_eq!(op_name(code), op::NAMES[code as usize]);
        }
        let _ = Class::of(code, src, dst).as_str();
        let known_kind = [fd_kind::FILE, fd_kind::SOCKET, fd_kind::PIPE, fd_kind::OTHER, fd_kind::USER, fd_kind::PROCESS]
            .contains(&code);
        proptest::prop_assert_eq!(kind_name(code) == "unknown", !known_kind);
    }
}
