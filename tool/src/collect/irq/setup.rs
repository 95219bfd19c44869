//! The interrupt programs' set-up: which tracepoints this kernel has (and their argument
//! layouts), the offsets and slot counts the programs need, map sizes, attaching them.

use crate::collect::btf::Btf;
use anyhow::Result;
use aya::EbpfLoader;
use proclens_common::{
    config,
    irq::{IrqStats, Stolen, vector},
};

use super::IrqMaps;
use crate::{
    collect::{
        btf,
        copies::Want,
        globals::Globals,
        object::Object,
        setup::{self, Setup},
    },
    error::Fatal,
};

/// The per-CPU maps' budget: the line slots and the victim entries each take at most
/// this much of the kernel's memory, whatever the number of CPUs (as the copy maps).
const BUDGET: usize = 32 << 20;
/// Victim entries at most (live processes interrupted between two reports).
const VICTIMS_CAP: usize = 16384;
/// Line slots beyond the highest IRQ number allocated at start, for IRQs allocated later.
const LINE_HEADROOM: u32 = 64;

/// The tracepoints the programs need, with the arguments they read (`TP_PROTO`).
const LINE_TRACEPOINTS: [(&str, &[&str]); 2] = [
    ("irq_handler_entry", &["int", "struct irqaction *"]),
    ("irq_handler_exit", &["int", "struct irqaction *", "int"]),
];
const SOFT_TRACEPOINTS: [(&str, &[&str]); 2] = [
    ("softirq_entry", &["unsigned int"]),
    ("softirq_exit", &["unsigned int"]),
];

#[derive(Debug)]
struct Resolved {
    cfg: config::Irq,
    /// The system vectors' entry tracepoints this kernel has (each with its exit).
    vectors: Vec<&'static str>,
    victims: u32,
}

/// The interrupt programs' set-up; `None` inside when the view does not show interrupts
/// or this kernel cannot time them (then its maps are shrunk to nothing).
#[derive(Debug)]
pub struct IrqSetup(Option<Resolved>);

impl IrqSetup {
    pub fn resolve(want: Want, vmlinux: &Btf) -> Result<Self> {
        let resolved = want.resolve(|| Resolved::new(vmlinux), "interrupts are not traced")?;
        if let Some(r) = &resolved {
            let missing: Vec<&str> = vector::TRACEPOINTS
                .iter()
                .enumerate()
                .filter(|(_, tps)| !tps.iter().all(|tp| r.vectors.contains(tp)))
                .map(|(v, _)| vector::NAMES[v])
                .collect();
            if !missing.is_empty() {
                eprintln!(
                    "proclens: note: this kernel has no irq_vectors tracepoints for {}: those interrupts are not timed, and their time is in no victim's",
                    missing.join(", ")
                );
            }
        }
        Ok(Self(resolved))
    }

    /// The interrupt maps, when the programs run.
    pub fn take(&self, obj: &mut Object) -> Result<Option<IrqMaps>> {
        self.0
            .as_ref()
            .map(|r| IrqMaps::take(obj, r.cfg.lines, &r.vectors))
            .transpose()
    }
}

impl Resolved {
    fn new(vmlinux: &Btf) -> Result<Self> {
        for (tp, want) in LINE_TRACEPOINTS.iter().chain(&SOFT_TRACEPOINTS) {
            let args = btf::raw_tp_args(vmlinux, tp)?;
            if args.len() < want.len() || args[..want.len()] != **want {
                return Err(Fatal::KernelUnsupported(format!(
                    "{tp} has an unknown argument layout: {args:?}"
                ))
                .into());
            }
        }
        let has = |tp: &str| btf::raw_tp_args(vmlinux, tp).is_ok_and(|a| a == ["int"]);
        let vectors = vector::TRACEPOINTS
            .iter()
            .flat_map(|tps| tps.iter().copied())
            .filter(|tp| has(tp) && has(&exit_of(tp)))
            .collect();
        let cpus = aya::util::nr_cpus().unwrap_or(1).max(1);
        let lines = line_slots(highest_irq().map_or(255, |n| n + LINE_HEADROOM), cpus);
        Ok(Self {
            cfg: config::Irq {
                lines,
                irqaction_next: btf::member_offset(vmlinux, "irqaction", "next")?,
                task_flags: btf::member_offset(vmlinux, "task_struct", "flags")?,
                _pad: 0,
            },
            vectors,
            victims: (BUDGET / (size_of::<Stolen>() * cpus)).clamp(1024, VICTIMS_CAP) as u32,
        })
    }
}

