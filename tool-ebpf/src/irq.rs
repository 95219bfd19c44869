//! Interrupt context: every hard IRQ handler and softirq timed, counted per CPU and per
//! kind, and its time charged to the process it interrupted (its victim).
//!
//! BTF tracepoints `irq_handler_entry`/`_exit` (the handlers of numbered IRQ lines),
//! `softirq_entry`/`_exit`, and on x86 the `irq_vectors` ones of the system vectors that
//! fire on every machine (the local timer, rescheduling, function-call and IRQ-work
//! interrupts), which do not go through an IRQ line.
//!
//! The time is `bpf_ktime_get_ns`. The switch programs read the run queue's clock instead,
//! but that clock only moves when the scheduler updates it under the run-queue lock: an
//! interrupt handler does not, so the clock read at a handler's exit is most often the one
//! read at its entry.
//!
//! What runs on a CPU at a time, and what is charged to whom:
//! - a hard IRQ handler never nests in another (interrupts stay disabled while one runs),
//!   so one start time per CPU is enough; a shared line runs several handlers for one
//!   interrupt, counted once (see [`try_line_entry`]);
//! - a softirq runs when a hard IRQ exits, when a task re-enables bottom halves, or in
//!   ksoftirqd; hard IRQs may nest in it. Their time is taken off the softirq's, so no
//!   time is counted twice;
//! - the victim is the task current on the CPU: for a hard IRQ always, for a softirq
//!   unless that task is the CPU's ksoftirqd, whose softirqs are its own work (as the
//!   kernel's IRQ time accounting has it). Time taken from the idle task is kept per CPU.
//!
//! Every victim costs one per-CPU hash update per handler. The task current on the CPU
//! is remembered with its process (tgid and start) and whether it is ksoftirqd, so a run
//! of interrupts of one task reads nothing of it.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
    },
    macros::{btf_tracepoint, map},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use proclens_common::{
    copies::ProcKey,
    counters,
    irq::{
        CpuIrq, IrqStats, SOFT_OPENING, SOFTIRQS as VECTORS, Stolen, VICTIM_KSOFTIRQD, VictimCache,
        dur_bucket, vector,
    },
};

use crate::{
    config, filter,
    maps::{count, gave_up},
    task::{field, probe, process_start},
};

/// Per CPU, each softirq vector's count, time and durations.
#[map]
static SOFTIRQS: PerCpuArray<IrqStats> = PerCpuArray::with_max_entries(VECTORS as u32, 0);

/// Per CPU, each IRQ line's (by number, `config::irq_lines()` of them) and then each
/// system vector's count, time and durations. Sized by the loader.
#[map]
static IRQ_LINES: PerCpuArray<IrqStats> = PerCpuArray::with_max_entries(256 + vector::COUNT, 0);

/// Per CPU, the handlers in progress, the victim cache and what no process paid for.
#[map]
static CPU_IRQ: PerCpuArray<CpuIrq> = PerCpuArray::with_max_entries(1, 0);

/// Interrupt time per victim process; per CPU, summed by userspace. Bounded: a victim
/// that finds it full is counted in `COUNTERS[VICTIM_MAP_FULL]`, and userspace deletes the
/// entries of processes that have gone after their last report. Sized by the loader.
#[map]
static VICTIMS: PerCpuHashMap<ProcKey, Stolen> = PerCpuHashMap::with_max_entries(8192, 0);

const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = -17;
/// `PF_KTHREAD` (include/linux/sched.h, unchanged since 2.6.27).
const PF_KTHREAD: u32 = 0x0020_0000;
/// `IrqStats` slot of a hard IRQ that has none (a line beyond those sized).
const NO_SLOT: u32 = u32::MAX;

#[btf_tracepoint(function = "irq_handler_entry")]
pub fn irq_handler_entry(ctx: BtfTracePointContext) -> u32 {
    // TP_PROTO(int irq, struct irqaction *action)
    let irq: u64 = ctx.arg(0);
    let action: u64 = ctx.arg(1);
    if try_line_entry(&ctx, irq as u32, action).is_err() {
        no_cpu_state(&ctx, "irq_handler_entry");
    }
    0
}

