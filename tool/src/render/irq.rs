//! `proclens irq` output: per CPU, per softirq vector and hard IRQ source (hardirqs and
//! softirqs style), and the processes the interrupts took time from; plain or JSON.

use serde::Serialize;

use crate::{
    collect::irq::IrqSnapshot,
    model::{
        irq::{Figures, KindRow, Source, VictimRow, softirq_name},
        rates::per_second,
    },
};

/// One interval of the view.
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    pub unix_time: f64,
    pub clock: &'a str,
    pub elapsed_s: f64,
    /// Rows per CPU instead of summed over CPUs (plain only: JSON always has them).
    pub per_cpu: bool,
    /// Duration histograms (plain only: JSON always has them).
    pub dist: bool,
    pub irq: &'a IrqSnapshot,
    /// Victims to show: those with interrupt time in the interval, and the requested
    /// processes (`-p`) even without.
    pub victims: Vec<VictimRow>,
    /// Hard IRQs of lines allocated after start (counted, not per line).
    pub untracked_irqs: u64,
    /// Interrupt time not charged to its victim (the victim map was full).
    pub uncharged: u64,
}

super::report_with!(Frame<'_>);

/// Time as a percentage of one CPU over the interval.
fn pct(ns: u64, elapsed_s: f64) -> f64 {
    if elapsed_s > 0.0 {
        ns as f64 / 1e7 / elapsed_s
    } else {
        0.0
    }
}

fn avg_us(f: &Figures) -> f64 {
    if f.count == 0 {
        0.0
    } else {
        f.ns as f64 / f.count as f64 / 1e3
    }
}

/// What the kernel's own accounting of IRQ time is, for the reader comparing with
/// /proc/stat or `top`'s `si`.
pub fn accounting_note(precise: bool) -> &'static str {
    if precise {
        "this kernel measures IRQ time: /proc/stat's irq and softirq columns are exact, and task run times leave interrupts out"
    } else {
        "this kernel has no IRQ time accounting: /proc/stat's irq column stays 0, its softirq column is sampled at each tick, and task run times include the interrupts that hit them"
    }
}

#[derive(Serialize)]
struct JsonSystem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: f64,
    interval_s: f64,
    cpus: usize,
    irq_time_accounting: bool,
    /// The system vectors timed (/proc/interrupts rows).
    vectors: Vec<&'a str>,
    untracked_irqs: u64,
    uncharged: u64,
}

#[derive(Serialize)]
struct JsonCpu {
    #[serde(rename = "type")]
    kind: &'static str,
    time: f64,
    interval_s: f64,
    cpu: u32,
    hard: u64,
    hard_ns: u64,
    soft: u64,
    soft_ns: u64,
    hard_total: u64,
    hard_ns_total: u64,
    soft_total: u64,
    soft_ns_total: u64,
    idle_hard_ns: u64,
    idle_soft_ns: u64,
    ksoftirqd_soft_ns: u64,
    untraced_hard_ns: u64,
    untraced_soft_ns: u64,
    nested_hard: u64,
    nested_hard_ns: u64,
}

#[derive(Serialize)]
struct JsonKind<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: f64,
    interval_s: f64,
    cpu: u32,
    /// Softirqs: the vector's name; hard IRQs: the /proc/interrupts row (`36`, `LOC`).
    #[serde(skip_serializing_if = "Option::is_none")]
    vector: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    irq: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    count: u64,
    ns: u64,
    count_total: u64,
    ns_total: u64,
    /// The interval's durations: `[2^(i+7), 2^(i+8))` ns for i >= 1, < 256 ns for 0.
    hist: Vec<u64>,
}

#[derive(Serialize)]
struct JsonVictim<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: f64,
    interval_s: f64,
    pid: u32,
    comm: &'a str,
    alive: bool,
    hard: u64,
    hard_ns: u64,
    soft: u64,
    soft_ns: u64,
    hard_total: u64,
    hard_ns_total: u64,
    soft_total: u64,
    soft_ns_total: u64,
}

fn line<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain struct serialises")
}

fn kind_json<'a>(
    f: &Frame<'a>,
    kind: &'static str,
    cpu: u32,
    d: &Figures,
    t: &Figures,
) -> JsonKind<'a> {
    JsonKind {
        kind,
        time: f.unix_time,
        interval_s: f.elapsed_s,
        cpu,
        vector: None,
        irq: None,
        name: None,
        count: d.count,
        ns: d.ns,
        count_total: t.count,
        ns_total: t.ns,
        hist: d.hist.to_vec(),
    }
}

