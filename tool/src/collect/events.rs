//! The event rings (one per CPU), read as one stream merged by time. Decoding is the
//! model's (`model::event`).

use std::task::Poll;

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

use crate::model::event::{Event, decode};

/// The event rings (one per CPU), readable from an async loop as one stream.
///
/// A process's events may come from several CPUs (forked on one, exiting on another), so
/// a drain reads every ring and hands the events over in time order: a merge of the
/// rings, each in its CPU's order already, taking the earliest of their next events one
/// at a time. A fork is stamped with its child's start time, set before the child can
/// run, so it comes before anything the child does.
pub struct EventStream {
    fds: Vec<AsyncFd<RingBuf<MapData>>>,
    /// Records that could not be decoded (a bug or a version mismatch; never expected).
    pub malformed: u64,
}

impl EventStream {
    pub fn new(rings: Vec<RingBuf<MapData>>) -> std::io::Result<Self> {
        let fds = rings
            .into_iter()
            // SAFETY: the ring buffer owns its fd for as long as the AsyncFd owns it.
            .map(|ring| {
                unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
                    .map_err(std::io::Error::from)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self { fds, malformed: 0 })
    }

    /// Waits until a ring has events, then hands every pending event to `f`, in time
    /// order, as [`EventStream::drain_each`] does.
    pub async fn recv_each(&mut self, f: impl FnMut(Event)) -> std::io::Result<()> {
        std::future::poll_fn(|cx| {
            let mut ready = false;
            for fd in &mut self.fds {
                match fd.poll_read_ready_mut(cx) {
                    // Cleared before the drain below reads everything: a record that
                    // comes later wakes the next call.
                    Poll::Ready(Ok(mut guard)) => {
                        guard.clear_ready();
                        ready = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if ready {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await?;
        self.drain_each(f);
        Ok(())
    }

    /// Hands what is pending now to `f`, without waiting. With several rings, in time
    /// order: the next event is the earliest of the rings' next ones.
    pub fn drain_each(&mut self, mut f: impl FnMut(Event)) {
        if let [fd] = &mut self.fds[..] {
            self.malformed += drain_with(fd.get_mut(), &mut f);
            return;
        }
        let rings: Vec<&mut RingBuf<MapData>> =
            self.fds.iter_mut().map(|fd| fd.get_mut()).collect();
        self.malformed += merge(rings, f);
    }
}

/// The next event of `ring`, skipping (and counting in `malformed`) what does not decode.
fn next_event(ring: &mut RingBuf<MapData>, malformed: &mut u64) -> Option<Event> {
    while let Some(item) = ring.next() {
        match decode(&item) {
            Ok(ev) => return Some(ev),
            Err(_) => *malformed += 1,
        }
    }
    None
}

/// Hands the events of `rings` (each in its CPU's time order) to `f` in time order, until
/// all are empty; returns how many records did not decode. Events of one time keep the
/// order of their rings.
fn merge(mut rings: Vec<&mut RingBuf<MapData>>, mut f: impl FnMut(Event)) -> u64 {
    let mut malformed = 0;
    let mut heads: Vec<Option<Event>> = rings
        .iter_mut()
        .map(|r| next_event(r, &mut malformed))
        .collect();
    while let Some(i) = earliest(&heads) {
        if let Some(ev) = heads[i].take() {
            f(ev);
        }
        heads[i] = next_event(rings[i], &mut malformed);
    }
    malformed
}

/// The index of the earliest event among `heads`, the first of equals.
fn earliest(heads: &[Option<Event>]) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for (i, h) in heads.iter().enumerate() {
        if let Some(ev) = h {
            let ts = ev.ts();
            if best.is_none_or(|(_, b)| ts < b) {
                best = Some((i, ts));
            }
        }
    }
    best.map(|(i, _)| i)
}

/// Hands every event of `ring` to `f`; returns how many records did not decode.
fn drain_with(ring: &mut RingBuf<MapData>, f: &mut impl FnMut(Event)) -> u64 {
    let mut malformed = 0;
    while let Some(ev) = next_event(ring, &mut malformed) {
        f(ev);
    }
    malformed
}

#[cfg(test)]
mod tests {
    use proclens_common::{
        event::{EventHeader, kind},
        lifecycle::{Free, Wait},
    };

    use super::*;

    #[test]
    fn the_earliest_head_goes_first_and_ties_keep_ring_order() {
        let at = |ts| {
            Some(Event::Free(Free {
                header: EventHeader {
                    kind: kind::FREE,
                    tid: 0,
                    ts,
                },
                task_ptr: ts,
            }))
        };
        assert_eq!(earliest(&[]), None);
        assert_eq!(earliest(&[None, None]), None);
        assert_eq!(earliest(&[at(7), None, at(5), at(9)]), Some(2));
        assert_eq!(earliest(&[None, at(5), at(5)]), Some(1));
        // A wait is not timed (0): it goes at once.
        let wait = Some(Event::Wait(Wait::default()));
        assert_eq!(earliest(&[at(1), wait]), Some(1));
    }
}