#[btf_tracepoint(function = "irq_handler_exit")]
pub fn irq_handler_exit(ctx: BtfTracePointContext) -> u32 {
    // TP_PROTO(int irq, struct irqaction *action, int ret)
    let action: u64 = ctx.arg(1);
    let next = if action == 0 {
        0
    } else {
        field(action, config::irqaction_next_off())
    };
    if try_hard_exit(&ctx, next).is_err() {
        no_cpu_state(&ctx, "irq_handler_exit");
    }
    0
}

#[btf_tracepoint(function = "softirq_entry")]
pub fn softirq_entry(ctx: BtfTracePointContext) -> u32 {
    // TP_PROTO(unsigned int vec_nr)
    let vec: u64 = ctx.arg(0);
    if try_soft_entry(vec as u32).is_err() {
        no_cpu_state(&ctx, "softirq_entry");
    }
    0
}

#[btf_tracepoint(function = "softirq_exit")]
pub fn softirq_exit(ctx: BtfTracePointContext) -> u32 {
    let vec: u64 = ctx.arg(0);
    if try_soft_exit(&ctx, vec as u32).is_err() {
        no_cpu_state(&ctx, "softirq_exit");
    }
    0
}

/// Logs that `program` found no per-CPU IRQ state (`CPU_IRQ`), the one way its `try_*`
/// body fails.
#[inline(always)]
fn no_cpu_state<C: EbpfContext>(ctx: &C, program: &str) {
    gave_up(ctx, program, "no per-CPU IRQ state");
}

/// The programs of the x86 system vectors' tracepoints (`TP_PROTO(int vector)`): one
/// entry and one exit per tracepoint, each knowing its /proc/interrupts row.
macro_rules! vector_programs {
    ($($entry:ident, $exit:ident => $vec:expr;)*) => {
        $(
            // Named after its tracepoint, which userspace gives at load.
            #[btf_tracepoint]
            pub fn $entry(ctx: BtfTracePointContext) -> u32 {
                if try_vector_entry($vec).is_err() {
                    no_cpu_state(&ctx, stringify!($entry));
                }
                0
            }

            #[btf_tracepoint]
            pub fn $exit(ctx: BtfTracePointContext) -> u32 {
                if try_hard_exit(&ctx, 0).is_err() {
                    no_cpu_state(&ctx, stringify!($exit));
                }
                0
            }
        )*
    };
}

vector_programs! {
    local_timer_entry, local_timer_exit => vector::LOC;
    reschedule_entry, reschedule_exit => vector::RES;
    call_function_entry, call_function_exit => vector::CAL;
    call_function_single_entry, call_function_single_exit => vector::CAL;
    irq_work_entry, irq_work_exit => vector::IWI;
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// This CPU's state.
#[inline(always)]
fn cpu() -> Result<&'static mut CpuIrq, i32> {
    // SAFETY: the per-CPU slot belongs to this CPU while a program runs on it; the
    // fields a nested interrupt's program also writes are accessed through `get`/`set`.
    CPU_IRQ.get_ptr_mut(0).map(|p| unsafe { &mut *p }).ok_or(-1)
}

/// A field that a hard IRQ's programs, nesting in a softirq's, may change under it: read
/// and written exactly where the code says, never cached or reordered by the compiler.
#[inline(always)]
fn get(f: &u64) -> u64 {
    // SAFETY: a plain read of a valid field.
    unsafe { core::ptr::read_volatile(f) }
}

#[inline(always)]
fn set(f: &mut u64, v: u64) {
    // SAFETY: a plain write of a valid field.
    unsafe { core::ptr::write_volatile(f, v) }
}

#[inline(always)]
fn stats(map: &PerCpuArray<IrqStats>, slot: u32) -> Option<&'static mut IrqStats> {
    // SAFETY: this CPU's slot, see `cpu`.
    map.get_ptr_mut(slot).map(|p| unsafe { &mut *p })
}

#[inline(always)]
fn record(s: &mut IrqStats, ns: u64) {
    s.ns += ns;
    if let Some(b) = s.hist.get_mut(dur_bucket(ns)) {
        *b += 1;
    }
}

