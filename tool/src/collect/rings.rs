//! The event rings' layout: how many of the eight rings (`event::RINGS`) the programs
//! write, one per CPU up to eight (CPUs beyond share them), and their size.

use anyhow::Result;
use aya::{
    EbpfLoader,
    maps::{MapData, RingBuf},
};
use proclens_common::{config, event::RINGS};

use super::{
    globals::Globals,
    object::Object,
    setup::{self, Setup},
};

/// Bytes of all the rings in use together.
const TOTAL_BYTES: u32 = 4 * 1024 * 1024;
/// Bytes of a ring in use at least.
const MIN_BYTES: u32 = 1024 * 1024;

/// The rings in use and their size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    /// Rings written: a power of two up to `RINGS.len()`; CPU *c* writes ring *c* mod it.
    pub used: u32,
    /// Bytes per ring in use (a power of two).
    pub bytes: u32,
    /// Unread bytes of a ring above which a submit wakes the reader: an eighth of it.
    pub backlog: u64,
}

impl RingLayout {
    /// The layout for `cpus` possible CPUs: one ring each, up to eight.
    pub fn for_cpus(cpus: usize) -> Self {
        let used = cpus.clamp(1, RINGS.len()).next_power_of_two() as u32;
        let bytes = (TOTAL_BYTES / used).max(MIN_BYTES);
        Self {
            used,
            bytes,
            backlog: u64::from(bytes / 8),
        }
    }

    /// The layout for this machine. `PROCLENS_RING_BYTES` (a test and diagnosis knob,
    /// not a flag: lost events are what it is for) sets each ring's size, rounded up to
    /// a power of two.
    pub fn here() -> Self {
        let mut l = Self::for_cpus(aya::util::nr_cpus().unwrap_or(1));
        if let Some(bytes) = std::env::var("PROCLENS_RING_BYTES")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|b| *b > 0)
        {
            l.bytes = bytes.checked_next_power_of_two().unwrap_or(1 << 31);
            l.backlog = u64::from(l.bytes / 8);
        }
        l
    }

    /// The map names of the rings in use.
    pub fn names(&self) -> &'static [&'static str] {
        &RINGS[..self.used as usize]
    }

    /// Takes the rings in use out of the loaded object, to be polled by the caller.
    pub fn take(&self, obj: &mut Object) -> Result<Vec<RingBuf<MapData>>> {
        self.names()
            .iter()
            .map(|name| Ok(RingBuf::try_from(setup::take_map(obj, name)?)?))
            .collect()
    }
}

impl Setup for RingLayout {
    /// Sizes the rings (those not in use to one page) and tells the programs the layout.
    fn configure<'a>(&'a self, globals: &mut Globals, loader: &mut EbpfLoader<'a>) {
        let page = page_size();
        for (i, name) in RINGS.iter().enumerate() {
            let bytes = if (i as u32) < self.used {
                self.bytes.max(page)
            } else {
                page
            };
            loader.map_max_entries(name, bytes);
        }
        globals.rings = config::Rings {
            used: self.used,
            _pad: 0,
            wakeup_backlog: self.backlog,
        };
    }

    fn attach(&self, _obj: &mut Object, _kernel: &aya::Btf) -> Result<()> {
        Ok(())
    }
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(n)
        .ok()
        .filter(|n| n.is_power_of_two())
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ring_per_cpu_up_to_eight_four_mib_in_all() {
        let mib = 1024 * 1024;
        let l = |cpus| {
            let r = RingLayout::for_cpus(cpus);
            (r.used, r.bytes / mib, r.backlog)
        };
        assert_eq!(l(0), (1, 4, 512 * 1024));
        assert_eq!(l(1), (1, 4, 512 * 1024));
        assert_eq!(l(2), (2, 2, 256 * 1024));
        // Three CPUs: four rings, one never written (CPU c writes ring c mod 4).
        assert_eq!(l(3), (4, 1, 128 * 1024));
        assert_eq!(l(8), (8, 1, 128 * 1024));
        assert_eq!(l(256), (8, 1, 128 * 1024));
        assert_eq!(RingLayout::for_cpus(2).names(), ["EVENTS_0", "EVENTS_1"]);
    }
}