pub fn json_lines(f: &Frame) -> Vec<String> {
    let i = &f.irq.interval;
    let mut out = vec![line(&JsonSystem {
        kind: "irq_system",
        time: f.unix_time,
        interval_s: f.elapsed_s,
        cpus: i.cpus.len(),
        irq_time_accounting: f.irq.irq_time_accounting,
        vectors: f.irq.vectors.iter().map(|&v| vector_row(v)).collect(),
        untracked_irqs: f.untracked_irqs,
        uncharged: f.uncharged,
    })];
    for c in &i.cpus {
        out.push(line(&JsonCpu {
            kind: "irq_cpu",
            time: f.unix_time,
            interval_s: f.elapsed_s,
            cpu: c.cpu,
            hard: c.hard.count,
            hard_ns: c.hard.ns,
            soft: c.soft.count,
            soft_ns: c.soft.ns,
            hard_total: c.hard_total.count,
            hard_ns_total: c.hard_total.ns,
            soft_total: c.soft_total.count,
            soft_ns_total: c.soft_total.ns,
            idle_hard_ns: c.extra.idle_hard_ns,
            idle_soft_ns: c.extra.idle_soft_ns,
            ksoftirqd_soft_ns: c.extra.ksoftirqd_soft_ns,
            untraced_hard_ns: c.extra.untraced_hard_ns,
            untraced_soft_ns: c.extra.untraced_soft_ns,
            nested_hard: c.extra.nested,
            nested_hard_ns: c.extra.nested_ns,
        }));
    }
    for r in &i.softirqs {
        let mut j = kind_json(f, "softirq", r.cpu, &r.delta, &r.total);
        j.vector = Some(softirq_name(r.kind));
        out.push(line(&j));
    }
    for r in &i.hard {
        let mut j = kind_json(f, "hardirq", r.cpu, &r.delta, &r.total);
        j.irq = Some(r.kind.row());
        j.name = f.irq.names.get(&r.kind).map(String::as_str);
        out.push(line(&j));
    }
    for v in &f.victims {
        out.push(line(&JsonVictim {
            kind: "victim",
            time: f.unix_time,
            interval_s: f.elapsed_s,
            pid: v.key.tgid,
            comm: f.irq.comms.get(&v.key).map_or("?", String::as_str),
            alive: !f.irq.gone.contains(&v.key),
            hard: v.delta.hard,
            hard_ns: v.delta.hard_ns,
            soft: v.delta.soft,
            soft_ns: v.delta.soft_ns,
            hard_total: v.total.hard,
            hard_ns_total: v.total.hard_ns,
            soft_total: v.total.soft,
            soft_ns_total: v.total.soft_ns,
        }));
    }
    out
}

fn vector_row(v: u32) -> &'static str {
    proclens_common::irq::vector::NAMES
        .get(v as usize)
        .copied()
        .unwrap_or("?")
}

/// Rows of one kind table: per CPU with `-P`, else summed over the CPUs (`cpu` None).
fn by_cpu<K: Copy + Ord>(
    rows: &[KindRow<K>],
    per_cpu: bool,
) -> Vec<(Option<u32>, K, Figures, Figures)> {
    if per_cpu {
        let mut v: Vec<_> = rows
            .iter()
            .map(|r| (Some(r.cpu), r.kind, r.delta, r.total))
            .collect();
        v.sort_by_key(|r| (r.1, r.0));
        return v;
    }
    let mut sums = std::collections::BTreeMap::<K, (Figures, Figures)>::default();
    for r in rows {
        let e = sums.entry(r.kind).or_default();
        e.0.add(&r.delta);
        e.1.add(&r.total);
    }
    sums.into_iter()
        .map(|(k, (d, t))| (None, k, d, t))
        .collect()
}

fn cpu_col(c: Option<u32>) -> String {
    c.map_or_else(|| "all".into(), |c| c.to_string())
}

