//! The concerns' set-ups as [`super::Tracer::start`] runs them: resolved from the running
//! kernel, loaded into one object, attached in order.

use anyhow::Result;
use aya::EbpfLoader;
use proclens_common::config;

use super::{OBJECT, TracerOptions};
use crate::collect::{
    btf::{Btf, LifecycleOffsets, TaskOffsets},
    copies::{CopySetup, Want},
    filter::{FilterSetup, Selected},
    forks::{ForkTiming, ForksSetup},
    globals::Globals,
    irq::IrqSetup,
    lifecycle::setup::LifecycleSetup,
    log,
    object::Object,
    rings::RingLayout,
    setup::{self, Setup},
    switch::SwitchSetup,
    tracefs,
    waits::WaitsSetup,
};

/// What every program shares: the `task_struct` fields several concerns read
/// (`config::Task`, resolved once for all of them) and aya-log's level.
pub struct TaskSetup {
    pub task: TaskOffsets,
    pub life: LifecycleOffsets,
}

impl TaskSetup {
    pub fn resolve(vmlinux: &Btf) -> Result<Self> {
        Ok(Self {
            task: TaskOffsets::from_btf(vmlinux)?,
            life: LifecycleOffsets::from_btf(vmlinux)?,
        })
    }
}

impl Setup for TaskSetup {
    fn configure<'a>(&'a self, globals: &mut Globals, _: &mut EbpfLoader<'a>) {
        let (task, life) = (&self.task, &self.life);
        globals.task = config::Task {
            pid: task.pid,
            tgid: life.tgid,
            group_leader: task.group_leader,
            start_time: task.start_time,
            start_boottime: life.start_boottime,
            comm: life.comm,
        };
        globals.log_level = log::kernel_level();
    }

    fn attach(&self, _: &mut Object, _: &aya::Btf) -> Result<()> {
        Ok(())
    }
}

/// The concerns' set-ups, in the order they are configured and attached.
pub struct Setups {
    pub task: TaskSetup,
    pub filter: FilterSetup,
    pub rings: RingLayout,
    pub switch: Option<SwitchSetup>,
    pub copies: CopySetup,
    pub life: LifecycleSetup,
    pub forks: Option<ForksSetup>,
    pub irq: IrqSetup,
    pub waits: WaitsSetup,
}

impl Setups {
    /// Every set-up `opts` asks for, resolved against the running kernel's BTF.
    pub fn resolve(opts: &TracerOptions, vmlinux: &Btf) -> Result<Self> {
        let task = TaskSetup::resolve(vmlinux)?;
        let mut copies = CopySetup::resolve(opts.syscalls, opts.copies, vmlinux)?;
        if opts.skip_spawning {
            copies.skip_spawning();
        }
        let tracefs = opts.forks && tracefs::root().is_ok();
        let fork_timing = if copies.time_forks(opts.forks, tracefs, vmlinux) {
            ForkTiming::Syscalls
        } else {
            ForkTiming::Tracepoints
        };
        let selected = Selected {
            pids: opts.pids.clone(),
            comm: opts.comm.clone(),
            cgroup: opts.cgroup.clone(),
        };
        Ok(Self {
            filter: FilterSetup::resolve(opts.include_self, &selected, vmlinux)?,
            rings: RingLayout::here(),
            switch: opts
                .switches
                .then(|| SwitchSetup::resolve(vmlinux, &task.task, opts.max_threads))
                .transpose()?,
            copies,
            life: LifecycleSetup::resolve(&task.life, vmlinux)?,
            forks: opts
                .forks
                .then(|| ForksSetup::resolve(vmlinux, &task.life, fork_timing)),
            irq: IrqSetup::resolve(opts.irq, vmlinux)?,
            waits: WaitsSetup::resolve(
                if opts.switches { opts.waits } else { Want::Off },
                !opts.no_readiness,
                vmlinux,
            )?,
            task,
        })
    }

    fn list(&self) -> Vec<&dyn Setup> {
        let mut v: Vec<&dyn Setup> = vec![&self.task, &self.filter, &self.rings];
        if let Some(s) = &self.switch {
            v.push(s);
        }
        v.extend([
            &self.copies as &dyn Setup,
            &self.life,
            &self.irq,
            &self.waits,
        ]);
        if let Some(s) = &self.forks {
            v.push(s);
        }
        v
    }

    /// The object loaded with every set-up's globals and map sizes; loaded again where
    /// the filter finds this kernel's verifier refuses what it first chose (see
    /// [`FilterSetup::walk_if_refused`]). `loader` is a fresh [`EbpfLoader::new`].
    pub fn load(&mut self, loader: EbpfLoader<'static>) -> Result<Object> {
        let mut obj = setup::load(loader, OBJECT, &self.list())?;
        if self.filter.walk_if_refused(&mut obj)? {
            obj = setup::load(EbpfLoader::new(), OBJECT, &self.list())?;
        }
        Ok(obj)
    }

    /// Loads every program (in parallel), then attaches each set-up's in order.
    pub fn attach(&self, obj: &mut Object, kernel: &aya::Btf) -> Result<()> {
        setup::load_all(obj, &self.list(), kernel)?;
        for s in self.list() {
            s.attach(obj, kernel)?;
        }
        Ok(())
    }
}
