//! The cardinality cap (`--max-series`). Whoever names a process chooses its `comm`, and
//! each new name used to add a label set of ~40 series that Prometheus kept for
//! `--expire`: a loop that renames itself could flood a fleet's Prometheus. The cap is
//! on what `/metrics` shows, every family counted: a label set is admitted while its
//! series fit; one that does not is folded, first into `comm="other"` with its other
//! labels (a pod keeps its own catch-all; a tenth of the cap is kept for these), and
//! when even that does not fit, into the one label set whose every label reads `other`,
//! for which room is always kept. Each label
//! set folded is counted once (`proclens_folded_label_sets_total`) while it keeps showing
//! up.
//!
//! Series are charged when a label set is admitted: every per-set family at once
//! ([`SET_SERIES`]), copy paths and the syscalls blocked in one by one. The catch-all's
//! copy paths are kept by syscall only (fd kinds `unknown`), and the syscalls blocked in
//! are a bounded set of labels, so its room is bounded too.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{DefaultHasher, Hasher as _},
    sync::Arc,
};

use proclens_common::{copies::fd_kind, copies::op, switch::RUNQ_BUCKETS};

use super::{ExporterState, KernelDrops, Labels, PathKey, ZombieLabels, blocked, host};
use crate::model::parent_info::CgroupPids;

/// The value a folded label reads.
pub const OTHER: &str = "other";

/// Series one label set shows in the switch families: kinds (2), origins (3), the three
/// time counters, and the run-queue histogram (a bucket per log2 bucket, the last one
/// `+Inf`, then `_sum` and `_count`).
pub const SWITCH_SERIES: usize = 2 + 3 + 3 + RUNQ_BUCKETS + 2;
/// Series of a label set in the fork families: forks by kind (2), child exits, failures.
pub const FORK_SERIES: usize = 4;
/// Series of one copy path: bytes, calls, errors, would-blocks, interruptions.
pub const PATH_SERIES: usize = 5;
/// Series of a label set in the interrupt family: time stolen by hard IRQs and softirqs.
pub const IRQ_SERIES: usize = 2;
/// Series of one syscall blocked in: seconds and switches.
pub const BLOCKED_SERIES: usize = 2;
/// What admitting a label set costs: every per-set family but the copy paths and the
/// syscalls blocked in.
pub const SET_SERIES: usize = SWITCH_SERIES + 1 + FORK_SERIES + IRQ_SERIES;
/// Room always kept for the catch-all: its label set, its copy paths (one per syscall),
/// every syscall label blocked in, and the zombie gauge's `parent_comm="other"`.
pub const RESERVE: usize =
    SET_SERIES + PATH_SERIES * op::COUNT + BLOCKED_SERIES * blocked::LABELS + 1;

/// The cap and what it has folded.
#[derive(Debug, Clone)]
pub struct Guard {
    pub max_series: usize,
    /// Label sets folded so far, counted once each while they keep showing up.
    pub folded_total: u64,
    /// Hashes of the folded label sets and the collection each was last seen in.
    folded: HashMap<u64, u64>,
    /// The catch-all, shaped like the label sets (same label names) once one was seen.
    other: Option<Labels>,
}

impl Default for Guard {
    fn default() -> Self {
        Self::new(usize::MAX)
    }
}

impl Guard {
    pub fn new(max_series: usize) -> Self {
        Self {
            max_series,
            folded_total: 0,
            folded: HashMap::new(),
            other: None,
        }
    }

    fn limited(&self) -> bool {
        self.max_series != usize::MAX
    }

    /// Counts a folded label set the first time it shows up (again after expiry).
    fn note_folded(&mut self, key: &impl std::hash::Hash, collection: u64) {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        if self.folded.insert(h.finish(), collection).is_none() {
            self.folded_total += 1;
        }
    }

    /// The catch-all label set: every label of `like` reading `other`, no pid.
    fn other_like(&mut self, like: &Labels) -> Labels {
        self.other
            .get_or_insert_with(|| Labels {
                comm: like.comm.as_ref().map(|_| OTHER.to_string()),
                attrs: like
                    .attrs
                    .iter()
                    .map(|(k, _)| (*k, Arc::from(OTHER)))
                    .collect(),
                pid: None,
            })
            .clone()
    }

