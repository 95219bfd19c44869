use super::*;
use crate::model::{
    irq::{CpuRow, Interval, KindRow, Taken},
    proctable::Key,
};

fn figures(count: u64, ns: u64) -> Figures {
    let mut f = Figures {
        count,
        ns,
        ..Figures::default()
    };
    f.hist[proclens_common::irq::dur_bucket(ns / count.max(1))] = count;
    f
}

fn snapshot() -> IrqSnapshot {
    let key = Key {
        tgid: 42,
        start_ns: 1,
    };
    let net_rx = |cpu| KindRow {
        cpu,
        kind: 3,
        delta: figures(1000, 2_000_000),
        total: figures(3000, 6_000_000),
    };
    let mut s = IrqSnapshot {
        interval: Interval {
            cpus: vec![
                CpuRow {
                    cpu: 0,
                    soft: figures(1000, 2_000_000),
                    ..CpuRow::default()
                },
                CpuRow {
                    cpu: 1,
                    soft: figures(1000, 2_000_000),
                    hard: figures(250, 500_000),
                    ..CpuRow::default()
                },
            ],
            softirqs: vec![net_rx(0), net_rx(1)],
            hard: vec![KindRow {
                cpu: 1,
                kind: Source::Vector(0),
                delta: figures(250, 500_000),
                total: figures(500, 1_000_000),
            }],
            victims: vec![VictimRow {
                key,
                kernel_comm: "spin".into(),
                delta: Taken {
                    hard: 250,
                    hard_ns: 500_000,
                    soft: 1000,
                    soft_ns: 2_000_000,
                },
                total: Taken::default(),
            }],
        },
        irq_time_accounting: false,
        vectors: vec![0, 1, 2, 3],
        ..IrqSnapshot::default()
    };
    s.names
        .insert(Source::Vector(0), "Local timer interrupts".into());
    s.comms.insert(key, "spin".into());
    s
}

fn frame(irq: &IrqSnapshot, per_cpu: bool) -> Frame<'_> {
    Frame {
        unix_time: 100.0,
        clock: "12:00:00",
        elapsed_s: 2.0,
        per_cpu,
        dist: true,
        irq,
        victims: irq.interval.victims.clone(),
        untracked_irqs: 0,
        uncharged: 0,
    }
}

#[test]
fn json_has_per_cpu_kinds_and_victims() {
    let s = snapshot();
    let lines: Vec<serde_json::Value> = json_lines(&frame(&s, false))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], "irq_system");
    assert_eq!(
        lines[0]["vectors"],
        serde_json::json!(["LOC", "RES", "CAL", "IWI"])
    );
    assert_eq!(lines[0]["irq_time_accounting"], false);
    let cpu1 = lines
        .iter()
        .find(|l| l["type"] == "irq_cpu" && l["cpu"] == 1)
        .unwrap();
    assert_eq!(cpu1["soft_ns"], 2_000_000);
    assert_eq!(cpu1["hard"], 250);
    let soft: Vec<_> = lines.iter().filter(|l| l["type"] == "softirq").collect();
    assert_eq!(soft.len(), 2, "one line per CPU even without -P");
    assert_eq!(soft[1]["vector"], "NET_RX");
    assert_eq!(soft[1]["count_total"], 3000);
    assert_eq!(soft[1]["hist"].as_array().unwrap().len(), 20);
    let hard = lines.iter().find(|l| l["type"] == "hardirq").unwrap();
    assert_eq!(hard["irq"], "LOC");
    assert_eq!(hard["name"], "Local timer interrupts");
    let v = lines.iter().find(|l| l["type"] == "victim").unwrap();
    assert_eq!(
        (v["pid"].as_u64(), v["comm"].as_str()),
        (Some(42), Some("spin"))
    );
    assert_eq!(
        (v["soft_ns"].as_u64(), v["hard"].as_u64()),
        (Some(2_000_000), Some(250))
    );
}

#[test]
fn plain_sums_cpus_unless_asked() {
    let s = snapshot();
    let summed = plain_lines(&frame(&s, false));
    assert!(
        summed[0].contains("no IRQ time accounting"),
        "{}",
        summed[0]
    );
    let net_rx: Vec<_> = summed.iter().filter(|l| l.contains("NET_RX")).collect();
    // Two CPUs, 1000 each over 2 s: 1000/s; 4 ms over 2 s: 0.20% of a CPU; 2 µs each.
    assert_eq!(net_rx.len(), 2, "{summed:#?}"); // the table row and the histogram title
    assert!(
        net_rx[0].contains(" all      1000    0.20     2.00"),
        "{}",
        net_rx[0]
    );
    let per_cpu = plain_lines(&frame(&s, true));
    assert_eq!(
        per_cpu.iter().filter(|l| l.contains("NET_RX    ")).count(),
        2
    );
    let victim = summed.iter().find(|l| l.ends_with("  spin")).unwrap();
    assert!(
        victim.contains("      42     0.50     2.00     625"),
        "{victim}"
    );
    assert!(summed.iter().any(|l| l.contains("Local timer interrupts")));
}

#[test]
fn histograms_show_the_used_range() {
    let mut h = [0u64; 20];
    h[3] = 4; // [1024, 2048) ns
    h[5] = 2;
    let lines = hist_lines("softirq NET_RX", &h);
    assert_eq!(lines.len(), 2 + 3, "{lines:#?}");
    assert!(lines[2].contains("1024 -> 2047") && lines[2].contains(&"*".repeat(40)));
    assert!(
        lines[4].contains("4096 -> 8191")
            && lines[4].contains(&format!("|{:<40}|", "*".repeat(20)))
    );
    assert_eq!(hist_lines("empty", &[0; 20]).len(), 1);
}
