//! The events the kernel side sends through the ring buffer, decoded. Everything that
//! crosses the kernel boundary is checked: a short or unknown record is an error, never a
//! panic or a transmute.

use std::mem::size_of;

use proclens_common::{
    event::{EventHeader, ThreadExit, kind},
    forks::ExecFds,
    lifecycle::{Exec, Exit, Fork, Free, Wait, exit_flags},
};

/// A decoded ring-buffer event. The two large records are boxed: the lifecycle events a
/// fork storm sends by the hundred thousand per second then move as ~100-byte values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    ThreadExit(Box<ThreadExit>),
    Fork(Fork),
    Exec(Box<Exec>),
    Exit(Exit),
    Wait(Wait),
    Free(Free),
    /// The fds a program inherited at exec (the after-fork programs').
    ExecFds(Box<ExecFds>),
}

impl Event {
    /// The exit of a process's last thread (its death), if this is one.
    pub fn process_death(&self) -> Option<&Exit> {
        match self {
            Event::Exit(x) if x.flags & exit_flags::GROUP_DEAD != 0 => Some(x),
            _ => None,
        }
    }
    /// The thread exit this event is, if it is one.
    pub fn thread_exit(&self) -> Option<&ThreadExit> {
        #[allow(
            irrefutable_let_patterns,
            reason = "more event kinds come with other features"
        )]
        if let Event::ThreadExit(t) = self {
            Some(t.as_ref())
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("event of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("event kind {kind} needs {need} bytes, got {got}")]
    Truncated { kind: u32, need: usize, got: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
}

/// Reads a `T` from the start of `bytes`, which the caller checked is long enough.
fn read<T: Copy>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>());
    // SAFETY: the length is checked above; `T` is a plain-integer #[repr(C)] type valid
    // for any bit pattern; read_unaligned needs no alignment.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

/// A record of type `T` (kind `kind`) from the start of `bytes`, if they hold one.
fn record<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Truncated {
            kind,
            need,
            got: bytes.len(),
        });
    }
    Ok(read(bytes))
}

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < size_of::<EventHeader>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    let header: EventHeader = read(bytes);
    let k = header.kind;
    Ok(match k {
        kind::THREAD_EXIT => Event::ThreadExit(Box::new(record(bytes, k)?)),
        kind::FORK => Event::Fork(record(bytes, k)?),
        kind::EXEC => Event::Exec(Box::new(record(bytes, k)?)),
        kind::EXIT => Event::Exit(record(bytes, k)?),
        kind::WAIT => Event::Wait(record(bytes, k)?),
        kind::FREE => Event::Free(record(bytes, k)?),
        kind::EXEC_FDS => Event::ExecFds(Box::new(record(bytes, k)?)),
        other => return Err(DecodeError::UnknownKind(other)),
    })
}

impl Event {
    /// Boot-clock time of a lifecycle event, stamped before its record was reserved: the
    /// key the rings are merged by. A thread exit (switch accounting, stamped with the
    /// switch programs' own clock and about no process's lifecycle) is 0: it is handed
    /// over as soon as it is read.
    pub fn ts(&self) -> u64 {
        match self {
            Event::ThreadExit(_) => 0,
            Event::Fork(e) => e.header.ts,
            Event::Exec(e) => e.header.ts,
            Event::Exit(e) => e.header.ts,
            Event::Wait(e) => e.header.ts,
            Event::Free(e) => e.header.ts,
            Event::ExecFds(e) => e.header.ts,
        }
    }
}

#[cfg(test)]
mod tests {
    use proclens_common::switch::ThreadSwitches;
    use proptest::{collection::vec, prelude::*, sample::Index};