/// The exit tracepoint of an `irq_vectors` entry one.
fn exit_of(entry: &str) -> String {
    format!("{}_exit", entry.trim_end_matches("_entry"))
}

/// Slots for IRQ numbers `0..=highest` (and the system vectors after them) within the
/// memory budget on `cpus` CPUs; higher numbers are counted as untracked.
fn line_slots(highest: u32, cpus: usize) -> u32 {
    let fit = BUDGET / (size_of::<IrqStats>() * cpus) - vector::COUNT as usize;
    (highest as usize + 1).min(fit) as u32
}

/// The highest IRQ number allocated now: /sys/kernel/irq lists every IRQ descriptor
/// (kernels with sparse IRQs, every distribution's); else /proc/interrupts' rows.
fn highest_irq() -> Option<u32> {
    let from_sys = std::fs::read_dir("/sys/kernel/irq").ok().and_then(|d| {
        d.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .max()
    });
    from_sys.or_else(|| {
        std::fs::read_to_string("/proc/interrupts")
            .ok()?
            .lines()
            .filter_map(|l| l.split(':').next()?.trim().parse::<u32>().ok())
            .max()
    })
}

impl Setup for IrqSetup {
    fn configure<'a>(&'a self, globals: &mut Globals, loader: &mut EbpfLoader<'a>) {
        match &self.0 {
            Some(r) => {
                globals.irq = r.cfg;
                loader
                    .map_max_entries("IRQ_LINES", r.cfg.lines + vector::COUNT)
                    .map_max_entries("VICTIMS", r.victims);
            }
            // Not traced: the per-CPU maps cost (nearly) nothing.
            None => {
                loader
                    .map_max_entries("IRQ_LINES", vector::COUNT)
                    .map_max_entries("VICTIMS", 1);
            }
        }
    }

    fn btf_tracepoints(&self) -> Vec<(String, String)> {
        let Some(r) = &self.0 else { return Vec::new() };
        // Exits first: an exit without its entry is ignored, while an entry without its
        // exit would leave a handler open until the next one.
        let exits = ["softirq_exit", "irq_handler_exit"]
            .map(String::from)
            .into_iter()
            .chain(r.vectors.iter().map(|tp| exit_of(tp)));
        let entries = ["softirq_entry", "irq_handler_entry"]
            .into_iter()
            .chain(r.vectors.iter().copied())
            .map(String::from);
        exits.chain(entries).map(|p| (p.clone(), p)).collect()
    }

    fn attach(&self, obj: &mut Object, kernel: &aya::Btf) -> Result<()> {
        setup::attach_btf_tracepoints(obj, &self.btf_tracepoints(), kernel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_slots_fit_the_budget() {
        assert_eq!(line_slots(107, 2), 108);
        // 32 MiB over 4096 CPUs of 176-byte slots: 46 slots, 4 of them the vectors'.
        assert_eq!(line_slots(5000, 4096), 42);
        assert_eq!(
            exit_of("call_function_single_entry"),
            "call_function_single_exit"
        );
    }

    #[test]
    fn this_kernel_has_the_interrupt_tracepoints() {
        let vmlinux = btf::load_vmlinux().expect("the kernel's BTF");
        let r = Resolved::new(&vmlinux).expect("the interrupt tracepoints resolve");
        assert!(r.cfg.lines > 0 && r.cfg.irqaction_next > 0 && r.cfg.task_flags > 0);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(r.vectors.len(), 5, "{:?}", r.vectors);
        }
    }
}