    fn is_other(&self, l: &Labels) -> bool {
        self.other.as_ref() == Some(l)
    }

    /// Forgets folded label sets not seen since collection `cutoff` (`--expire`).
    pub(super) fn expire(&mut self, cutoff: u64) {
        self.folded.retain(|_, at| *at >= cutoff);
    }
}

/// Series used by admitted label sets during one apply, the catch-all's not counted.
pub(super) struct Budget {
    used: usize,
    max: usize,
}

impl Budget {
    /// Whether `n` more series fit beside the room kept for the catch-all, and (unless
    /// they are for a fold) the tenth of the cap kept for the `comm="other"` sets, which
    /// would otherwise never find room once new names had taken it all.
    fn take(&mut self, n: usize, fold: bool) -> bool {
        let kept = if fold { 0 } else { self.max / 10 };
        let fits = self.used + n + RESERVE + kept <= self.max;
        if fits {
            self.used += n;
        }
        fits
    }
}

/// Series of one cgroup's pids gauges: tasks, and the limit when there is one.
fn cgroup_series(c: &CgroupPids) -> usize {
    1 + usize::from(c.max.is_some())
}

fn other_zombie() -> ZombieLabels {
    ZombieLabels {
        parent_comm: OTHER.into(),
        parent_pid: None,
    }
}

impl ExporterState {
    /// Series `/metrics` shows for this state, every family counted (`proclens_series`).
    pub fn series_count(&self) -> usize {
        let mut n = self.fixed_series()
            + self.series.len() * SWITCH_SERIES
            + self.forks.len() * FORK_SERIES
            + self.zombies.as_ref().map_or(0, BTreeMap::len)
            + self.zombie_cgroups.iter().map(cgroup_series).sum::<usize>();
        if self.syscalls_counted {
            n += self.syscalls.len();
        }
        if self.copies_counted {
            n += PATH_SERIES * self.copies.values().map(BTreeMap::len).sum::<usize>();
        }
        if self.irq.is_some() {
            n += IRQ_SERIES * self.irq_stolen.len();
        }
        if self.blocked_in_counted {
            n += BLOCKED_SERIES * self.blocked_in.values().map(BTreeMap::len).sum::<usize>();
        }
        n
    }

    /// The families without per-process labels: system switches (3), lost events,
    /// untracked threads, drops by reason, two per BPF program, the host and self
    /// gauges, and the interrupts by CPU and kind (count and seconds each).
    fn fixed_series(&self) -> usize {
        let irq = self
            .irq
            .as_ref()
            .map_or(0, |i| 2 * (i.softirqs.len() + i.hardirqs.len()));
        3 + 1
            + 1
            + KernelDrops::REASONS
            + 2 * self.programs.len()
            + host::HostGauges::SERIES
            + host::SELF_SERIES
            + irq
    }

    /// Where this apply starts: each label set shown charged [`SET_SERIES`] whatever
    /// families it has yet (so a set that forks later cannot take `/metrics` past the cap),
    /// plus its copy paths and syscalls blocked in, the zombie gauges and the fixed
    /// families; the catch-all's series are in the room kept for them.
    pub(super) fn budget(&self) -> Budget {
        let mine = |l: &&Labels| !self.guard.is_other(l);
        let sets = self.touched.keys().filter(mine).count();
        let paths: usize = self
            .copies
            .iter()
            .filter(|(l, _)| mine(l))
            .map(|(_, p)| p.len())
            .sum();
        let blocked: usize = self
            .blocked_in
            .iter()
            .filter(|(l, _)| mine(l))
            .map(|(_, s)| s.len())
            .sum();
        let zombies = self
            .zombies
            .as_ref()
            .map_or(0, |z| z.keys().filter(|z| **z != other_zombie()).count());
        let cgroups: usize = self.zombie_cgroups.iter().map(cgroup_series).sum();
        Budget {
            used: self.fixed_series()
                + sets * SET_SERIES
                + paths * PATH_SERIES
                + blocked * BLOCKED_SERIES
                + zombies
                + cgroups,
            max: self.guard.max_series,
        }
    }