/// A handler of IRQ line `irq` begins. On a shared line the kernel runs every handler of
/// the line for one interrupt (with interrupts disabled throughout) and counts the
/// interrupt once; a handler is the next one of the same interrupt exactly when it is the
/// `next` of the handler that returned last on this CPU (the chain's last has none), and
/// is then timed but not counted again.
#[inline(always)]
fn try_line_entry<C: EbpfContext>(ctx: &C, irq: u32, action: u64) -> Result<(), i32> {
    let st = cpu()?;
    let chained = action != 0 && st.chain_next == action;
    st.chain_next = 0;
    if irq < config::irq_lines() {
        st.hard_slot = irq;
        if !chained && let Some(s) = stats(&IRQ_LINES, irq) {
            s.count += 1;
        }
    } else {
        st.hard_slot = NO_SLOT;
        if !chained {
            count(ctx, counters::IRQ_UNTRACKED);
        }
    }
    st.hard_start = now();
    Ok(())
}

#[inline(always)]
fn try_vector_entry(vec: u32) -> Result<(), i32> {
    let st = cpu()?;
    let slot = config::irq_lines() + vec;
    st.hard_slot = slot;
    st.chain_next = 0;
    if let Some(s) = stats(&IRQ_LINES, slot) {
        s.count += 1;
    }
    st.hard_start = now();
    Ok(())
}

/// A hard IRQ handler returns; `next` is the next handler of a shared line's chain (0: the
/// last, or a system vector).
#[inline(always)]
fn try_hard_exit<C: EbpfContext>(ctx: &C, next: u64) -> Result<(), i32> {
    let now = now();
    let st = cpu()?;
    let start = st.hard_start;
    st.hard_start = 0;
    st.chain_next = next;
    if start == 0 || start > now {
        // Attached while the handler ran.
        return Ok(());
    }
    let ns = now - start;
    if let Some(s) = stats(&IRQ_LINES, st.hard_slot) {
        record(s, ns);
    }
    if get(&st.soft_start) != 0 {
        // Nested in a softirq (or in the few instructions around one; see `try_soft_exit`):
        // counted here, and taken off the softirq's time.
        let nested = get(&st.nested_now_ns) + ns;
        set(&mut st.nested_now_ns, nested);
        st.totals.nested += 1;
        st.totals.nested_ns += ns;
    }
    charge(ctx, st, Kind::Hard, ns);
    Ok(())
}

/// A softirq begins. It is marked as begun before its start time is read, so that a hard
/// IRQ landing in between is taken off it rather than counted twice (the kernel can run a
/// hard IRQ here: softirqs, and these programs, run with interrupts enabled).
#[inline(always)]
fn try_soft_entry(vec: u32) -> Result<(), i32> {
    let st = cpu()?;
    if vec < VECTORS as u32
        && let Some(s) = stats(&SOFTIRQS, vec)
    {
        s.count += 1;
    }
    st.soft_vec = vec;
    set(&mut st.nested_now_ns, 0);
    set(&mut st.soft_start, SOFT_OPENING);
    let start = now();
    set(&mut st.soft_start, start);
    Ok(())
}

/// A softirq ends: its time is from its start to now, less the hard IRQs that nested in
/// it. The end is read before the nested time, and the softirq is closed after: a hard IRQ
/// landing between the two reads is taken off although it came after the end (an
/// undercount of at most one handler, never a double count).
#[inline(always)]
fn try_soft_exit<C: EbpfContext>(ctx: &C, vec: u32) -> Result<(), i32> {
    let end = now();
    let st = cpu()?;
    let start = get(&st.soft_start);
    let nested = get(&st.nested_now_ns);
    set(&mut st.soft_start, 0);
    if start <= SOFT_OPENING || start > end || st.soft_vec != vec {
        // Attached while it ran.
        return Ok(());
    }
    let ns = (end - start).saturating_sub(nested);
    if let Some(s) = stats(&SOFTIRQS, vec) {
        record(s, ns);
    }
    charge(ctx, st, Kind::Soft, ns);
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Hard,
    Soft,
}

