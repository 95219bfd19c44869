//! Real BPF: `proclens irq`'s counts and victims against the kernel's own counters
//! (/proc/softirqs, /proc/interrupts, /proc/PID/schedstat).
//!
//! Loopback traffic is steered to CPU 1 with Receive Packet Steering: a flood sent from
//! CPU 0 is received in `NET_RX` on CPU 1, where a CPU-bound process (the victim) runs.
mod common;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use common::{
    Bounded as _, can_trace,
    exporter::{Server, sample_sum, scrape},
    irq::{
        FloodedSpinner, KsoftirqdBoost, Report, Reports, RpsGuard, StatCpu,
        config_irq_time_accounting, interrupts, ksoftirqd, runtime_ns, softirqs, stat_cpus,
        user_hz_ns,
    },
    now_unix,
    workload::Workload,
};

workload_entry!();

const VECTORS: [&str; 10] = [
    "HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU",
];

/// The kernel's counters, read together.
struct Counters {
    softirqs: Vec<[u64; 10]>,
    interrupts: BTreeMap<String, Vec<u64>>,
    at: f64,
}

fn counters() -> Counters {
    Counters {
        softirqs: softirqs(),
        interrupts: interrupts(),
        at: now_unix(),
    }
}

/// Interrupts on the numbered IRQ lines so far, all CPUs (`/proc/interrupts`).
fn line_interrupts_so_far() -> u64 {
    std::fs::read_to_string("/proc/interrupts")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(row, _)| row.trim().parse::<u32>().is_ok())
        .flat_map(|(_, rest)| {
            rest.split_whitespace()
                .map_while(|n| n.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Some hard IRQs on a line: a file written and synced (a disk interrupt per request)
/// and, for machines without a disk (the kernel matrix's guests), a few lines on the
/// console, whose serial port raises an interrupt per few bytes sent. Returns once the
/// kernel has counted some: the serial port's come when QEMU gets to send the bytes,
/// which may be after `write` returns (the guest's console once had none counted yet
/// when the test read the counters right after).
fn line_interrupts() {
    let before = line_interrupts_so_far();
    let path = std::env::temp_dir().join(format!("proclens-irq-{}", std::process::id()));
    for _ in 0..20 {
        std::fs::write(&path, [7u8; 4096]).unwrap();
        std::fs::File::open(&path).unwrap().sync_all().unwrap();
    }
    let _ = std::fs::remove_file(&path);
    if let Ok(mut console) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
        use std::io::Write as _;
        for _ in 0..4 {
            let _ = writeln!(
                console,
                "proclens irq test: interrupts from the serial line"
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while line_interrupts_so_far() == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Checks `got` against the kernel's bracket `low..=high` for one CPU and kind. The upper
/// bound is exact. The lower bound is exact but for one thing the kernel does: while a
/// `bpf()` map call runs on a CPU (a lookup, an update, a batch read: the kernel holds
/// `bpf_prog_active` for it), the interrupts that arrive on that CPU, and the softirqs they
/// run on their way out, run no BPF program, and a tracing program's recursion-miss counter
/// does not count them. Measured on the development VM (6.18) under a flood steered to
/// CPU 1: with a loop of `bpftool map dump` pinned to CPU 1, 11 of 7,899 `NET_RX` there ran
/// no program of proclens's (and 14 of 6,496 none of bpftrace's), with the same loop on
/// CPU 0 none of 7,534; with nothing else using BPF, bpftrace missed none of 13,507 while
/// perf counted them all. So the map reads of any BPF user on the machine (proclens's
/// own, each report; other tools and test runs on a shared machine: bpftrace once missed
/// 1.6% of CPU 1's `NET_RX` while other work ran) make the programs miss the busiest kinds
/// of the CPUs they run on: here `NET_RX` and `CAL` (the flood's IPIs) of CPU 1. A
/// shortfall of at most 2% (or 2) is allowed for that and said; anything more fails.
fn bracketed(what: &str, got: u64, low: u64, high: u64) {
    assert!(
        got <= high,
        "{what}: proclens counted {got}, more than the kernel's {high}"
    );
    if got >= low {
        return;
    }
    let short = low - got;
    assert!(
        short * 50 <= low || short <= 2,
        "{what}: proclens counted {got}, the kernel at least {low}"
    );
    eprintln!("{what}: {short} of {low} not seen by the BPF programs");
}

/// Counts since proclens attached are bracketed exactly by the kernel's counters: what
/// happened between a read made once proclens had reported (so after it attached) and a
/// read made before its next snapshot is in its totals; its totals hold nothing from
/// before a read made before it started, nor after a read made once it reported. The
/// bracket's width is what happened while proclens started and reported, per CPU and
/// kind; the flood's `NET_RX` and the file's and console's interrupts fall inside its lower
/// bound.
#[test]
fn counts_per_cpu_and_kind_are_bracketed_by_the_kernels_counters() {
    if !can_trace() {
        return;
    }
    let _rps = RpsGuard::steer_to(1);
    let mut flood = Workload::spawn("udp-flood:700");
    let a = counters();
    let mut p = Reports::spawn(&["irq", "--json", "--interval", "0.5"]);
    p.next();
    let b = counters();
    flood.go();
    line_interrupts();
    let (c, r, d) = around_next_report(&mut p);
    let vectors = r.system["vectors"].as_array().unwrap();
    assert!(
        !cfg!(target_arch = "x86_64") || vectors.len() == 4,
        "the x86 system vectors are timed: {vectors:?}"
    );
    // Every row proclens times: the lines, and the system vectors it says it times.
    let timed = |row: &str| row.parse::<u32>().is_ok() || vectors.iter().any(|v| v == row);
    Brackets { a, b, c, d }.check(
        "",
        |cpu, name| r.softirqs.get(&(cpu, name.to_string())).map_or(0, |t| t.0),
        |cpu, row| {
            r.hardirqs
                .get(&(cpu, row.to_string()))
                .copied()
                .unwrap_or(0)
        },
        timed,
    );
    p.p.signal(libc::SIGINT);
    assert!(p.p.wait(Duration::from_secs(10)).success());
}

/// Each hard IRQ row is named as /proc/interrupts names it: a line by its handlers (the
/// row's last column, `a, b` for a shared line), a system vector by its description. And
/// each kind's histogram holds one duration per handler run: summed over every report since
/// proclens started, per CPU and kind, the histogram has exactly as many durations as the
/// count for softirqs and system vectors, but for a handler running at the last snapshot
/// (counted at its entry, timed at its exit: one per CPU and kind at most), and at least as
/// many for an IRQ line (a shared line's handlers are each timed, the interrupt counted
/// once).
#[test]
fn hard_irqs_are_named_as_proc_interrupts_and_histograms_hold_every_run() {
    if !can_trace() {
        return;
    }
    let _rps = RpsGuard::steer_to(1);
    let mut flood = Workload::spawn("udp-flood:700");
    let mut p = Reports::spawn(&["irq", "--json", "--interval", "0.5"]);
    let mut reports = vec![p.next()];
    flood.go();
    line_interrupts();
    let end = now_unix();
    loop {
        let r = p.next();
        let after = r.time > end;
        reports.push(r);
        if after {
            break;
        }
    }
    p.p.signal(libc::SIGINT);
    assert!(p.p.wait(Duration::from_secs(10)).success());
    let text = std::fs::read_to_string("/proc/interrupts").unwrap();
    let last = reports.last().unwrap();
    let mut lines_named = 0;
    for (row, name) in &last.hard_names {
        let line = text
            .lines()
            .find(|l| l.split_once(':').is_some_and(|(r, _)| r.trim() == row))
            .unwrap_or_else(|| panic!("no /proc/interrupts row {row}"));
        let want = if row.parse::<u32>().is_ok() {
            lines_named += 1;
            name.replace(',', ", ")
        } else {
            name.clone()
        };
        assert!(
            !want.is_empty() && line.trim_end().ends_with(&want),
            "row {row} named {name:?}; /proc/interrupts: {line:?}"
        );
    }
    assert!(
        lines_named > 0,
        "no IRQ line reported: {:?}",
        last.hard_names
    );
    let mut sums: BTreeMap<(usize, String), (u64, u64)> = BTreeMap::new();
    for r in &reports {
        for (key, (count, hist)) in &r.intervals {
            let e = sums.entry(key.clone()).or_default();
            e.0 += count;
            e.1 += hist.iter().sum::<u64>();
        }
    }
    for ((cpu, kind), (count, timed)) in &sums {
        if kind.parse::<u32>().is_ok() {
            assert!(
                timed + 1 >= *count,
                "CPU {cpu} IRQ {kind}: {count} counted, {timed} timed"
            );
        } else {
            assert!(
                timed.abs_diff(*count) <= 1,
                "CPU {cpu} {kind}: {count} counted, {timed} in its histogram"
            );
        }
    }
    eprintln!(
        "{} rows named, {} (CPU, kind) histograms checked",
        last.hard_names.len(),
        sums.len()
    );
}

/// `serve`'s interrupt counters are bracketed by the kernel's as the irq view's are (see
/// above): its totals at a collection made after one read of the kernel's counters and
/// before the next. A collection made after a time shows in the first scrape whose counts
/// differ from those of a scrape made after that time.
#[test]
fn serves_interrupt_counters_are_bracketed_by_the_kernels_too() {
    if !can_trace() {
        return;
    }
    let _rps = RpsGuard::steer_to(1);
    let mut flood = Workload::spawn("udp-flood:700");
    let a = counters();
    let server = Server::start(&[]);
    let b = counters();
    flood.go();
    line_interrupts();
    let c = counters();
    let softirqs = |body: &str| sample_sum(body, "proclens_softirqs_total", &[]);
    let first = softirqs(&scrape(server.addr));
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let body = scrape(server.addr);
        if softirqs(&body) != first {
            break body;
        }
        assert!(Instant::now() < deadline, "no collection within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    let d = counters();
    Brackets { a, b, c, d }.check(
        "serve: ",
        |cpu, name| {
            let cpu = cpu.to_string();
            sample_sum(
                &body,
                "proclens_softirqs_total",
                &[("cpu", &cpu), ("vector", name)],
            ) as u64
        },
        |cpu, row| {
            let cpu = cpu.to_string();
            sample_sum(
                &body,
                "proclens_hardirqs_total",
                &[("cpu", &cpu), ("irq", row)],
            ) as u64
        },
        |row| row.parse::<u32>().is_ok(),
    );
}

/// The kernel's counters read before proclens started (`a`), once it had attached (`b`),
/// before the snapshot compared (`c`) and after it (`d`): each count proclens reported is
/// at least what happened between `b` and `c` and at most what happened between `a` and
/// `d`, per CPU and kind.
struct Brackets {
    a: Counters,
    b: Counters,
    c: Counters,
    d: Counters,
}

impl Brackets {
    /// Checks proclens's count of every softirq vector (`soft(cpu, vector)`) and of every
    /// `timed` /proc/interrupts row (`hard(cpu, row)`) on every CPU. The flood's `NET_RX`
    /// on CPU 1 and some IRQ line's interrupts must fall inside the lower bounds.
    fn check(
        &self,
        who: &str,
        soft: impl Fn(usize, &str) -> u64,
        hard: impl Fn(usize, &str) -> u64,
        timed: impl Fn(&str) -> bool,
    ) {
        let Self { a, b, c, d } = self;
        let mut checked = 0;
        for (cpu, per) in d.softirqs.iter().enumerate() {
            for (v, name) in VECTORS.iter().enumerate() {
                let low = c.softirqs[cpu][v] - b.softirqs[cpu][v];
                bracketed(
                    &format!("{who}CPU {cpu} {name}"),
                    soft(cpu, name),
                    low,
                    per[v] - a.softirqs[cpu][v],
                );
                checked += 1;
            }
        }
        let net_rx = c.softirqs[1][3] - b.softirqs[1][3];
        assert!(
            net_rx >= 100,
            "{who}the flood raised NET_RX on CPU 1 {net_rx} times"
        );
        let mut lines_seen = 0;
        for (row, per) in d.interrupts.iter().filter(|(row, _)| timed(row)) {
            for (cpu, &now) in per.iter().enumerate() {
                let at = |x: &Counters| x.interrupts.get(row).map_or(0, |v| v[cpu]);
                let low = at(c).saturating_sub(at(b));
                bracketed(
                    &format!("{who}CPU {cpu} IRQ {row}"),
                    hard(cpu, row),
                    low,
                    now - at(a),
                );
                lines_seen += usize::from(row.parse::<u32>().is_ok() && low > 0);
                checked += 1;
            }
        }
        assert!(lines_seen > 0, "{who}no IRQ line fired inside the bracket");
        eprintln!("{who}{checked} (CPU, kind) pairs bracketed; NET_RX on CPU 1: {net_rx}");
    }
}

/// Reads the kernel's counters, then the first report made after them (its snapshot is
/// later than the read), then the counters again.
fn around_next_report(p: &mut Reports) -> (Counters, Report, Counters) {
    p.latest();
    let (before, mut reports, after) = around_next_report_all(p);
    (before, reports.pop().unwrap(), after)
}

/// As [`around_next_report`], without passing over the reports queued before: returns
/// every report read, the last being the first made after the read.
fn around_next_report_all(p: &mut Reports) -> (Counters, Vec<Report>, Counters) {
    let mut reports = Vec::new();
    for _ in 0..20 {
        let before = counters();
        let r = p.next();
        // A report queued before the read (a busy machine delays the reader): the next.
        let after_read = before.at < r.time;
        reports.push(r);
        if after_read {
            return (before, reports, counters());
        }
    }
    panic!("no report came after a read of the counters");
}

/// Runs `f` with this thread pinned to CPU 0 (what it starts inherits that), then lets the
/// thread run anywhere again.
fn on_cpu0<T>(f: impl FnOnce() -> T) -> T {
    common::workload::pin_to_cpu(0);
    let out = f();
    // SAFETY: a cpu_set_t with every CPU set; sched_setaffinity(0) is this thread.
    unsafe {
        let mut all: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut all);
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const all);
    }
    out
}

fn softirqs_on(c: &Counters, cpu: usize) -> u64 {
    c.softirqs[cpu].iter().sum()
}

/// The victim: a process spinning on CPU 1 while CPU 1 receives a flood pays for the
/// softirqs that run there; the same process on CPU 0 once the flood is over pays next to
/// nothing. The kernel keeps no interrupt counts per task, so the oracle is per CPU:
/// - at most every softirq CPU 1 ran while the victim was pinned there;
/// - at least its share of the flood's `NET_RX`, less 5%: the flood's IPIs arrive whatever
///   CPU 1 runs, so the victim is hit by about the share of them that arrive while it
///   runs (its /proc/PID/schedstat run time over the wall time: ~95%, see `spinner`);
///   ksoftirqd, which runs `NET_RX` as its own work when a flood outpaces the CPU, has
///   little to do with the flood's pace (see `udp-flood`), and runs at once when it does
///   (`KsoftirqdBoost`);
/// - in time, at most CPU 1's softirq time over the same reports less ksoftirqd's own
///   (every softirq on CPU 1 that was not ksoftirqd's work ran on it or in the 5% left to
///   other tasks), and at least 90% of its share of that time (see below);
/// - it loses no more time than it ran (its run time includes the interrupts, on
///   kernels without IRQ time accounting);
/// - on the quiet CPU, interrupts take under 2% of its time (the tick's softirqs).
#[test]
fn a_pinned_process_pays_its_cpus_softirqs_and_almost_nothing_on_a_quiet_cpu() {
    if !can_trace() {
        return;
    }
    let mut f = FloodedSpinner::new();
    let pid = f.victim();
    // proclens itself runs on CPU 0 (it inherits this thread's affinity): on CPU 1, where
    // it is not traced, the softirqs that hit it would be no one's loss.
    let mut p =
        on_cpu0(|| Reports::spawn(&["irq", "--json", "--interval", "0.5", "-p", &pid.to_string()]));
    p.next();
    f.spin.start();
    f.spin.wait_for("on 1");
    let taken = |r: &Report, f: &str| r.victim(pid)[f].as_u64().unwrap();
    let lost_ns = |r: &Report| taken(r, "hard_ns_total") + taken(r, "soft_ns_total");
    // Phase A: the f.flood. Ordinary tasks spin on CPU 1 meanwhile (`cpu-contend`): they
    // run only in the 5% of each second the real-time throttling leaves them, where CPU 1
    // would otherwise idle, and the softirqs that hit an idle CPU take longer than the
    // victim's (a woken vCPU, cold caches: on the development VM the idle task once got 21%
    // of CPU 1's softirq time in its ~5% of the run).
    let mut filler = Workload::spawn("cpu-contend:4000");
    filler.start();
    let (a, r0, b) = around_next_report(&mut p);
    let (run0, wall0) = (runtime_ns(pid), Instant::now());
    f.flood.go();
    let (run1, wall1) = (runtime_ns(pid), Instant::now());
    let (c, reports, d) = around_next_report_all(&mut p);
    let r1 = reports.last().unwrap().clone();
    let hit = taken(&r1, "soft_total") - taken(&r0, "soft_total");
    let share = (run1 - run0) as f64 / (wall1 - wall0).as_nanos() as f64;
    let net_rx = c.softirqs[1][3] - b.softirqs[1][3];
    let upper = softirqs_on(&d, 1) - softirqs_on(&a, 1);
    let lower = (0.95 * share * net_rx as f64) as u64;
    let report = format!(
        "the victim ran {:.1}% of the flood's {} ms, was hit by {hit} softirqs ({} ms); CPU 1 ran {net_rx} NET_RX in the flood, {upper} softirqs around it",
        share * 100.0,
        (wall1 - wall0).as_millis(),
        (taken(&r1, "soft_ns_total") - taken(&r0, "soft_ns_total")) / 1_000_000
    );
    eprintln!("{report}");
    assert!(net_rx >= 100, "the flood raised too few NET_RX: {report}");
    assert!(
        (lower..=upper).contains(&hit),
        "softirqs charged to the victim outside {lower}..={upper}: {report}"
    );
    // The time: CPU 1's softirq time over the same interval, less what ksoftirqd ran as
    // its own work, bounds the victim's from above (its process ran on no other CPU).
    // From below, 90% of its share of it: the 5% of each second the real-time throttling
    // leaves other tasks comes in one stretch, while the boosted ksoftirqd is throttled
    // too, so the softirqs that hit them are not a sample of the victim's (on the
    // development VM, loaded by other builds, with the filler above and proclens on
    // CPU 0, the victim's part of CPU 1's softirq time was 93% to 101% of its share of
    // its run time).
    let cpu1 = |r: &Report, f: &str| r.cpu(1)[f].as_u64().unwrap();
    let sum1 = |f: &str| -> u64 { reports.iter().map(|r| cpu1(r, f)).sum() };
    let ksoftirqd = sum1("ksoftirqd_soft_ns");
    let stolen = taken(&r1, "soft_ns_total") - taken(&r0, "soft_ns_total");
    let cpu1_soft = cpu1(&r1, "soft_ns_total") - cpu1(&r0, "soft_ns_total") - ksoftirqd;
    let least = (0.9 * share * cpu1_soft as f64) as u64;
    eprintln!(
        "the victim lost {stolen} ns to softirqs ({:.1}% of CPU 1's, {:.1}% of its share); CPU 1 ran {cpu1_soft} ns of softirqs besides ksoftirqd's {ksoftirqd} ns (idle {} ns, untraced {} ns)",
        100.0 * stolen as f64 / cpu1_soft as f64,
        100.0 * stolen as f64 / (share * cpu1_soft as f64),
        sum1("idle_soft_ns"),
        sum1("untraced_soft_ns")
    );
    assert!(
        (least..=cpu1_soft).contains(&stolen),
        "softirq time charged to the victim {stolen} ns, outside {least}..={cpu1_soft}: {report}"
    );
    if !r1.system["irq_time_accounting"].as_bool().unwrap() {
        let lost = lost_ns(&r1) - lost_ns(&r0);
        let ran = runtime_ns(pid) - run0;
        assert!(
            lost <= ran,
            "the victim lost {lost} ns of its {ran} ns on CPU"
        );
    }
    // Phase B: the same process on CPU 0, no f.flood.
    f.spin.say("cpu 0");
    f.spin.wait_for("on 0");
    let (_, q0, _) = around_next_report(&mut p);
    let (run2, wall2) = (runtime_ns(pid), Instant::now());
    std::thread::sleep(Duration::from_millis(1500));
    let (_, q1, _) = around_next_report(&mut p);
    let (run3, wall3) = (runtime_ns(pid), Instant::now());
    let quiet = taken(&q1, "soft_ns_total") - taken(&q0, "soft_ns_total");
    let ran = run3 - run2;
    eprintln!(
        "on the quiet CPU: {} us of softirqs in its {} ms on CPU ({} ms wall)",
        quiet / 1000,
        ran / 1_000_000,
        (wall3 - wall2).as_millis()
    );
    assert!(
        quiet * 50 <= ran.max(1),
        "softirqs took {quiet} ns of the {ran} ns it ran on a quiet CPU"
    );
    for r in reports.iter().chain([&r0, &q0, &q1]) {
        no_cpu_busier_than_its_interval(r);
    }
    f.spin.say("stop");
    f.spin.wait_done();
    p.p.signal(libc::SIGINT);
    assert!(p.p.wait(Duration::from_secs(10)).success());
}

/// `serve`'s stolen seconds per command name against the irq view, both watching the same
/// flooded spinner from before it spins to after it stops (it is hit by nothing while it
/// waits, not being current): the spinner's comm (`irqspin`, its own) has lost to hard IRQs
/// and softirqs what the irq view charges its process, within 300 ns per interrupt (each
/// instance's window from a handler's entry to its exit holds the other's program at one
/// end: proclens's irq programs take ~130-280 ns a run, BENCHMARKS.md).
#[test]
fn serves_stolen_seconds_per_comm_agree_with_the_irq_view() {
    if !can_trace() {
        return;
    }
    let mut f = FloodedSpinner::new();
    let pid = f.victim();
    let server = Server::start(&["--labels", "comm"]);
    let mut p = Reports::spawn(&["irq", "--json", "--interval", "0.5", "-p", &pid.to_string()]);
    p.next();
    f.spin.start();
    f.spin.wait_for("on 1");
    f.flood.go();
    f.spin.say("stop");
    f.spin.wait_done();
    // Collections made after it stopped: serve collects every 0.3 s, the irq view every 0.5.
    std::thread::sleep(Duration::from_millis(1200));
    p.latest();
    let r = p.next();
    let body = scrape(server.addr);
    p.p.signal(libc::SIGINT);
    assert!(p.p.wait(Duration::from_secs(10)).success());
    let v = r.victim(pid);
    let got = |k: &str| v[k].as_u64().unwrap();
    let comm = common::irq_workloads::SPINNER_COMM;
    let exported = |kind: &str| {
        sample_sum(
            &body,
            "proclens_irq_stolen_seconds_total",
            &[("comm", comm), ("kind", kind)],
        )
    };
    let interrupts = got("soft_total") + got("hard_total");
    eprintln!(
        "irq view {v}; serve: soft {} s, hard {} s",
        exported("soft"),
        exported("hard")
    );
    assert!(
        got("soft_total") >= 1000,
        "the flood hit the spinner too little: {v}"
    );
    // Two tracers, each timing every handler: 300 ns per interrupt for their clocks and
    // program runs. Under emulation (the kernel matrix's guests) also 10% of the figure:
    // while a bpf() map call runs on a CPU, interrupts there run no tracing program (the
    // blind spot the guide's checks describe), each tracer's batch map reads blind the
    // other's programs, and an emulated map read takes milliseconds (the 5.10 guest: 42.8
    // against 45.0 ms).
    let emulated = std::env::var_os("PROCLENS_EMULATED").is_some();
    for kind in ["soft", "hard"] {
        let view = got(&format!("{kind}_ns_total"));
        let served = (exported(kind) * 1e9).round() as u64;
        let slack = 300 * interrupts + if emulated { view / 10 } else { 0 };
        assert!(
            served.abs_diff(view) <= slack,
            "{kind}: serve {served} ns for comm {comm}, the irq view {view} ns (slack {slack})"
        );
    }
}

/// Softirqs ksoftirqd runs are its own work, not a loss: under a flood CPU 1 cannot take
/// in its interrupts' exits, its ksoftirqd (which the kernel runs at the pace of a normal
/// task, here beside a CPU-bound one) runs part of `NET_RX`. proclens keeps that time per
/// CPU, apart from every victim's: ksoftirqd itself is charged no softirq, and its
/// softirq time is no more than it ran (its /proc/PID/schedstat, which may lag by one
/// tick); when it ran at all, some of that time shows.
#[test]
fn ksoftirqds_softirqs_are_its_own_work() {
    if !can_trace() {
        return;
    }
    let _rps = RpsGuard::steer_to(1);
    let k = ksoftirqd(1);
    let mut spin = Workload::spawn("cpu-contend:2500");
    let mut flood = Workload::spawn("udp-burst:1500");
    let mut p = Reports::spawn(&["irq", "--json", "--interval", "0.5", "-p", &k.to_string()]);
    p.next();
    // Its run time around the reports' window: from before the first snapshot to after
    // the last.
    let k0 = runtime_ns(k);
    around_next_report(&mut p);
    spin.start();
    flood.go();
    let end = now_unix();
    let mut own = 0;
    loop {
        let r = p.next();
        own += r.cpu(1)["ksoftirqd_soft_ns"].as_u64().unwrap();
        let v = r.victim(k);
        assert_eq!(v["soft"], 0, "ksoftirqd/1 charged with softirqs: {v}");
        if r.time > end {
            break;
        }
    }
    let ran = runtime_ns(k) - k0;
    spin.wait_done();
    eprintln!(
        "ksoftirqd/1 ran {} us; its softirqs took {} us",
        ran / 1000,
        own / 1000
    );
    // /proc/PID/schedstat gives `sum_exec_runtime` as last brought up to date, at the
    // task's switches and ticks: read while ksoftirqd runs, it lacks up to one tick of the
    // run in progress, 4 ms at HZ=250 (Debian's kernels, this VM).
    assert!(
        own <= ran + 4_000_000,
        "ksoftirqd's softirqs took {own} ns of its {ran} ns"
    );
    if ran >= 5_000_000 {
        assert!(
            own > 0,
            "ksoftirqd ran {ran} ns but none of it was softirqs"
        );
    }
    p.p.signal(libc::SIGINT);
    assert!(p.p.wait(Duration::from_secs(10)).success());
}

/// `run`: a command that spins on CPU 1 while it floods CPU 1 from CPU 0 (`irq-run`)
/// loses to interrupts every softirq CPU 1 runs meanwhile (it runs there at a real-time
/// priority, ksoftirqd boosted above it), and the `NET_RX` its sender runs on CPU 0 in its
/// own context: its report's softirq count is at least 90% of CPU 1's `NET_RX` while it ran
/// (the spinner is current 95% of the time, see `spinner`) and at most every softirq of
/// both CPUs; its time's share of its on-CPU time is its share of the CPU time the kernel
/// reports for the command.
#[test]
fn run_reports_what_interrupts_took_from_the_command() {
    if !can_trace() {
        return;
    }
    let _rps = RpsGuard::steer_to(1);
    let _ksoftirqd = KsoftirqdBoost::on(1);
    let (argv, env) = Workload::auto_command("irq-run:1500");
    let out = std::env::temp_dir().join(format!("proclens-irq-run-{}.json", std::process::id()));
    let before = counters();
    let status = std::process::Command::new(common::PROCLENS)
        .args(["run", "--json", "-o", out.to_str().unwrap(), "--"])
        .args(&argv)
        .envs(env)
        .stdout(std::process::Stdio::null())
        .status_within(common::COMMAND_LIMIT);
    let after = counters();
    assert!(status.success(), "proclens run: {status}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    let i = &report["interrupted"];
    let soft = i["soft"].as_u64().unwrap();
    let net_rx = after.softirqs[1][3] - before.softirqs[1][3];
    let all = softirqs_on(&after, 0) + softirqs_on(&after, 1)
        - softirqs_on(&before, 0)
        - softirqs_on(&before, 1);
    eprintln!("run: {i}; CPU 1 NET_RX {net_rx}, softirqs of both CPUs {all}");
    assert!(
        net_rx >= 100,
        "the command's flood raised {net_rx} NET_RX on CPU 1"
    );
    assert!(
        (net_rx * 9 / 10..=all).contains(&soft),
        "the command was hit by {soft} softirqs: not within 90% of {net_rx}..={all}"
    );
    // Its share of the command's CPU time as the kernel reports it to its parent
    // (rusage: on kernels without IRQ time accounting it includes the interrupts), within
    // half a point; the time itself is checked against bpftrace in tests/irq_anchor.rs.
    let pct = i["oncpu_pct"].as_f64().unwrap();
    let lost_s = i["hard_s"].as_f64().unwrap() + i["soft_s"].as_f64().unwrap();
    let cpu_s = report["user_cpu_s"].as_f64().unwrap() + report["system_cpu_s"].as_f64().unwrap();
    let kernel_pct = 100.0 * lost_s / cpu_s;
    assert!(
        pct > 0.0 && (pct - kernel_pct).abs() <= 0.5,
        "{pct}% of its on-CPU time; {lost_s} s of the {cpu_s} s of CPU its rusage shows is {kernel_pct:.2}%"
    );
}

/// Interrupt time on a CPU never exceeds the interval: nested hard IRQs are not counted
/// again in the softirqs they interrupted. (The interval is measured between snapshots;
/// each reads the CPUs a few microseconds apart: 5 ms of slack.)
fn no_cpu_busier_than_its_interval(r: &Report) {
    for c in &r.cpus {
        let busy = c["hard_ns"].as_u64().unwrap() + c["soft_ns"].as_u64().unwrap();
        let interval = (c["interval_s"].as_f64().unwrap() * 1e9) as u64;
        assert!(
            busy <= interval + 5_000_000,
            "interrupts took {busy} ns of {interval}: {c}"
        );
    }
}

/// /proc/stat's per-CPU times, and when they were read.
struct StatRead {
    cpus: Vec<StatCpu>,
    at: f64,
}

fn stat_read() -> StatRead {
    StatRead {
        cpus: stat_cpus(),
        at: now_unix(),
    }
}

/// Reads /proc/stat, then proclens's reports up to the first whose snapshot came after the
/// read, then /proc/stat again: (the read before, every report read, the read after).
fn stat_around_next_report(p: &mut Reports) -> (StatRead, Vec<Report>, StatRead) {
    let mut reports = Vec::new();
    for _ in 0..20 {
        let before = stat_read();
        let r = p.next();
        let after_read = before.at < r.time;
        reports.push(r);
        if after_read {
            return (before, reports, stat_read());
        }
    }
    panic!("no report came after a read of /proc/stat");
}

/// IRQ time per CPU against /proc/stat's `irq` and `softirq` columns, over a bracket in
/// which CPU 1 receives a flood while a process spins there.
///
/// The kernel's columns between a read made once proclens had reported (`b`) and a read
/// made before its next snapshot (`c`) cover less than proclens's interval; those between a
/// read before the first snapshot (`a`) and one after the last (`d`), more. Each column is
/// rounded down to a `USER_HZ` tick: a difference of two reads is off by less than one.
///
/// - With IRQ time accounting (`CONFIG_IRQ_TIME_ACCOUNTING`, and the irq column moving),
///   the kernel measures the time from each interrupt's entry to its exit. Its irq column
///   holds every hard IRQ proclens times and more (the entry and exit code around the
///   tracepoints, the vectors proclens does not time); its softirq column every softirq
///   less ksoftirqd's (the kernel leaves those in ksoftirqd's own run time) and less the
///   hard IRQs nested in them, as proclens's `soft_ns` does. So per CPU:
///   `irq(b..c) - 1 tick - 2 µs × hard IRQs counted <= hard_ns <= irq(a..d) + 1 tick`,
///   and the same for the softirq column against `soft_ns` less
///   `ksoftirqd_soft_ns`, with 1 µs per softirq (`__do_softirq`'s loop around the
///   handlers). No kernel the project is tested on has the accounting (docs/kernels.md):
///   this branch follows the kernel's `irqtime_account_irq` and has not been seen to run.
/// - Without it (every kernel of the matrix, and this development VM), the irq column never
///   moves (the tick that would sample it is itself a hard IRQ, and hard IRQs do not nest):
///   asserted per CPU while proclens times hard IRQs on each; proclens must say the
///   accounting is off, and so must the kernel's configuration where it can be read. The
///   softirq column is then the ticks that found the CPU serving a softirq, which is no
///   oracle for proclens's time, not even a statistical one: the ticks' phase is tied to
///   the interrupts'. A tick that comes due while interrupts are off (a hard IRQ's entry,
///   handler and exit) is taken when `__do_softirq` enables them, before its first
///   handler; and a timer-paced sender is woken by the tick's own interrupt (a timer's
///   expiry is taken at the first timer interrupt within its slack), so its traffic lands
///   just after the ticks, on every CPU at once. On this 6.18 VM, with a flood paced by
///   500 µs sleeps, the receiving CPU's column found 2 to 10 times the softirq time proclens
///   and bpftrace measured there (bpftrace counted 10 ticks between a `softirq_entry` and
///   its `softirq_exit` on that CPU while the column grew by 67); paced by the clock, the
///   sending CPU's column found a tenth to a third of it. Either is far outside the
///   sampling error of the ~25 to 60 ticks expected. The time is checked against bpftrace
///   instead (`tests/irq_anchor.rs`).
#[test]
fn irq_time_per_cpu_agrees_with_proc_stat() {
    if !can_trace() {
        return;
    }
    let config = config_irq_time_accounting();
    let mut f = FloodedSpinner::new();
    let mut p = Reports::spawn(&["irq", "--json", "--interval", "0.5"]);
    p.next();
    f.spin.start();
    f.spin.wait_for("on 1");
    let (a, first, b) = stat_around_next_report(&mut p);
    let r0 = first.last().unwrap();
    f.flood.go();
    let (c, reports, d) = stat_around_next_report(&mut p);
    let r1 = reports.last().unwrap();
    f.spin.say("stop");
    f.spin.wait_done();
    p.p.signal(libc::SIGINT);
    assert!(p.p.wait(Duration::from_secs(10)).success());

    let on = r1.system["irq_time_accounting"].as_bool().unwrap();
    let tick_unit = user_hz_ns();
    // proclens's figures over its interval r0..r1: totals, and interval figures summed.
    let total = |r: &Report, cpu: usize, f: &str| r.cpu(cpu)[f].as_u64().unwrap();
    let summed = |cpu: usize, f: &str| -> u64 {
        reports
            .iter()
            .map(|r| r.cpu(cpu)[f].as_u64().unwrap())
            .sum()
    };
    let cpus = a.cpus.len();
    let wall = d.at - a.at;
    eprintln!(
        "IRQ time accounting: proclens {on}, the kernel's configuration {config:?}; /proc/stat counts in {} ms ticks",
        tick_unit / 1_000_000
    );
    if on {
        assert_ne!(
            config,
            Some(false),
            "proclens says the kernel accounts IRQ time, its configuration says it cannot"
        );
        for cpu in 0..cpus {
            let hard = total(r1, cpu, "hard_ns_total") - total(r0, cpu, "hard_ns_total");
            let soft = total(r1, cpu, "soft_ns_total")
                - total(r0, cpu, "soft_ns_total")
                - summed(cpu, "ksoftirqd_soft_ns");
            let hard_count = total(r1, cpu, "hard_total") - total(r0, cpu, "hard_total");
            let soft_count = total(r1, cpu, "soft_total") - total(r0, cpu, "soft_total");
            let (irq_in, irq_out) = (
                c.cpus[cpu].irq - b.cpus[cpu].irq,
                d.cpus[cpu].irq - a.cpus[cpu].irq,
            );
            let (soft_in, soft_out) = (
                c.cpus[cpu].softirq - b.cpus[cpu].softirq,
                d.cpus[cpu].softirq - a.cpus[cpu].softirq,
            );
            eprintln!(
                "CPU {cpu}: hard {hard} ns in {irq_in}..={irq_out}, soft {soft} ns in {soft_in}..={soft_out}"
            );
            assert!(
                hard <= irq_out + tick_unit && hard + tick_unit + 2_000 * hard_count >= irq_in,
                "CPU {cpu}: proclens's hard IRQ time {hard} ns, /proc/stat's {irq_in}..={irq_out} ns"
            );
            assert!(
                soft <= soft_out + tick_unit && soft + tick_unit + 1_000 * soft_count >= soft_in,
                "CPU {cpu}: proclens's softirq time {soft} ns, /proc/stat's {soft_in}..={soft_out} ns"
            );
        }
        return;
    }
    // Built in, the accounting is still off with `tsc=noirqtime` on x86.
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap();
    assert!(
        config != Some(true) || cmdline.contains("noirqtime"),
        "the kernel is built with IRQ time accounting, and proclens says it is off"
    );
    if config.is_none() {
        eprintln!(
            "no kernel configuration to read: only the irq column says the accounting is off"
        );
    }
    for cpu in 0..cpus {
        let hard = total(r1, cpu, "hard_ns_total") - total(r0, cpu, "hard_ns_total");
        let soft = total(r1, cpu, "soft_ns_total") - total(r0, cpu, "soft_ns_total");
        let irq_moved = d.cpus[cpu].irq - a.cpus[cpu].irq;
        let sampled = c.cpus[cpu].softirq - b.cpus[cpu].softirq;
        eprintln!(
            "CPU {cpu}: proclens hard {:.1} ms, soft {:.1} ms; /proc/stat irq {irq_moved} ns, softirq {} ms (sampled by the tick)",
            hard as f64 / 1e6,
            soft as f64 / 1e6,
            sampled / 1_000_000,
        );
        assert!(
            hard > 0,
            "CPU {cpu}: proclens timed no hard IRQ in {wall:.1} s"
        );
        assert_eq!(
            irq_moved, 0,
            "CPU {cpu}: /proc/stat's irq column moved, and proclens says the kernel has no IRQ time accounting"
        );
    }
}
