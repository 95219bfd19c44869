//! Fault-heavy workloads: what counting copy-on-write faults costs each fault.
//!
//! The workload (this binary re-executed as `xtask bench-faults-workload MODE ROUNDS`)
//! times its own stores, one per 4 KiB page of 64 MiB (no transparent huge pages), and
//! prints ns per page:
//!
//! - `cow`: a child forked from a parent that has written the region writes every page:
//!   each store is a copy-on-write fault, every one counted;
//! - `touch`: a fresh mapping written for the first time: each store is a fault on a
//!   page not present, which the counter leaves after one compare.
//!
//! Conditions: untraced, `proclens forks --no-fds` (the whole after-fork set attached),
//! and bpftrace's equivalent counter (per pid, the same error-code test, on the classic
//! `exceptions:page_fault_user` tracepoint). Speed with `bpf_stats` off; the fault
//! program's ns/run from a second run of each traced condition with `bpf_stats` on.

use std::{
    fmt::Write as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Background,
    bpf_stats::{self, BpfStats},
    machine, median,
};

const REGION: usize = 64 << 20;
const PAGE: usize = 4096;
/// Rounds per run: 16,384 faults each.
const ROUNDS: u32 = 16;

/// bpftrace's equivalent of proclens's counter.
const BPFTRACE: &str =
    "tracepoint:exceptions:page_fault_user /(args->error_code & 3) == 3/ { @[pid] = count(); }";
/// The after-fork programs, without the per-interval fd-table reads.
const PROCLENS: &[&str] = &["forks", "--json", "--no-fds", "--interval", "3600"];

fn map() -> *mut u8 {
    // SAFETY: a fresh private anonymous mapping.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            REGION,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap");
        libc::madvise(p, REGION, libc::MADV_NOHUGEPAGE);
        p.cast()
    }
}

/// ns to store one byte in every page of `p`.
fn store_all(p: *mut u8, v: u8) -> u64 {
    let t = Instant::now();
    for i in (0..REGION).step_by(PAGE) {
        // SAFETY: in bounds of the mapping; volatile so no store is folded away.
        unsafe { std::ptr::write_volatile(p.add(i), v) };
    }
    t.elapsed().as_nanos() as u64
}

/// The workload: prints the median ns per page over `rounds`.
pub fn workload(mode: &str, rounds: u32) -> Result<()> {
    let mut per_page = Vec::new();
    let pages = (REGION / PAGE) as f64;
    match mode {
        "cow" => {
            let p = map();
            store_all(p, 1);
            for _ in 0..rounds {
                let mut fds = [0; 2];
                // SAFETY: pipe with a valid array.
                if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
                    bail!("pipe: {}", std::io::Error::last_os_error());
                }
                // SAFETY: the child stores into its memory, writes to a pipe and _exits.
                let child = unsafe { libc::fork() };
                if child == 0 {
                    let ns = store_all(p, 2);
                    unsafe {
                        libc::write(fds[1], (&raw const ns).cast(), 8);
                        libc::_exit(0);
                    }
                }
                let mut ns = 0u64;
                // SAFETY: reading 8 bytes into a u64, then reaping our child.
                unsafe {
                    libc::read(fds[0], (&raw mut ns).cast(), 8);
                    libc::waitpid(child, std::ptr::null_mut(), 0);
                    libc::close(fds[0]);
                    libc::close(fds[1]);
                }
                per_page.push(ns as f64 / pages);
            }
        }
        "touch" => {
            for _ in 0..rounds {
                let p = map();
                per_page.push(store_all(p, 1) as f64 / pages);
                // SAFETY: unmapping what `map` mapped.
                unsafe { libc::munmap(p.cast(), REGION) };
            }
        }
        other => bail!("no fault workload {other}"),
    }
    println!("{}", median(&mut per_page));
    Ok(())
}