/// Charges `ns` of interrupt time to the current task's process: to the idle task's or
/// ksoftirqd's per-CPU figures, to untraced tasks' (proclens itself, tasks outside
/// `--cgroup`), else to its victim entry.
#[inline(always)]
fn charge<C: EbpfContext>(ctx: &C, st: &mut CpuIrq, kind: Kind, ns: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if pid_tgid as u32 == 0 {
        match kind {
            Kind::Hard => st.totals.idle_hard_ns += ns,
            Kind::Soft => st.totals.idle_soft_ns += ns,
        }
        return;
    }
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let v = victim(st, task, tgid);
    if kind == Kind::Soft && v.flags & VICTIM_KSOFTIRQD != 0 {
        st.totals.ksoftirqd_soft_ns += ns;
        return;
    }
    if !filter::traced_tgid(tgid) || !filter::current_in_cgroup() {
        match kind {
            Kind::Hard => st.totals.untraced_hard_ns += ns,
            Kind::Soft => st.totals.untraced_soft_ns += ns,
        }
        return;
    }
    let key = ProcKey {
        tgid,
        _pad: 0,
        start_ns: v.start_ns,
    };
    if let Some(s) = VICTIMS.get_ptr_mut(&key) {
        // SAFETY: this CPU's slot; a nested hard IRQ's program adds to the other fields.
        add(unsafe { &mut *s }, kind, ns);
        return;
    }
    let mut fresh = Stolen {
        comm: bpf_get_current_comm().unwrap_or_default(),
        ..Stolen::default()
    };
    add(&mut fresh, kind, ns);
    // BPF_NOEXIST: another CPU (or a hard IRQ nested in this softirq) may have made the
    // entry since the lookup; then this CPU's slot of it takes the time.
    match VICTIMS.insert(&key, &fresh, BPF_NOEXIST) {
        Ok(()) => {}
        Err(EEXIST) => {
            if let Some(s) = VICTIMS.get_ptr_mut(&key) {
                // SAFETY: as above.
                add(unsafe { &mut *s }, kind, ns);
            }
        }
        Err(_) => count(ctx, counters::VICTIM_MAP_FULL),
    }
}

#[inline(always)]
fn add(s: &mut Stolen, kind: Kind, ns: u64) {
    match kind {
        Kind::Hard => {
            s.hard += 1;
            s.hard_ns += ns;
        }
        Kind::Soft => {
            s.soft += 1;
            s.soft_ns += ns;
        }
    }
}

/// The current task's process and kind: from this CPU's cache when the task is the one
/// last charged, else read and cached. The cache is invalidated before it is rewritten, so
/// a nested hard IRQ's program never reads half of it.
#[inline(always)]
fn victim(st: &mut CpuIrq, task: u64, tgid: u32) -> VictimCache {
    let c = &mut st.victim;
    if get(&c.task) == task && c.tgid == tgid {
        return *c;
    }
    let fresh = VictimCache {
        task,
        tgid,
        flags: if is_ksoftirqd(task) {
            VICTIM_KSOFTIRQD
        } else {
            0
        },
        start_ns: process_start(task),
    };
    set(&mut c.task, 0);
    c.tgid = fresh.tgid;
    c.flags = fresh.flags;
    set(&mut c.start_ns, fresh.start_ns);
    set(&mut c.task, task);
    fresh
}

/// Whether `task` (the current task) is a ksoftirqd: a kernel thread named `ksoftirqd/N`
/// (no user task can set `PF_KTHREAD`, whatever it calls itself).
#[inline(always)]
fn is_ksoftirqd(task: u64) -> bool {
    let flags: u32 = probe(task, config::irq_task_flags_off()).unwrap_or(0);
    if flags & PF_KTHREAD == 0 {
        return false;
    }
    let Ok(comm) = bpf_get_current_comm() else {
        return false;
    };
    let want = b"ksoftirqd/";
    let mut i = 0;
    while i < want.len() {
        if comm[i] != want[i] {
            return false;
        }
        i += 1;
    }
    true
}
