//! The families labelled by process attribution: switches, times, the run-queue
//! histogram, blocked time by syscall, syscalls, copy paths, forks, zombies and
//! interrupts.

use proclens_common::switch::RUNQ_BUCKETS;
use prometheus_client::{
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
};

use super::{LabelVec, counter_family, gauge_family, seconds_family};
use crate::model::{
    copies::{Class, kind_name, op_name},
    exporter::{ExporterState, Labels, PathKey},
    histogram::Hist,
};

fn with_kind(l: &Labels, key: &'static str, kind: &str) -> LabelVec {
    let mut v = l.pairs();
    v.push((key, kind.to_string()));
    v
}

/// The run-queue histogram's buckets as prometheus-client takes them: each bucket's own
/// count (the encoder makes them cumulative) against its upper bound in seconds. Bucket
/// `i` holds waits in `[2^i, 2^(i+1))` µs; the last one also holds every longer wait, so
/// its bound is `+Inf` and its cumulative count is `_count`.
pub(super) fn runq_buckets(hist: &Hist) -> Vec<(f64, u64)> {
    hist.iter()
        .enumerate()
        .map(|(i, &n)| {
            let le = if i + 1 == RUNQ_BUCKETS {
                f64::INFINITY
            } else {
                (1u64 << (i + 1)) as f64 / 1e6
            };
            (le, n)
        })
        .collect()
}

pub(super) fn encode(
    st: &ExporterState,
    enc: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let s = &st.series;
    counter_family(
        enc,
        "proclens_context_switches",
        "Context switches out of a task, by the kernel's rule: voluntary (blocked) or involuntary (preempted)",
        s.iter().flat_map(|(l, v)| {
            [
                (with_kind(l, "kind", "voluntary"), v.voluntary),
                (with_kind(l, "kind", "involuntary"), v.involuntary),
            ]
        }),
    )?;
    counter_family(
        enc,
        "proclens_switches_in",
        "Switches onto a CPU by where they came from: same_process (address space kept), cross_process (address space changed), idle_or_kernel",
        s.iter().flat_map(|(l, v)| {
            [
                (with_kind(l, "from", "same_process"), v.same_in),
                (with_kind(l, "from", "cross_process"), v.cross_in),
                (with_kind(l, "from", "idle_or_kernel"), v.idle_kernel_in),
            ]
        }),
    )?;
    seconds_family(
        enc,
        "proclens_oncpu_seconds",
        "Time running on a CPU",
        s.iter().map(|(l, v)| (l.pairs(), v.oncpu_ns)),
    )?;
    seconds_family(
        enc,
        "proclens_blocked_seconds",
        "Time blocked (off CPU after a voluntary switch, until woken)",
        s.iter().map(|(l, v)| (l.pairs(), v.blocked_ns)),
    )?;
    seconds_family(
        enc,
        "proclens_runqueue_wait_seconds",
        "Time runnable but waiting for a CPU",
        s.iter().map(|(l, v)| (l.pairs(), v.runq_ns)),
    )?;
    {
        let mut m = enc.encode_descriptor(
            "proclens_runqueue_latency_seconds",
            "Run-queue latency (wakeup or preemption to running), log2 buckets from 2 us; the last finite bound is ~67 s",
            None,
            MetricType::Histogram,
        )?;
        for (l, v) in s {
            let count: u64 = v.runq_hist.iter().sum();
            m.encode_family(&l.pairs())?
                .encode_histogram::<NoLabelSet>(
                    v.runq_ns as f64 / 1e9,
                    count,
                    &runq_buckets(&v.runq_hist),
                    None,
                )?;
        }
    }
    encode_blocked(st, enc)?;
    encode_extras(st, enc)?;
    encode_irq(st, enc)
}

