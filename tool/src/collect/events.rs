//! The event rings (one per CPU, up to eight), read as one stream merged by time up to a
//! watermark. Decoding is the model's (`model::event`).

use std::{
    collections::VecDeque,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::{Arc, Mutex},
};

use aya::maps::{MapData, RingBuf};
use memmap2::{Mmap, MmapOptions};
use tokio::sync::Notify;

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
    inner: Arc<Mutex<Inner>>,
    /// Told by the reader thread after each batch it read.
    ready: Arc<Notify>,
    /// Written to stop the reader thread.
    stop: OwnedFd,
    reader: Option<std::thread::JoinHandle<()>>,
    /// The watermark of the last drain: every event stamped before it has been handed
    /// over.
    mark: u64,
}

/// The rings and what was read from them, shared by the reader thread and the drains.
struct Inner {
    rings: Vec<Ring>,
    /// Per ring, the events read and not yet handed over, in the ring's order.
    held: Vec<VecDeque<Event>>,
}

struct Ring {
    buf: RingBuf<MapData>,
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
    fn read(&mut self, held: &mut VecDeque<Event>) {
        for _ in 0..4 {
            while let Some(item) = self.buf.next() {
                match decode(&item) {
                    Ok(ev) => held.push_back(ev),
                    // A bug or a version mismatch between proclens and its object: never
                    // expected, told by the logger (`--log-level warn`).
                    Err(e) => log::warn!("a ring record did not decode, dropped: {e}"),
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

impl Inner {
    /// Reads every ring `times` times (see [`EventStream::drain_each`]).
    fn read(&mut self, times: usize) {
        for _ in 0..times {
            for (r, held) in self.rings.iter_mut().zip(&mut self.held) {
                r.read(held);
            }
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// The reader thread: it empties the rings whenever the kernel wakes it (a ring's backlog
/// passed its threshold), whatever the views' thread is busy with (a report under a fork
/// storm can take a good part of a second, in which a ring would fill), and tells the
/// views' thread. It stops when `stop` is written.
fn read_rings(inner: &Mutex<Inner>, ready: &Notify, epoll: &OwnedFd, stop: RawFd) {
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 16];
    loop {
        // SAFETY: epoll_wait on an epoll fd this thread's owner keeps open, into `evs`.
        let n =
            unsafe { libc::epoll_wait(epoll.as_raw_fd(), evs.as_mut_ptr(), evs.len() as i32, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if evs[..n as usize].iter().any(|e| e.u64 == stop as u64) {
            return;
        }
        match inner.lock() {
            Ok(mut g) => g.read(1),
            Err(_) => return,
        }
        ready.notify_one();
    }
}

/// An epoll set of the rings' fds (edge-triggered: the kernel's wakeups, not every record)
/// and `stop`'s.
fn epoll_of(fds: &[RawFd], stop: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: epoll_create1 has no preconditions; the fd is owned from here.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nothing else owns.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    for &fd in fds.iter().chain([&stop]) {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: fd as u64,
        };
        // SAFETY: adds an open fd to the epoll set with a valid event.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &raw mut ev) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(ep)
}

impl EventStream {
    pub fn new(rings: Vec<RingBuf<MapData>>) -> std::io::Result<Self> {
        let page = page_size();
        let rings = rings
            .into_iter()
            .map(|buf| {
                // SAFETY: a read-only shared mapping of the ring's two position pages,
                // which the kernel allows to any holder of the map's fd.
                let positions = unsafe { MmapOptions::new().len(2 * page).map(&buf.as_fd()) }?;
                Ok(Ring {
                    buf,
                    positions,
                    page,
                    empty_at: 0,
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let fds: Vec<RawFd> = rings.iter().map(|r| r.buf.as_fd().as_raw_fd()).collect();
        // SAFETY: eventfd has no preconditions; the fd is owned from here.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if stop < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nothing else owns.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        let epoll = epoll_of(&fds, stop.as_raw_fd())?;
        let inner = Arc::new(Mutex::new(Inner {
            held: rings.iter().map(|_| VecDeque::new()).collect(),
            rings,
        }));
        let ready = Arc::new(Notify::new());
        let reader = {
            let (inner, ready, stop) = (inner.clone(), ready.clone(), stop.as_raw_fd());
            std::thread::Builder::new()
                .name("proclens-rings".into())
                .spawn(move || read_rings(&inner, &ready, &epoll, stop))?
        };
        Ok(Self {
            inner,
            ready,
            stop,
            reader: Some(reader),
            mark: 0,
        })
    }

    /// Waits until the reader thread has read events, then hands over what is due, as
    /// [`EventStream::drain_each`] does. Cancel-safe: a wait cancelled keeps nothing.
    pub async fn recv_each(&mut self, f: impl FnMut(Event)) -> std::io::Result<()> {
        self.ready.notified().await;
        self.drain_each(f);
        Ok(())
    }

    /// Reads every ring, then hands `f` the events the watermark has passed, earliest
    /// first, without waiting. The rings are read twice: the second reading moves their
    /// watermarks past everything the first one read, so a drain hands over all that was
    /// there when it began (what arrives during it may wait for the next one). `f` runs
    /// after the rings are let go, so that the reader thread never waits for it.
    pub fn drain_each(&mut self, f: impl FnMut(Event)) {
        let due = {
            let Ok(mut g) = self.inner.lock() else {
                return;
            };
            g.read(2);
            let mark = g.rings.iter().map(|r| r.empty_at).min().unwrap_or(0);
            self.mark = self.mark.max(mark);
            let mut due = Vec::new();
            release(&mut g.held, self.mark, |e| due.push(e));
            g.held.iter_mut().for_each(crate::model::spare::deque);
            due
        };
        due.into_iter().for_each(f);
    }

    /// Boot-clock time before which every event has been handed over (as of the last
    /// drain).
    pub fn watermark(&self) -> u64 {
        self.mark
    }
}

impl Drop for EventStream {
    /// Stops the reader thread (before the rings close).
    fn drop(&mut self) {
        let one = 1u64;
        // SAFETY: an 8-byte write to the eventfd this stream owns.
        unsafe { libc::write(self.stop.as_raw_fd(), (&raw const one).cast(), 8) };
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
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
