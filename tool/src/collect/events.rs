//! The event rings (one per CPU, up to eight), read as one stream merged by time up to a
//! watermark. Decoding is the model's (`model::event`).

use std::{collections::VecDeque, os::fd::AsFd as _, task::Poll};

use aya::maps::{MapData, RingBuf};
use memmap2::{Mmap, MmapOptions};
use tokio::io::{Interest, unix::AsyncFd};

use super::procfs;
use crate::model::event::{Event, decode};

/// The event rings, readable from an async loop as one stream in causal order.
///
/// A process's events come from several CPUs (forked on one, exiting on another), and a
/// ring may hold several CPUs' events (CPU *c* writes ring *c* mod 8), so neither the
/// rings nor one ring are in time order. What the process table needs is that an event
/// never comes before one it follows from (a child's exit before its fork). Every event is
/// stamped before its record is reserved, and whatever follows from an event happens
/// after its record is committed; so an event stamped at *t* may be handed over once
/// every record committed before *t* has been read. A ring seen empty (its producer
/// position equal to proclens's consumer position) at a check made after reading the
/// clock at *t* has had every record reserved before *t* read: *t* is its watermark, and
/// the stream's watermark is the earliest of the rings'. Events are read as they come and
/// held until the watermark passes them, then handed over earliest first.
pub struct EventStream {
    rings: Vec<Ring>,
    /// Per ring, the events read and not yet handed over, in the ring's order.
    held: Vec<VecDeque<Event>>,
    /// The watermark of the last drain: every event stamped before it has been handed
    /// over.
    mark: u64,
    /// Records that could not be decoded (a bug or a version mismatch; never expected).
    pub malformed: u64,
}

struct Ring {
    fd: AsyncFd<RingBuf<MapData>>,
    /// The ring's consumer and producer pages, mapped read-only: whether it is empty.
    positions: Mmap,
    page: usize,
    /// Boot-clock time before the last check that found the ring empty.
    empty_at: u64,
}

impl Ring {
    /// Whether every record reserved in the ring has been read.
    #[allow(
        clippy::cast_ptr_alignment,
        reason = "the positions mapping is page-aligned and the words sit at offsets 0 and `page`"
    )]
    fn empty(&self) -> bool {
        // SAFETY: both pages are mapped for the life of `positions`; the positions are
        // 8-byte aligned words the kernel and aya update atomically.
        unsafe {
            let cons = &*self
                .positions
                .as_ptr()
                .cast::<std::sync::atomic::AtomicU64>();
            let prod = &*self
                .positions
                .as_ptr()
                .add(self.page)
                .cast::<std::sync::atomic::AtomicU64>();
            prod.load(std::sync::atomic::Ordering::Acquire)
                == cons.load(std::sync::atomic::Ordering::Acquire)
        }
    }

    /// Reads what the ring holds into `held`; then, if it is empty, moves its watermark.
    /// Under a storm records keep coming: it reads again, a few times, until it finds the
    /// ring empty.
    fn read(&mut self, held: &mut VecDeque<Event>, malformed: &mut u64) {
        for _ in 0..4 {
            let ring = self.fd.get_mut();
            while let Some(item) = ring.next() {
                match decode(&item) {
                    Ok(ev) => held.push_back(ev),
                    Err(_) => *malformed += 1,
                }
            }
            // The clock first: an empty ring at the check has had every record reserved
            // before this time read.
            let now = procfs::boot_ns();
            if self.empty() {
                self.empty_at = now;
                return;
            }
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

impl EventStream {
    pub fn new(rings: Vec<RingBuf<MapData>>) -> std::io::Result<Self> {
        let page = page_size();
        let rings = rings
            .into_iter()
            .map(|ring| {
                // SAFETY: a read-only shared mapping of the ring's two position pages,
                // which the kernel allows to any holder of the map's fd.
                let positions = unsafe { MmapOptions::new().len(2 * page).map(&ring.as_fd()) }?;
                // SAFETY: the ring buffer owns its fd for as long as the AsyncFd owns it.
                let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
                    .map_err(std::io::Error::from)?;
                Ok(Ring {
                    fd,
                    positions,
                    page,
                    empty_at: 0,
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self {
            held: rings.iter().map(|_| VecDeque::new()).collect(),
            mark: 0,
            rings,
            malformed: 0,
        })
    }

    /// Waits until a ring has events, then hands over what is due, as
    /// [`EventStream::drain_each`] does.
    pub async fn recv_each(&mut self, f: impl FnMut(Event)) -> std::io::Result<()> {
        std::future::poll_fn(|cx| {
            let mut ready = false;
            for r in &mut self.rings {
                match r.fd.poll_read_ready_mut(cx) {
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

    /// Reads every ring, then hands `f` the events the watermark has passed, earliest
    /// first, without waiting. The rings are read twice: the second reading moves their
    /// watermarks past everything the first one read, so a drain hands over all that was
    /// there when it began (what arrives during it may wait for the next one).
    pub fn drain_each(&mut self, f: impl FnMut(Event)) {
        for _ in 0..2 {
            for (r, held) in self.rings.iter_mut().zip(&mut self.held) {
                r.read(held, &mut self.malformed);
            }
        }
        let mark = self.rings.iter().map(|r| r.empty_at).min().unwrap_or(0);
        self.mark = self.mark.max(mark);
        release(&mut self.held, self.mark, f);
    }

    /// Boot-clock time before which every event has been handed over (as of the last
    /// drain).
    pub fn watermark(&self) -> u64 {
        self.mark
    }

    /// Events read and held back by the watermark.
    #[allow(
        dead_code,
        reason = "shown by tests and the views that report stream health"
    )]
    pub fn held(&self) -> usize {
        self.held.iter().map(VecDeque::len).sum()
    }
}

/// Hands over the held events stamped before `mark`, the earliest head first. Events of
/// one ring keep their order: one stamped before another's reservation is never
/// overtaken by it.
fn release(held: &mut [VecDeque<Event>], mark: u64, mut f: impl FnMut(Event)) {
    if let [h] = held {
        while h.front().is_some_and(|e| e.ts() < mark) {
            f(h.pop_front().expect("a front"));
        }
        return;
    }
    while let Some(i) = earliest(held.iter().map(VecDeque::front))
        && held[i].front().is_some_and(|e| e.ts() < mark)
    {
        f(held[i].pop_front().expect("a front"));
    }
}

/// The index of the earliest event among `heads`, the first of equals.
fn earliest<'a>(heads: impl Iterator<Item = Option<&'a Event>>) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for (i, h) in heads.enumerate() {
        if let Some(ev) = h {
            let ts = ev.ts();
            if best.is_none_or(|(_, b)| ts < b) {
                best = Some((i, ts));
            }
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests;