/// Blocked time and voluntary switches by the syscall each block began in: only when
/// blocks are charged to syscalls. The `syscall` label is a bounded set (see
/// `model::exporter::blocked`).
fn encode_blocked(st: &ExporterState, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    if !st.blocked_in_counted {
        return Ok(());
    }
    let series = || {
        st.blocked_in.iter().flat_map(|(l, by)| {
            by.iter()
                .map(move |(syscall, b)| (with_kind(l, "syscall", syscall), b))
        })
    };
    seconds_family(
        enc,
        "proclens_blocked_in_seconds",
        "Time blocked (as proclens_blocked_seconds) by the syscall each block began in: one of the usual waits (epoll_wait, poll, futex, read, recvmsg, nanosleep, wait4, io_uring_enter...), other (any other syscall), outside_syscall (a page fault, a stop on the way back to user mode), unknown (kernels before 5.15)",
        series().map(|(l, b)| (l, b.ns)),
    )?;
    counter_family(
        enc,
        "proclens_blocked_in_switches",
        "Voluntary switches that began blocks, labelled as proclens_blocked_in_seconds",
        series().map(|(l, b)| (l, b.switches)),
    )
}

/// Syscalls, copy paths, forks and zombies.
fn encode_extras(st: &ExporterState, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    if st.syscalls_counted {
        counter_family(
            enc,
            "proclens_syscalls",
            "Syscalls made (each one a user->kernel mode switch)",
            st.syscalls.iter().map(|(l, v)| (l.pairs(), *v)),
        )?;
    }
    if st.copies_counted {
        let path_labels = |l: &Labels, k: &PathKey| {
            let mut v = l.pairs();
            v.extend([
                ("syscall", op_name(k.op).to_string()),
                ("class", Class::of(k.op, k.src, k.dst).as_str().to_string()),
                ("src", kind_name(k.src).to_string()),
                ("dst", kind_name(k.dst).to_string()),
            ]);
            v
        };
        let paths = || {
            st.copies
                .iter()
                .flat_map(|(l, ps)| ps.iter().map(move |(k, c)| (l, k, c)))
        };
        counter_family(
            enc,
            "proclens_copy_bytes",
            "Bytes moved by copy-family syscalls (their return values) by syscall, class (user_copy: copied through user memory; in_kernel_copy: copied inside the kernel; zero_copy: pages referenced, not copied; mmap: mapped length) and fd kind on each side",
            paths().map(|(l, k, c)| (path_labels(l, k), c.bytes)),
        )?;
        counter_family(
            enc,
            "proclens_copy_calls",
            "Successful copy-family syscalls, labelled as proclens_copy_bytes",
            paths().map(|(l, k, c)| (path_labels(l, k), c.calls)),
        )?;
        counter_family(
            enc,
            "proclens_copy_errors",
            "Failed copy-family syscalls (would-blocks and interruptions apart), labelled as proclens_copy_bytes",
            paths().map(|(l, k, c)| (path_labels(l, k), c.errors)),
        )?;
        counter_family(
            enc,
            "proclens_copy_would_block",
            "Copy-family syscalls that returned EAGAIN (a non-blocking fd with nothing to do), labelled as proclens_copy_bytes",
            paths().map(|(l, k, c)| (path_labels(l, k), c.would_block)),
        )?;
        counter_family(
            enc,
            "proclens_copy_interrupted",
            "Copy-family syscalls interrupted by a signal (EINTR, or restarted by the kernel), labelled as proclens_copy_bytes",
            paths().map(|(l, k, c)| (path_labels(l, k), c.interrupted)),
        )?;
    }
    counter_family(
        enc,
        "proclens_forks",
        "Tasks created, by the creating process: kind=process (fork, clone without CLONE_THREAD) or thread",
        st.forks.iter().flat_map(|(l, f)| {
            [
                (with_kind(l, "kind", "process"), f.processes),
                (with_kind(l, "kind", "thread"), f.threads),
            ]
        }),
    )?;
    counter_family(
        enc,
        "proclens_child_exits",
        "Child processes that died, by parent",
        st.forks.iter().map(|(l, f)| (l.pairs(), f.child_exits)),
    )?;
    counter_family(
        enc,
        "proclens_child_failures",
        "Child processes that exited with a non-zero code or were killed by a signal, by parent",
        st.forks.iter().map(|(l, f)| (l.pairs(), f.child_failures)),
    )?;
    if let Some(zombies) = &st.zombies {
        gauge_family(
            enc,
            "proclens_zombies",
            "Zombies held now (children dead for at least 1 s and not waited for), by parent command; proclens_system_zombies has them all",
            zombies.iter().map(|(l, n)| {
                let mut labels = vec![("parent_comm", l.parent_comm.clone())];
                if let Some(pid) = l.parent_pid {
                    labels.push(("parent_pid", pid.to_string()));
                }
                (labels, *n as i64)
            }),
        )?;
        gauge_family(
            enc,
            "proclens_zombie_cgroup_pids",
            "Tasks (pids.current, zombies included) in the pids controller that limits each cgroup whose processes hold zombies now: of the cgroup and its ancestors, the one with the fewest pids left (the nearest where none has a limit)",
            st.zombie_cgroups
                .iter()
                .map(|c| (vec![("cgroup", c.cgroup.clone())], c.current as i64)),
        )?;
        gauge_family(
            enc,
            "proclens_zombie_cgroup_pids_max",
            "The limit (pids.max) of the cgroups in proclens_zombie_cgroup_pids; absent when unlimited",
            st.zombie_cgroups
                .iter()
                .filter_map(|c| Some((vec![("cgroup", c.cgroup.clone())], c.max? as i64))),
        )?;
    }
    Ok(())
}