    use super::*;

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: viewing a plain #[repr(C)] value as bytes.
        unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref::<T>(v).cast::<u8>(), size_of::<T>())
        }
        .to_vec()
    }

    #[test]
    fn thread_exit_round_trips() {
        let ev = ThreadExit {
            header: EventHeader {
                kind: kind::THREAD_EXIT,
                tid: 42,
                ts: 7,
            },
            stats: ThreadSwitches {
                tgid: 40,
                voluntary: 3,
                involuntary: 2,
                ..Default::default()
            },
            comm: *b"sleep\0\0\0\0\0\0\0\0\0\0\0",
        };
        assert_eq!(decode(&bytes_of(&ev)), Ok(Event::ThreadExit(Box::new(ev))));
    }

    #[test]
    fn lifecycle_events_round_trip() {
        use proclens_common::lifecycle::{TaskRef, exit_flags};
        let t = |pid, tgid| TaskRef {
            pid,
            tgid,
            start_ns: 99,
        };
        let fork = Fork {
            header: EventHeader {
                kind: kind::FORK,
                tid: 11,
                ts: 1,
            },
            creator: t(10, 10),
            child: t(11, 11),
            parent: t(10, 10),
            comm: *b"sh\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            ..Default::default()
        };
        assert_eq!(decode(&bytes_of(&fork)), Ok(Event::Fork(fork)));
        let mut exec = Exec {
            header: EventHeader {
                kind: kind::EXEC,
                tid: 11,
                ts: 2,
            },
            task: t(11, 11),
            ..Default::default()
        };
        exec.filename[..7].copy_from_slice(b"/bin/ls");
        assert_eq!(decode(&bytes_of(&exec)), Ok(Event::Exec(Box::new(exec))));
        let exit = Exit {
            header: EventHeader {
                kind: kind::EXIT,
                tid: 11,
                ts: 3,
            },
            task: t(11, 11),
            parent: t(10, 10),
            exit_code: 3 << 8,
            flags: exit_flags::GROUP_DEAD,
            reaper: t(1, 1),
            ..Default::default()
        };
        assert_eq!(decode(&bytes_of(&exit)), Ok(Event::Exit(exit)));
        let wait = Wait {
            header: EventHeader {
                kind: kind::WAIT,
                tid: 10,
                ts: 4,
            },
            waiter: t(10, 10),
            target_pid: 11,
            _pad: 0,
            reaped_ptr: 0xffff_8881_0000_2000,
        };
        assert_eq!(decode(&bytes_of(&wait)), Ok(Event::Wait(wait)));
        let free = Free {
            header: EventHeader {
                kind: kind::FREE,
                tid: 0,
                ts: 5,
            },
            task_ptr: 0xffff_8881_0000_4000,
        };
        assert_eq!(decode(&bytes_of(&free)), Ok(Event::Free(free)));
        // Each kind cut one byte short is an error.
        for b in [
            bytes_of(&fork),
            bytes_of(&exec),
            bytes_of(&exit),
            bytes_of(&wait),
            bytes_of(&free),
        ] {
            assert!(matches!(
                decode(&b[..b.len() - 1]),
                Err(DecodeError::Truncated { .. })
            ));
        }
    }

    #[test]
    fn malformed_events_are_errors() {
        assert_eq!(decode(&[]), Err(DecodeError::Short(0)));
        assert_eq!(decode(&[1, 0, 0]), Err(DecodeError::Short(3)));
        let h = EventHeader {
            kind: 999,
            tid: 1,
            ts: 0,
        };
        assert_eq!(decode(&bytes_of(&h)), Err(DecodeError::UnknownKind(999)));
        let h = EventHeader {
            kind: kind::THREAD_EXIT,
            tid: 1,
            ts: 0,
        };
        assert!(matches!(
            decode(&bytes_of(&h)),
            Err(DecodeError::Truncated { .. })
        ));
    }

    /// The size `decode` needs for a record of `kind`, or `None` for an unknown kind.
    fn size_of_kind(k: u32) -> Option<usize> {
        Some(match k {
            kind::THREAD_EXIT => size_of::<ThreadExit>(),
            kind::FORK => size_of::<Fork>(),
            kind::EXEC => size_of::<Exec>(),
            kind::EXIT => size_of::<Exit>(),
            kind::WAIT => size_of::<Wait>(),
            kind::FREE => size_of::<Free>(),
            kind::EXEC_FDS => size_of::<ExecFds>(),
            _ => return None,
        })
    }

    /// A value of a plain-integer #[repr(C)] type (valid for any bit pattern) from bytes.
    fn pod_from<T: Copy>(bytes: &[u8]) -> T {
        assert_eq!(bytes.len(), size_of::<T>());
        // SAFETY: as in `read`: the length is checked, every bit pattern is a valid `T`.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
    }

    /// An event of kind `k` with every other field random, as the kernel would submit it:
    /// its bytes and the event `decode` must return for them.
    fn random_event(k: u32, fill: &[u8]) -> (Vec<u8>, Event) {
        fn make<T: Copy>(
            fill: &[u8],
            k: u32,
            header: fn(&mut T) -> &mut EventHeader,
            wrap: fn(T) -> Event,
        ) -> (Vec<u8>, Event) {
            let mut v: T = pod_from(&fill[..size_of::<T>()]);
            header(&mut v).kind = k;
            (bytes_of(&v), wrap(v))
        }
        match k {
            kind::THREAD_EXIT => make::<ThreadExit>(
                fill,
                k,
                |v| &mut v.header,
                |v| Event::ThreadExit(Box::new(v)),
            ),
            kind::FORK => make::<Fork>(fill, k, |v| &mut v.header, Event::Fork),
            kind::EXEC => make::<Exec>(fill, k, |v| &mut v.header, |v| Event::Exec(Box::new(v))),
            kind::EXIT => make::<Exit>(fill, k, |v| &mut v.header, Event::Exit),
            kind::WAIT => make::<Wait>(fill, k, |v| &mut v.header, Event::Wait),
            kind::FREE => make::<Free>(fill, k, |v| &mut v.header, Event::Free),
            kind::EXEC_FDS => {
                make::<ExecFds>(fill, k, |v| &mut v.header, |v| Event::ExecFds(Box::new(v)))
            }
            other => unreachable!("no event kind {other}"),
        }
    }

    const KINDS: [u32; 7] = [
        kind::THREAD_EXIT,
        kind::FORK,
        kind::EXEC,
        kind::EXIT,
        kind::WAIT,
        kind::FREE,
        kind::EXEC_FDS,
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any byte string decodes to an event exactly when it is long enough for a known
        /// kind, and otherwise to the matching error; never a panic.
        #[test]
        fn proptest_decode_arbitrary_bytes(
            mut bytes in vec(any::<u8>(), 0..2 * size_of::<ExecFds>()),
            real_kind in any::<Index>(),
        ) {
            // Half the time the first word is a real kind, so the length checks run too.
            if bytes.len() >= 4 && real_kind.index(2) == 0 {
                let k = KINDS[real_kind.index(KINDS.len())];
                bytes[..4].copy_from_slice(&k.to_ne_bytes());
            }
            let got = decode(&bytes);
            if bytes.len() < size_of::<EventHeader>() {
                prop_assert_eq!(got, Err(DecodeError::Short(bytes.len())));
            } else {
                let k = u32::from_ne_bytes(bytes[..4].try_into().unwrap());
                match size_of_kind(k) {
                    None => prop_assert_eq!(got, Err(DecodeError::UnknownKind(k))),
                    Some(need) if bytes.len() < need => prop_assert_eq!(
                        got,
                        Err(DecodeError::Truncated { kind: k, need, got: bytes.len() })
                    ),
                    Some(_) => prop_assert!(got.is_ok(), "{got:?}"),
                }
            }
        }

        /// An event of every kind with random fields round-trips through `decode`, also
        /// with trailing bytes after it, and every truncation of it is an error.
        #[test]
        fn proptest_events_round_trip_and_truncations_fail(
            fill in vec(any::<u8>(), size_of::<ExecFds>()),
            tail in vec(any::<u8>(), 0..16),
        ) {
            for k in KINDS {
                let (bytes, ev) = random_event(k, &fill);
                prop_assert_eq!(decode(&bytes), Ok(ev.clone()));
                let mut longer = bytes.clone();
                longer.extend_from_slice(&tail);
                prop_assert_eq!(decode(&longer), Ok(ev));
                for len in 0..bytes.len() {
                    prop_assert!(decode(&bytes[..len]).is_err(), "kind {} cut to {} bytes", k, len);
                }
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap exhaustive-ish sweep: every length up to two events, every first byte.
        for len in 0..2 * size_of::<Exec>() {
            for first in [0u8, 1, 2, 3, 4, 5, 6, 7, 255] {
                let mut b = vec![0xa5u8; len];
                if let Some(x) = b.first_mut() {
                    *x = first;
                }
                let _ = decode(&b);
            }
        }
    }
}
