//! The waits programs' set-up: where the saved registers say which syscall a thread
//! blocks in (BTF), the readiness calls' tracepoints and their record layouts (tracefs),
//! map sizes, attaching them.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use aya::EbpfLoader;
use proclens_common::{
    config,
    copies::SysKey,
    waits::{BlockStats, ReadyStats, call},
};
use syscalls::Sysno;

use super::WaitMaps;
use crate::collect::{
    btf::{Btf, enum_value, member_offset, nested_offset, struct_size},
    copies::{Want, maps::entries_for_machine},
    globals::Globals,
    object::Object,
    setup::{self, Setup},
    tracefs,
};

/// Threads with a readiness call in progress, and epoll instances, kept at most.
const PER_THREAD: u32 = 16_384;
/// x86's `TS_COMPAT` (see `copies::layout`).
const TS_COMPAT: u32 = 0x0002;

/// Set to `none`, blocks are not told apart by syscall (all are `(syscall unknown)`'s), as
/// on kernels without `bpf_task_pt_regs` (before 5.15): so that the tests cover that path
/// on any kernel.
pub const WAITS_REGS_ENV: &str = "PROCLENS_WAITS_REGS";

/// Where each readiness call's arguments are: (the argument's name in its tracepoint's
/// format, its index among the syscall's arguments) for what the entry program reads
/// (`nfds`/`maxevents`, and epoll's fd or `epoll_ctl`'s op).
const ARGS: [&[(&str, u32)]; call::COUNT] = [
    &[("n", 0)],
    &[("n", 0)],
    &[("nfds", 1)],
    &[("nfds", 1)],
    &[("epfd", 0), ("maxevents", 2)],
    &[("epfd", 0), ("maxevents", 2)],
    &[("epfd", 0), ("maxevents", 2)],
    &[("epfd", 0), ("op", 1)],
    &[],
    &[],
];

#[derive(Debug)]
struct Resolved {
    cfg: config::Waits,
    /// The calls whose tracepoints this kernel has (ids of `call`).
    calls: Vec<usize>,
    entries: u32,
}

/// The waits programs' set-up; `None` inside when the view does not ask for them.
#[derive(Debug)]
pub struct WaitsSetup(Option<Resolved>);

impl WaitsSetup {
    /// `readiness`: also count select, poll and epoll (their classic tracepoints).
    pub fn resolve(want: Want, readiness: bool, vmlinux: &Btf) -> Result<Self> {
        Ok(Self(want.resolve(
            || Resolved::new(vmlinux, readiness),
            "blocked time is not split by syscall",
        )?))
    }

    /// The maps, when the programs run.
    pub fn take(&self, obj: &mut Object) -> Result<Option<WaitMaps>> {
        self.0
            .as_ref()
            .map(|r| WaitMaps::take(obj, r.cfg.task_regs_helper != 0, r.calls.clone()))
            .transpose()
    }
}

impl Resolved {
    fn new(vmlinux: &Btf, readiness: bool) -> Result<Self> {
        let reg = |r: &str| member_offset(vmlinux, "pt_regs", r);
        let compat = struct_size(vmlinux, "compat_mmsghdr").is_ok();
        let (compat_status, compat_flag) = if compat {
            (
                nested_offset(
                    vmlinux,
                    "task_struct",
                    "thread_info",
                    "thread_info",
                    "status",
                )
                .context("a kernel with 32-bit syscalls but no thread_info.status")?,
                TS_COMPAT,
            )
        } else {
            (u32::MAX, 0)
        };
        let mut cfg = config::Waits {
            blocked_in: 1,
            task_regs_helper: u32::from(
                enum_value(vmlinux, "bpf_func_id", "BPF_FUNC_task_pt_regs").is_ok()
                    && std::env::var_os(WAITS_REGS_ENV).is_none_or(|v| v != "none"),
            ),
            regs_nr: reg("orig_ax")?,
            regs_ret: reg("ax")?,
            compat_status,
            compat_flag,
            ..config::Waits::default()
        };
        let calls = match tracefs::root() {
            _ if !readiness => Vec::new(),
            Ok(root) => resolve_readiness(&root, &mut cfg)?,
            Err(e) => {
                eprintln!("proclens: warning: {e:#}; select, poll and epoll calls are not counted");
                Vec::new()
            }
        };
        Ok(Self {
            cfg,
            calls,
            entries: entries_for_machine(size_of::<SysKey>() + size_of::<ReadyStats>()).max(
                entries_for_machine(size_of::<SysKey>() + size_of::<BlockStats>()),
            ),
        })
    }
}