/// The tables: CPUs, softirqs, hard IRQs (those that ran in the interval), victims, and
/// with `--dist` a duration histogram per kind.
pub fn plain_lines(f: &Frame) -> Vec<String> {
    let i = &f.irq.interval;
    let e = f.elapsed_s;
    let mut out = vec![format!(
        "{} interrupts over {e:.2} s; {}",
        f.clock,
        accounting_note(f.irq.irq_time_accounting)
    )];
    for (what, n) in [
        (
            "hard IRQs of lines allocated since start (not per line)",
            f.untracked_irqs,
        ),
        (
            "interrupt time not charged to its process (victim map full), events",
            f.uncharged,
        ),
    ] {
        if n > 0 {
            out.push(format!("{} {what}: {n}", f.clock));
        }
    }
    out.push(format!(
        "{}    CPU   hard/s  hard%   soft/s  soft%  idle%  ksoftirqd%  nested/s",
        f.clock
    ));
    for c in &i.cpus {
        let x = &c.extra;
        out.push(format!(
            "{} {:>6} {:>8.0} {:>6.2} {:>8.0} {:>6.2} {:>6.2} {:>11.2} {:>9.0}",
            f.clock,
            c.cpu,
            per_second(c.hard.count, e),
            pct(c.hard.ns, e),
            per_second(c.soft.count, e),
            pct(c.soft.ns, e),
            pct(x.idle_hard_ns + x.idle_soft_ns, e),
            pct(x.ksoftirqd_soft_ns, e),
            per_second(x.nested, e),
        ));
    }
    let softs = by_cpu(&i.softirqs, f.per_cpu);
    kind_table(&mut out, f, "SOFTIRQ", &softs, |v| {
        (softirq_name(*v).to_string(), String::new())
    });
    let hards = by_cpu(&i.hard, f.per_cpu);
    kind_table(&mut out, f, "HARDIRQ", &hards, |s| {
        let name = f.irq.names.get(s).map_or("", String::as_str);
        (s.row(), format!("  {name}"))
    });
    out.push(format!(
        "{}      PID  hard-ms  soft-ms   irq/s  COMMAND (time interrupts took)",
        f.clock
    ));
    for v in &f.victims {
        out.push(format!(
            "{} {:>8} {:>8.2} {:>8.2} {:>7.0}  {}",
            f.clock,
            v.key.tgid,
            v.delta.hard_ns as f64 / 1e6,
            v.delta.soft_ns as f64 / 1e6,
            per_second(v.delta.hard + v.delta.soft, e),
            f.irq.comms.get(&v.key).map_or("?", String::as_str)
        ));
    }
    if f.dist {
        for (_, v, d, _) in by_cpu(&i.softirqs, false).iter().filter(|r| r.2.count > 0) {
            out.extend(hist_lines(
                &format!("softirq {}", softirq_name(*v)),
                &d.hist,
            ));
        }
        for (_, s, d, _) in by_cpu(&i.hard, false).iter().filter(|r| r.2.count > 0) {
            out.extend(hist_lines(&hard_title(*s, f), &d.hist));
        }
    }
    out
}

/// One table of kinds (softirq vectors or hard IRQ sources) that ran in the interval:
/// count per second, share of a CPU, mean duration; `label` names a kind (and what
/// follows the row).
fn kind_table<K>(
    out: &mut Vec<String>,
    f: &Frame,
    title: &str,
    rows: &[(Option<u32>, K, Figures, Figures)],
    label: impl Fn(&K) -> (String, String),
) {
    let e = f.elapsed_s;
    out.push(format!(
        "{} {title:<9}  CPU   count/s   time%   avg-us{}",
        f.clock,
        if title == "HARDIRQ" { "  NAME" } else { "" }
    ));
    for (cpu, k, d, _) in rows.iter().filter(|r| r.2.count > 0) {
        let (name, tail) = label(k);
        out.push(format!(
            "{} {name:<9} {:>4} {:>9.0} {:>7.2} {:>8.2}{tail}",
            f.clock,
            cpu_col(*cpu),
            per_second(d.count, e),
            pct(d.ns, e),
            avg_us(d)
        ));
    }
}

fn hard_title(s: Source, f: &Frame) -> String {
    match f.irq.names.get(&s).filter(|n| !n.is_empty()) {
        Some(n) => format!("hardirq {} ({n})", s.row()),
        None => format!("hardirq {}", s.row()),
    }
}

/// One duration histogram, a 40-column bar per bucket from the first to the last used.
pub fn hist_lines(title: &str, hist: &[u64]) -> Vec<String> {
    let mut out = vec![title.to_string()];
    let (Some(first), Some(last)) = (
        hist.iter().position(|&n| n > 0),
        hist.iter().rposition(|&n| n > 0),
    ) else {
        return out;
    };
    let max = hist.iter().copied().max().unwrap_or(1).max(1);
    out.push(format!(
        "{:>24} : {:<8} {}",
        "nsecs", "count", "distribution"
    ));
    for (b, &n) in hist.iter().enumerate().take(last + 1).skip(first) {
        let low = proclens_common::irq::dur_bucket_floor_ns(b);
        let high = if b + 1 < hist.len() {
            (proclens_common::irq::dur_bucket_floor_ns(b + 1) - 1).to_string()
        } else {
            "...".into()
        };
        let width = (n * 40).div_ceil(max) as usize;
        out.push(format!(
            "{low:>10} -> {high:<10} : {n:<8} |{:<40}|",
            "*".repeat(width)
        ));
    }
    out
}

#[cfg(test)]
mod tests;
