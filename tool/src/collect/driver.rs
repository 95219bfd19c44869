//! The one driver every view runs on: it owns the event rings, the kernel side's log, the
//! signals that end a view and its clocks, and yields what happened next as a [`Step`].
//! A view is a loop over [`Driver::next`]: it never sets up its own streams, handlers or
//! timers, so a fix here (a late event, a final drain) reaches every view.

use std::{task::Poll, time::Duration};

use anyhow::{Context as _, Result};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{Signal, SignalKind, signal},
    time::{Instant, Interval, MissedTickBehavior},
};

use super::{events::EventStream, log::KernelLog, tracer::Tracer};
use crate::model::event::Event;

/// What happened next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// An interval ended (the report clock).
    Tick,
    /// The short poll clock ticked (views that watch ages and states between reports).
    Poll,
    /// Events arrived and were handed to the sink.
    Events,
    /// The deadline set with [`Driver::stop_after`] passed (once).
    Deadline,
    /// A signal that asks proclens to stop.
    Signal(Sig),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    Interrupt,
    Terminate,
    Hangup,
}

/// How a view waits for the figures still to come after its end (`run`, once its command
/// was reaped): [`Driver::settle`] looks every `soon` while the end itself is a few ms
/// away, then every `poll`; once the end is in, stragglers get `grace`; and it stops at
/// `limit` in all, with what it has.
#[derive(Debug, Clone, Copy)]
pub struct Settle {
    pub limit: Duration,
    pub soon: Duration,
    pub poll: Duration,
    pub grace: Duration,
}

/// What a settling check found.
#[derive(Debug)]
pub enum Settled<T> {
    /// Everything is in.
    Done(T),
    /// The end itself is still to come, within a few ms: look again [`Settle::soon`].
    Awaiting,
    /// The end is not in yet: look again at [`Settle::poll`].
    Pending(T),
    /// The end is in, stragglers are not: they get [`Settle::grace`] from the first time.
    Stragglers(T),
}

pub struct Driver {
    stream: EventStream,
    log: Option<AsyncFd<KernelLog>>,
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
    ticks: Option<Interval>,
    poll: Option<Interval>,
    deadline: Option<Instant>,
}

/// A clock that first ticks one period from now (a report covers a whole interval) and
/// does not catch up on ticks missed under load.
fn clock(period: Duration) -> Interval {
    let mut i = tokio::time::interval_at(Instant::now() + period, period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

impl Driver {
    /// Takes the tracer's event rings (and log); ticks every `interval` when given. Call
    /// it inside the tokio runtime, after the tracer is attached.
    pub fn new(tracer: &mut Tracer, interval: Option<Duration>) -> Result<Self> {
        let stream = EventStream::new(tracer.take_events().context("event rings already taken")?)?;
        #[allow(
            clippy::result_large_err,
            reason = "tokio's error hands the logger back; it becomes an io::Error at once"
        )]
        let log = tracer
            .take_log()
            // SAFETY: the logger owns its ring's fd for as long as the AsyncFd owns it.
            .map(|l| unsafe { AsyncFd::register_with_interest(l, Interest::READABLE) })
            .transpose()
            .map_err(std::io::Error::from)?;
        Ok(Self {
            stream,
            log,
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            ticks: interval.map(clock),
            poll: None,
            deadline: None,
        })
    }

    /// Also yields [`Step::Poll`] every `period`.
    pub fn poll_every(mut self, period: Duration) -> Self {
        self.poll = Some(clock(period));
        self
    }

    /// Also yields [`Step::Deadline`], once, `wait` from now (a view that observes for a
    /// while, then reports).
    pub fn stop_after(&mut self, wait: Duration) {
        self.deadline = Some(Instant::now() + wait);
    }

    /// Waits for the next step; events that arrive are handed to `sink` one at a time, in
    /// time order, as they are decoded. Cancel-safe: a step not yet returned loses nothing.
    pub async fn next(&mut self, sink: &mut impl FnMut(Event)) -> Result<Step> {
        loop {
            let step = tokio::select! {
                biased;
                _ = self.interrupt.recv() => Step::Signal(Sig::Interrupt),
                _ = self.terminate.recv() => Step::Signal(Sig::Terminate),
                _ = self.hangup.recv() => Step::Signal(Sig::Hangup),
                () = passed(self.deadline) => {
                    self.deadline = None;
                    Step::Deadline
                }
                () = tick(&mut self.ticks) => Step::Tick,
                () = tick(&mut self.poll) => Step::Poll,
                r = self.stream.recv_each(&mut *sink) => {
                    r?;
                    Step::Events
                }
                r = readable(&mut self.log) => {
                    r?;
                    continue;
                }
            };
            return Ok(step);
        }
    }

    /// Polls `check` as `policy` says until it is [`Settled::Done`], or the stragglers'
    /// grace or the limit has passed; returns what the last check found. `check` is told
    /// whether the limit has passed (it then no longer awaits the end). Signals wait.
    pub async fn settle<T>(
        &mut self,
        policy: &Settle,
        mut check: impl FnMut(&mut Self, bool) -> Result<Settled<T>>,
    ) -> Result<T> {
        let limit = Instant::now() + policy.limit;
        let mut stragglers_since: Option<Instant> = None;
        loop {
            let wait = match check(self, Instant::now() > limit)? {
                Settled::Done(t) => return Ok(t),
                Settled::Awaiting => policy.soon,
                Settled::Pending(t) | Settled::Stragglers(t) if Instant::now() > limit => {
                    return Ok(t);
                }
                Settled::Pending(_) => policy.poll,
                Settled::Stragglers(t) => {
                    let now = Instant::now();
                    if now > *stragglers_since.get_or_insert(now) + policy.grace {
                        return Ok(t);
                    }
                    policy.poll
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Hands the events pending now to `sink`, without waiting (before a report, so that
    /// it holds everything that happened up to it).
    pub fn drain(&mut self, sink: &mut impl FnMut(Event)) {
        self.stream.drain_each(sink);
        if let Some(log) = &mut self.log {
            log.get_mut().flush();
        }
    }

    /// Boot-clock time before which every event has been handed to the sink: a check
    /// against /proc made earlier can judge the process table.
    pub fn watermark(&self) -> u64 {
        self.stream.watermark()
    }
}

/// The next tick of `clock`, or never without one.
async fn tick(clock: &mut Option<Interval>) {
    match clock {
        Some(c) => {
            c.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// When `deadline` has passed; never without one.
async fn passed(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Prints the log records waiting, once the log is readable; never without a log.
async fn readable(log: &mut Option<AsyncFd<KernelLog>>) -> std::io::Result<()> {
    let Some(log) = log else {
        return std::future::pending().await;
    };
    std::future::poll_fn(|cx| match log.poll_read_ready_mut(cx) {
        Poll::Ready(Ok(mut guard)) => {
            guard.get_inner_mut().flush();
            guard.clear_ready();
            Poll::Ready(Ok(()))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    })
    .await
}
