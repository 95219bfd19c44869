//! The zombies that exist at start-up, from the kernel (tool-ebpf/src/zombie_iter.rs): a
//! task iterator loaded, read once and unloaded while proclens is still privileged.

use std::io::Read as _;

use anyhow::{Context as _, Result};
use aya::programs::Iter;
use proclens_common::lifecycle::{ZombieSeed, seed_flags};

use crate::collect::object::Object;

/// The iterator program.
pub const PROGRAM: &str = "zombie_seeds";

/// Loads the task iterator and runs it once: one record per zombie process on the
/// machine. It stays loaded, to be run again (see [`read`]).
pub fn load(obj: &mut Object, kernel: &aya::Btf) -> Result<Vec<ZombieSeed>> {
    let prog: &mut Iter = obj
        .program_mut(PROGRAM)
        .with_context(|| format!("program {PROGRAM} missing from the BPF object"))?
        .try_into()?;
    crate::collect::setup::load_iter(prog, "task", kernel)
        .context("loading the task iterator (iter/task, Linux 5.8+)")?;
    read(obj)
}

/// Runs the loaded task iterator: the zombies on the machine now.
pub fn read(obj: &mut Object) -> Result<Vec<ZombieSeed>> {
    let prog: &mut Iter = obj
        .program_mut(PROGRAM)
        .with_context(|| format!("program {PROGRAM} missing from the BPF object"))?
        .try_into()?;
    let link = prog.attach().context("attaching the task iterator")?;
    let link = prog.take_link(link)?;
    let mut file = link.into_file().context("creating the task iterator")?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .context("reading the task iterator")?;
    Ok(parse(&bytes))
}

/// The records in `bytes` (whole records only).
pub fn parse(bytes: &[u8]) -> Vec<ZombieSeed> {
    bytes
        .chunks_exact(size_of::<ZombieSeed>())
        // SAFETY: `ZombieSeed` is a plain-integer #[repr(C)] type valid for any bit
        // pattern; read_unaligned needs no alignment; the chunk has its size.
        .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<ZombieSeed>()) })
        .collect()
}

/// When the zombie died on the boot clock: when it last ran (the run-queue clock) moved
/// by the offset between the two clocks read together. `None` when the kernel could not
/// say (no `sched_info`, or values that do not fit).
pub fn died_ns(z: &ZombieSeed) -> Option<u64> {
    if z.flags & seed_flags::CLOCKED == 0 || z.last_arrival == 0 || z.last_arrival > z.rq_clock {
        return None;
    }
    z.boot_ns.checked_sub(z.rq_clock - z.last_arrival)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_and_date_their_death() {
        let z = ZombieSeed {
            last_arrival: 700,
            boot_ns: 10_000,
            rq_clock: 1_000,
            flags: seed_flags::CLOCKED,
            ..Default::default()
        };
        // Last ran 300 ns before the clocks were read.
        assert_eq!(died_ns(&z), Some(9_700));
        assert_eq!(died_ns(&ZombieSeed { flags: 0, ..z }), None);
        assert_eq!(
            died_ns(&ZombieSeed {
                last_arrival: 2_000,
                ..z
            }),
            None
        );
        assert_eq!(
            died_ns(&ZombieSeed {
                last_arrival: 0,
                ..z
            }),
            None
        );
        let bytes: Vec<u8> = [z, z]
            .iter()
            .flat_map(|r| {
                // SAFETY: viewing a plain #[repr(C)] value as bytes.
                unsafe {
                    std::slice::from_raw_parts(
                        std::ptr::from_ref::<ZombieSeed>(r).cast::<u8>(),
                        size_of::<ZombieSeed>(),
                    )
                }
                .to_vec()
            })
            .collect();
        assert_eq!(parse(&bytes), [z, z]);
        assert_eq!(
            parse(&bytes[..bytes.len() - 1]),
            [z],
            "a cut record is left out"
        );
    }
}