/// The record layout of the readiness calls' tracepoints: every `syscalls/sys_*` record
/// has the syscall number, then each argument in an 8-byte slot (checked here for each
/// argument read, and the exits' `ret`). Calls this kernel lacks (`epoll_pwait2` before
/// 5.11) are left out.
fn resolve_readiness(root: &Path, cfg: &mut config::Waits) -> Result<Vec<usize>> {
    let mut calls = Vec::new();
    let mut layout: Option<(u32, u32, u32)> = None;
    for (id, name) in call::NAMES.iter().enumerate() {
        let Ok(nr) = name.parse::<Sysno>() else {
            continue;
        };
        let Ok(exit) = tracefs::format(root, "syscalls", &format!("sys_exit_{name}")) else {
            continue;
        };
        let enter = tracefs::format(root, "syscalls", &format!("sys_enter_{name}"))?;
        let rec_nr = enter.int_field("__syscall_nr", &[4])?.offset;
        let ret = exit.int_field("ret", &[8])?.offset;
        let args = match ARGS[id].first() {
            Some((arg, i)) => enter.int_field(arg, &[8])?.offset - 8 * i,
            None => 16,
        };
        for (arg, i) in ARGS[id] {
            let off = enter.int_field(arg, &[8])?.offset;
            if off != args + 8 * i {
                bail!("sys_enter_{name} places `{arg}` at {off}, not in slot {i} from {args}");
            }
        }
        match layout {
            Some(l) if l != (rec_nr, args, ret) => {
                bail!(
                    "sys_enter_{name} and sys_exit_{name} lay their records out unlike the other calls'"
                );
            }
            _ => layout = Some((rec_nr, args, ret)),
        }
        cfg.nr[id] = nr.id() as u32;
        calls.push(id);
    }
    if let Some((rec_nr, args, ret)) = layout {
        cfg.ready = 1;
        cfg.rec_nr = rec_nr;
        cfg.rec_args = args;
        cfg.rec_ret = ret;
    }
    Ok(calls)
}

impl Setup for WaitsSetup {
    fn configure<'a>(&'a self, globals: &mut Globals, loader: &mut EbpfLoader<'a>) {
        match &self.0 {
            Some(r) => {
                globals.waits = r.cfg;
                loader
                    .map_max_entries("WAITS", r.entries)
                    .map_max_entries("READY", r.entries)
                    .map_max_entries("READY_ENTRY", PER_THREAD)
                    .map_max_entries("EPOLL_SETS", PER_THREAD);
            }
            None => globals.waits = config::Waits::default(),
        }
    }

    fn attach(&self, obj: &mut Object, _: &aya::Btf) -> Result<()> {
        let Some(r) = &self.0 else { return Ok(()) };
        if r.calls.is_empty() {
            return Ok(());
        }
        // Exits first: an exit without its entry is ignored.
        let exits: Vec<String> = r
            .calls
            .iter()
            .map(|&i| format!("sys_exit_{}", call::NAMES[i]))
            .collect();
        let enters: Vec<String> = r
            .calls
            .iter()
            .filter(|&&i| !ARGS[i].is_empty())
            .map(|&i| format!("sys_enter_{}", call::NAMES[i]))
            .collect();
        setup::attach_tracepoints(obj, "ready_exit", "syscalls", &exits)?;
        setup::attach_tracepoints(obj, "ready_enter", "syscalls", &enters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_has_the_readiness_tracepoints() {
        let vmlinux = crate::collect::btf::load_vmlinux().expect("the kernel's BTF");
        let root = tracefs::root().expect("tracefs");
        let mut cfg = config::Waits::default();
        let calls = resolve_readiness(&root, &mut cfg).expect("the readiness tracepoints resolve");
        // select, pselect6, poll, ppoll, epoll_wait, epoll_pwait(2), epoll_ctl, epoll_create(1).
        assert!(calls.len() >= 9, "{calls:?}");
        assert_eq!((cfg.rec_nr, cfg.rec_args, cfg.rec_ret), (8, 16, 16));
        assert_eq!(cfg.nr[call::POLL], 7);
        let r = Resolved::new(&vmlinux, true).expect("resolves");
        if cfg!(target_arch = "x86_64") {
            // `struct pt_regs`: ax is the 11th slot, orig_ax the 16th.
            assert_eq!((r.cfg.regs_ret, r.cfg.regs_nr), (80, 120));
        }
    }
}