fn run_workload(mode: &str) -> Result<f64> {
    let out = Command::new(std::env::current_exe()?)
        .args(["bench-faults-workload", mode, &ROUNDS.to_string()])
        .output()
        .context("running the fault workload")?;
    if !out.status.success() {
        bail!(
            "the fault workload failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("the fault workload printed {text:?}"))
}

#[derive(Clone, Copy)]
enum Tracer {
    None,
    Proclens,
    Bpftrace,
}

struct Sample {
    ns_per_page: f64,
    ns_per_run: Option<f64>,
}

/// The id of `bg`'s program on tracepoint `name` once it is attached (proclens: through a
/// link it holds; the fault programs are among its last attached, and the one on
/// `page_fault_user` is named `page_fault_user_huge` where it tells hugetlb faults apart).
fn attached(bg: &Background, name: &str, links: bool) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids = if links {
            bg.attached_prog_ids()
        } else {
            bg.prog_ids()
        };
        if let Some(id) = bpf_stats::find_attached(&ids, name) {
            return Ok(id);
        }
        if Instant::now() > deadline {
            bail!("no {name} program attached within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Copy-on-write faults proclens has counted so far: its `COW_FAULTS` map (a per-CPU
/// hash of u64), summed over keys and CPUs, read with bpftool. Nothing is deleted from
/// it meanwhile: proclens prunes gone processes only at its reports, an hour apart here.
fn counted_faults(bg: &Background) -> Result<u64> {
    let id = bg
        .map_ids()
        .into_iter()
        .find(|id| {
            Command::new("bpftool")
                .args(["-j", "map", "show", "id", &id.to_string()])
                .output()
                .is_ok_and(|o| {
                    String::from_utf8_lossy(&o.stdout).contains("\"name\":\"COW_FAULTS\"")
                })
        })
        .context("proclens holds no COW_FAULTS map")?;
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "id", &id.to_string()])
        .output()
        .context("running bpftool")?;
    let dump: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("bpftool's map dump is not JSON")?;
    let byte = |b: &serde_json::Value| {
        b.as_str()
            .and_then(|h| u64::from_str_radix(h.trim_start_matches("0x"), 16).ok())
    };
    let mut sum = 0;
    for entry in dump
        .as_array()
        .context("bpftool's map dump is not a list")?
    {
        for v in entry["values"].as_array().context("not a per-CPU map")? {
            let bytes = v["value"].as_array().context("no value bytes")?;
            let n = bytes
                .iter()
                .rev()
                .try_fold(0u64, |n, b| Some((n << 8) | byte(b)?))
                .context("a value's bytes are not hex")?;
            sum += n;
        }
    }
    Ok(sum)
}

/// Copy-on-write faults the `cow` workload makes: every page of the region in each
/// round's child.
const COW_FAULTS: u64 = ROUNDS as u64 * (REGION / PAGE) as u64;

fn measure(tracer: Tracer, proclens: &Path, mode: &str, stats: bool) -> Result<Sample> {
    let (bg, prog_name, links) = match tracer {
        Tracer::None => (None, "", false),
        Tracer::Proclens => {
            let mut c = Command::new(proclens);
            c.args(PROCLENS);
            (Some(Background::start(c, 10)?), "page_fault_user", true)
        }
        Tracer::Bpftrace => {
            let mut c = Command::new("bpftrace");
            c.args(["-e", BPFTRACE]);
            (Some(Background::start(c, 1)?), "page_fault_user", false)
        }
    };
    // Timing runs too: a run before the fault program is attached would time nothing.
    let prog = bg
        .as_ref()
        .map(|bg| attached(bg, prog_name, links))
        .transpose()?;
    let counted_before = match (&bg, tracer) {
        (Some(bg), Tracer::Proclens) => Some(counted_faults(bg)?),
        _ => None,
    };
    let prog = prog.filter(|_| stats);
    let _stats = stats.then(BpfStats::enable).transpose()?;
    let before = prog.map(bpf_stats::prog_stats).transpose()?;
    let ns_per_page = run_workload(mode)?;
    let after = prog.map(bpf_stats::prog_stats).transpose()?;
    if let (Some(bg), Some(c0)) = (&bg, counted_before)
        && mode == "cow"
    {
        let counted = counted_faults(bg)?.saturating_sub(c0);
        if counted < COW_FAULTS {
            bail!(
                "proclens counted {counted} copy-on-write faults of the workload's {COW_FAULTS}: the run was not traced throughout"
            );
        }
    }
    let ns_per_run = match (before, after) {
        (Some((t0, n0)), Some((t1, n1))) if n1 > n0 => Some((t1 - t0) as f64 / (n1 - n0) as f64),
        _ => None,
    };
    Ok(Sample {
        ns_per_page,
        ns_per_run,
    })
}

pub fn run(proclens: &Path, reps: usize) -> Result<String> {
    if Command::new("bpftrace").arg("--version").output().is_err() {
        bail!("bpftrace is not installed (cargo xtask setup)");
    }
    let tracers = [
        ("untraced", Tracer::None),
        ("proclens forks", Tracer::Proclens),
        ("bpftrace (same counter)", Tracer::Bpftrace),
    ];
    let mut md = String::new();
    writeln!(
        md,
        "Fault-heavy workloads: one store per 4 KiB page of 64 MiB (MADV_NOHUGEPAGE), timed by the workload, {ROUNDS} rounds per run (median ns per page), {reps} interleaved runs per condition (medians); speed with bpf_stats off, the fault program's ns/run from a second run with bpf_stats on. `cow`: a forked child writes pages its parent wrote (every store a copy-on-write fault, counted); `touch`: first writes to a fresh mapping (every store a fault the counter leaves after its first compare). {}.\n",
        machine()
    )?;
    writeln!(
        md,
        "| workload | condition | ns per fault | overhead per fault | slowdown | page_fault_user ns/run (bpf_stats) |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|")?;
    for mode in ["cow", "touch"] {
        let mut speed: Vec<Vec<f64>> = vec![Vec::new(); tracers.len()];
        let mut cost: Vec<Vec<f64>> = vec![Vec::new(); tracers.len()];
        for rep in 0..reps {
            for (i, (name, t)) in tracers.iter().enumerate() {
                let s = measure(*t, proclens, mode, false)?;
                speed[i].push(s.ns_per_page);
                let run = match t {
                    Tracer::None => None,
                    _ => measure(*t, proclens, mode, true)?.ns_per_run,
                };
                eprintln!(
                    "bench faults: {mode} rep {rep} {name}: {:.1} ns/page, {run:?} ns/run",
                    s.ns_per_page
                );
                cost[i].extend(run);
            }
        }
        let base = median(&mut speed[0].clone());
        for (i, (name, _)) in tracers.iter().enumerate() {
            let v = median(&mut speed[i].clone());
            let run = if cost[i].is_empty() {
                "-".to_string()
            } else {
                format!("{:.1}", median(&mut cost[i].clone()))
            };
            writeln!(
                md,
                "| {mode} | {name} | {v:.0} | {:.0} ns | {:.3}× | {run} |",
                v - base,
                v / base
            )?;
        }
    }
    writeln!(
        md,
        "\nproclens's program does more than bpftrace's counter: it also names the process by (pid, start time), tells an address space inherited through fork from one exec'd since, and whether the process has forked; it runs as a raw tracepoint (no record built), where bpftrace uses the classic tracepoint. proclens also counts `page_fault_kernel` (the kernel's own writes to user pages), which these workloads do not fire."
    )?;
    Ok(md)
}