/// Interrupts by CPU and kind, and the time they took from each label set: only when
/// they are traced. Label values are bounded by the machine (CPUs, vectors, IRQ lines)
/// and, for the stolen time, by the label sets every other family has.
pub(super) fn encode_irq(
    st: &ExporterState,
    enc: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let Some(irq) = &st.irq else {
        return Ok(());
    };
    let soft = |(cpu, v): &(u32, &str)| vec![("cpu", cpu.to_string()), ("vector", v.to_string())];
    let hard = |(cpu, row, name): &(u32, String, String)| {
        vec![
            ("cpu", cpu.to_string()),
            ("irq", row.clone()),
            ("name", name.clone()),
        ]
    };
    counter_family(
        enc,
        "proclens_softirqs",
        "Softirqs run, by CPU and vector (as /proc/softirqs counts them)",
        irq.softirqs.iter().map(|(k, v)| (soft(k), v.0)),
    )?;
    seconds_family(
        enc,
        "proclens_softirq_seconds",
        "Time in softirq handlers, by CPU and vector (hard IRQs nested in them left out)",
        irq.softirqs.iter().map(|(k, v)| (soft(k), v.1)),
    )?;
    counter_family(
        enc,
        "proclens_hardirqs",
        "Hard IRQs handled, by CPU, /proc/interrupts row (IRQ line or x86 system vector) and name",
        irq.hardirqs.iter().map(|(k, v)| (hard(k), v.0)),
    )?;
    seconds_family(
        enc,
        "proclens_hardirq_seconds",
        "Time in hard IRQ handlers, by CPU, /proc/interrupts row and name",
        irq.hardirqs.iter().map(|(k, v)| (hard(k), v.1)),
    )?;
    seconds_family(
        enc,
        "proclens_irq_stolen_seconds",
        "Interrupt time taken from processes: hard IRQs and softirqs that ran while one of them was current (kind=hard|soft; ksoftirqd's own softirqs are not a loss)",
        st.irq_stolen.iter().flat_map(|(l, t)| {
            [
                (with_kind(l, "kind", "hard"), t.hard_ns),
                (with_kind(l, "kind", "soft"), t.soft_ns),
            ]
        }),
    )?;
    Ok(())
}
