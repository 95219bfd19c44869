use super::*;

#[test]
fn outcomes_by_return_value() {
    assert_eq!(Outcome::of(0), Outcome::Done);
    assert_eq!(Outcome::of(4096), Outcome::Done);
    // An mmap address in the upper half reads as a negative i64 below -4095.
    assert_eq!(Outcome::of(0x7f00_0000_0000u64 as i64), Outcome::Done);
    assert_eq!(Outcome::of(-0x1000_0000), Outcome::Done);
    assert_eq!(Outcome::of(-11), Outcome::WouldBlock);
    for r in [-4, -512, -513, -514, -516] {
        assert_eq!(Outcome::of(r), Outcome::Interrupted, "{r}");
    }
    for r in [-1, -9, -27, -515, -4095] {
        assert_eq!(Outcome::of(r), Outcome::Failed, "{r}");
    }
}

/// A file server: each read sent on in full, in one write or several (partial
/// writes of a non-blocking socket), even with a second read between them (two
/// buffers in flight); headers beyond the file data carry nothing.
#[test]
fn reads_pair_with_the_writes_that_carry_them_on() {
    let mut t = Pairing::default();
    assert_eq!(t.socket_write(300), (0, 0), "headers before any read");
    t.file_read(1000);
    assert_eq!(t.socket_write(1300), (1000, 1), "headers + body");
    t.file_read(1000);
    t.file_read(500);
    assert_eq!(t.socket_write(600), (0, 0), "a partial write");
    t.file_read(200);
    assert_eq!(t.socket_write(400), (1000, 1), "the first read done");
    assert_eq!(t.socket_write(10_000), (700, 2), "the rest, and no more");
    assert_eq!(t.chunks, 0);
}

/// A database: reads pages, answers with fewer bytes. Nothing pairs.
#[test]
fn reads_answered_with_fewer_bytes_never_pair() {
    let mut t = Pairing::default();
    let mut carried = 0;
    for _ in 0..1000 {
        t.file_read(8192);
        carried += t.socket_write(100).0;
    }
    assert_eq!(carried, 0);
    assert_eq!(t.chunks as usize, PAIR_CHUNKS, "the queue stays bounded");
}

#[test]
fn every_traced_op_has_an_fd_or_user_side() {
    for o in 0..op::COUNT as u8 {
        let (s, d) = args::fds(o);
        let process_vm = o == op::PROCESS_VM_READV || o == op::PROCESS_VM_WRITEV;
        assert_eq!(s == args::NONE && d == args::NONE, process_vm, "{o}");
    }
    assert!(op::reads_into_user(op::PREADV2) && !op::reads_into_user(op::RECVFROM));
    assert!(op::writes_from_user(op::SENDMMSG) && !op::writes_from_user(op::SENDFILE64));
}
