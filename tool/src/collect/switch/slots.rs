//! The switch programs' direct-mapped thread table (`THREAD_SLOTS`, see
//! `proclens_common::switch::ThreadSlot`), read through a read-only shared mapping of the
//! array: one pass over its 2 MiB per read, where a lookup per slot would cost 8,192
//! syscalls.

use std::{
    collections::HashMap,
    os::fd::AsFd as _,
    sync::atomic::{AtomicU32, Ordering, fence},
};

use anyhow::{Context as _, Result, bail};
use aya::maps::{Map, MapData};
use memmap2::{Mmap, MmapOptions};
use proclens_common::switch::{THREAD_SLOTS, ThreadSlot, ThreadSwitches};

pub struct ThreadSlots {
    mmap: Mmap,
    /// The map's fd, held as long as the mapping for clarity (the mapping alone would keep
    /// the map alive).
    _map: MapData,
}

impl ThreadSlots {
    /// Maps `THREAD_SLOTS`, taken from the loaded object.
    pub fn new(map: Map) -> Result<Self> {
        let Map::Array(map) = map else {
            bail!("map THREAD_SLOTS is not an array");
        };
        let len = THREAD_SLOTS as usize * size_of::<ThreadSlot>();
        // SAFETY: a read-only shared mapping of an array the kernel made mappable
        // (BPF_F_MMAPABLE, whole pages); the programs write it meanwhile, which `read_slot`
        // allows for.
        let mmap = unsafe { MmapOptions::new().len(len).map(&map.fd().as_fd()) }
            .context("mapping THREAD_SLOTS")?;
        Ok(Self { mmap, _map: map })
    }

    /// Adds the entry of every owned slot to `out`, by owner thread id.
    pub fn read_into(&self, out: &mut HashMap<u32, ThreadSwitches>) {
        let slots = self.mmap.as_ptr().cast::<ThreadSlot>();
        for i in 0..THREAD_SLOTS as usize {
            // SAFETY: slot `i` lies within the mapping (THREAD_SLOTS slots long), which is
            // page-aligned; every bit pattern is a valid ThreadSlot.
            if let Some((tid, stats)) = unsafe { read_slot(slots.add(i)) } {
                out.insert(tid, stats);
            }
        }
    }
}

/// A slot's owner and entry when it is owned and its owner reads the same before and after
/// the entry: a slot released or claimed meanwhile is left out (the kernel sets `owner`
/// after filling a claimed slot and clears it before the slot can be claimed again).
///
/// # Safety
/// `slot` must point to a readable, 4-byte aligned `ThreadSlot`.
unsafe fn read_slot(slot: *const ThreadSlot) -> Option<(u32, ThreadSwitches)> {
    // SAFETY: per the caller; `owner` is only ever loaded through it.
    let owner = unsafe { AtomicU32::from_ptr((&raw const (*slot).owner).cast_mut()) };
    let before = owner.load(Ordering::Acquire);
    if before == 0 {
        return None;
    }
    // SAFETY: per the caller. A volatile copy: the kernel may be updating the counters.
    let stats = unsafe { std::ptr::read_volatile(&raw const (*slot).stats) };
    fence(Ordering::Acquire);
    (owner.load(Ordering::Relaxed) == before).then_some((before, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(slots: &[ThreadSlot]) -> HashMap<u32, ThreadSwitches> {
        slots
            .iter()
            .filter_map(|s| unsafe { read_slot(s) })
            .collect()
    }

    #[test]
    fn owned_slots_are_read_by_owner_and_free_ones_skipped() {
        let stats = |tgid, voluntary| ThreadSwitches {
            tgid,
            voluntary,
            ..Default::default()
        };
        let mut slots = vec![ThreadSlot::default(); 4];
        slots[1].owner = 8193;
        slots[1].stats = stats(8190, 7);
        slots[3].owner = 3;
        slots[3].stats = stats(3, 1);
        // A released slot keeps its last entry but has no owner.
        slots[2].stats = stats(42, 9);
        let got = read_all(&slots);
        assert_eq!(got.len(), 2);
        assert_eq!(got[&8193], stats(8190, 7));
        assert_eq!(got[&3], stats(3, 1));
    }
}