    /// The label set `l`'s figures go to: `l` itself when it is shown or fits, else its
    /// fold (see the module's doc).
    pub(super) fn admit(&mut self, l: Labels, b: &mut Budget) -> Labels {
        if !self.guard.limited() || self.touched.contains_key(&l) || self.guard.is_other(&l) {
            return l;
        }
        if b.take(SET_SERIES, false) {
            return l;
        }
        self.guard.note_folded(&l, self.collections);
        let other = self.guard.other_like(&l);
        let partial = Labels {
            comm: l.comm.as_ref().map(|_| OTHER.to_string()),
            attrs: l.attrs,
            pid: None,
        };
        if partial != other && (self.touched.contains_key(&partial) || b.take(SET_SERIES, true)) {
            return partial;
        }
        other
    }

    /// Where a copy path of `owner` (already admitted) goes: its own series when they are
    /// there or fit, else the catch-all's, which keeps paths by syscall only.
    pub(super) fn admit_path(
        &mut self,
        owner: &Labels,
        key: PathKey,
        b: &mut Budget,
    ) -> (Labels, PathKey) {
        let by_syscall = PathKey {
            op: key.op,
            src: fd_kind::UNKNOWN,
            dst: fd_kind::UNKNOWN,
        };
        if !self.guard.limited() {
            return (owner.clone(), key);
        }
        if self.guard.is_other(owner) {
            return (owner.clone(), by_syscall);
        }
        let shown = self.copies.get(owner).is_some_and(|p| p.contains_key(&key));
        if shown || b.take(PATH_SERIES, false) {
            return (owner.clone(), key);
        }
        (self.guard.other_like(owner), by_syscall)
    }

    /// Where the blocked time of `owner` (already admitted) in `syscall` goes: its own
    /// series when they are there or fit, else the catch-all's (which has room for every
    /// syscall label).
    pub(super) fn admit_blocked(
        &mut self,
        owner: &Labels,
        syscall: &'static str,
        b: &mut Budget,
    ) -> Labels {
        if !self.guard.limited() || self.guard.is_other(owner) {
            return owner.clone();
        }
        let shown = self
            .blocked_in
            .get(owner)
            .is_some_and(|s| s.contains_key(syscall));
        if shown || b.take(BLOCKED_SERIES, false) {
            return owner.clone();
        }
        self.guard.other_like(owner)
    }

    /// The zombie holders' cgroups shown: fewest pids left first (no limit last), each
    /// while its series fit under the cap; the rest are left out, not folded.
    pub(super) fn admit_cgroups(
        &self,
        mut cgroups: Vec<CgroupPids>,
        b: &mut Budget,
    ) -> Vec<CgroupPids> {
        cgroups.sort_by(|a, b| a.cgroup.cmp(&b.cgroup));
        cgroups.dedup_by(|a, b| a.cgroup == b.cgroup);
        cgroups.sort_by_key(|c| c.max.map_or(u64::MAX, |m| m.saturating_sub(c.current)));
        if !self.guard.limited() {
            return cgroups;
        }
        cgroups.retain(|c| b.take(cgroup_series(c), false));
        cgroups
    }

    /// The zombie gauge's label for a parent: its own when shown or it fits, else
    /// `parent_comm="other"`.
    pub(super) fn admit_zombie_parent(
        &mut self,
        z: ZombieLabels,
        before: &BTreeMap<ZombieLabels, u64>,
        now: &BTreeMap<ZombieLabels, u64>,
        b: &mut Budget,
    ) -> ZombieLabels {
        if !self.guard.limited() || before.contains_key(&z) || now.contains_key(&z) {
            return z;
        }
        if z == other_zombie() || b.take(1, false) {
            return z;
        }
        self.guard.note_folded(&z, self.collections);
        other_zombie()
    }
}
