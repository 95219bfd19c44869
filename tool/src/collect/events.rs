//! Decoding ring-buffer events. Everything that crosses the kernel boundary is checked:
//! a short or unknown record is an error, never a panic or a transmute.

use std::mem::size_of;

use aya::maps::{MapData, RingBuf};
use proclens_common::event::{EventHeader, ThreadExit, kind};
use tokio::io::{Interest, unix::AsyncFd};

/// A decoded ring-buffer event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    ThreadExit(ThreadExit),
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

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < size_of::<EventHeader>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    let header: EventHeader = read(bytes);
    let need = match header.kind {
        kind::THREAD_EXIT => size_of::<ThreadExit>(),
        other => return Err(DecodeError::UnknownKind(other)),
    };
    if bytes.len() < need {
        return Err(DecodeError::Truncated {
            kind: header.kind,
            need,
            got: bytes.len(),
        });
    }
    Ok(match header.kind {
        kind::THREAD_EXIT => Event::ThreadExit(read(bytes)),
        _ => unreachable!("kind checked above"),
    })
}

/// The ring buffer, readable from an async loop.
pub struct EventStream {
    fd: AsyncFd<RingBuf<MapData>>,
    /// Records that could not be decoded (a bug or a version mismatch; never expected).
    pub malformed: u64,
}

impl EventStream {
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        // SAFETY: the ring buffer owns its fd for as long as the AsyncFd owns the ring buffer.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Self { fd, malformed: 0 })
    }

    /// Waits until events are pending, then decodes them all into `sink`.
    pub async fn recv(&mut self, sink: &mut Vec<Event>) -> std::io::Result<()> {
        let mut guard = self.fd.readable_mut().await?;
        let inner = guard.get_inner_mut();
        let malformed = drain_into(inner, sink);
        guard.clear_ready();
        self.malformed += malformed;
        Ok(())
    }

    /// Decodes what is pending now, without waiting.
    pub fn drain(&mut self, sink: &mut Vec<Event>) {
        self.malformed += drain_into(self.fd.get_mut(), sink);
    }
}

fn drain_into(ring: &mut RingBuf<MapData>, sink: &mut Vec<Event>) -> u64 {
    let mut malformed = 0;
    while let Some(item) = ring.next() {
        match decode(&item) {
            Ok(ev) => sink.push(ev),
            Err(_) => malformed += 1,
        }
    }
    malformed
}

#[cfg(test)]
mod tests {
    use proclens_common::switch::ThreadSwitches;

    use super::*;

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: viewing a plain #[repr(C)] value as bytes.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
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
        };
        assert_eq!(decode(&bytes_of(&ev)), Ok(Event::ThreadExit(ev)));
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

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap exhaustive-ish sweep: every length up to two events, every first byte.
        for len in 0..2 * size_of::<ThreadExit>() {
            for first in [0u8, 1, 2, 255] {
                let mut b = vec![0xa5u8; len];
                if let Some(x) = b.first_mut() {
                    *x = first;
                }
                let _ = decode(&b);
            }
        }
    }
}
