//! Reading and deleting hash-map entries in batches (`BPF_MAP_LOOKUP_BATCH`,
//! `BPF_MAP_DELETE_BATCH`, Linux 5.6+), which aya 0.14 does not offer: a map of tens of
//! thousands of entries is read in a handful of syscalls instead of two per entry, and
//! the entries of processes that have gone are deleted in one. `run` folds its maps
//! every 250 ms through a fork storm; entry by entry, one fold of ~40,000 entries took
//! longer than the interval.

use std::{
    io,
    os::fd::{AsFd, AsRawFd as _},
};

use aya::{
    Pod,
    maps::{IterableMap, MapData},
};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `union bpf_attr`'s `batch` member (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: bpf(2) with an attribute struct of the size passed, whose pointers refer to
    // buffers that outlive the call (the callers' vectors).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<BatchAttr>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn fd_of<K: Pod, V>(map: &impl IterableMap<K, V>) -> u32 {
    let data: &MapData = map.map();
    data.fd().as_fd().as_raw_fd() as u32
}

/// Every entry of a hash map: its key and its value bytes, `value_len` per entry (for a
/// per-CPU map, each CPU's value rounded up to 8 bytes, possible CPUs in a row).
pub fn lookup_all<K: Pod, V>(
    map: &impl IterableMap<K, V>,
    value_len: usize,
) -> io::Result<Vec<(K, Vec<u8>)>> {
    let fd = fd_of(map);
    let mut out = Vec::new();
    // The token of a hash map's batches is a bucket index (u32).
    let (mut in_batch, mut out_batch) = (0u32, 0u32);
    let mut first = true;
    let mut chunk = 4096usize;
    loop {
        let mut keys = vec![0u8; chunk * size_of::<K>()];
        let mut values = vec![0u8; chunk * value_len];
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                std::ptr::from_mut(&mut in_batch) as u64
            },
            out_batch: std::ptr::from_mut(&mut out_batch) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd,
            ..BatchAttr::default()
        };
        let r = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = attr.count as usize;
        let last = match r {
            Ok(()) => false,
            // The last batch (or an empty map): what it holds is in `count`.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            // One bucket holds more entries than `chunk`: ask for more at once.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && n == 0 => {
                chunk *= 2;
                continue;
            }
            Err(e) => return Err(e),
        };
        for i in 0..n {
            // SAFETY: the kernel wrote `n` keys of `K`'s size; Pod types are valid for any
            // bytes, and the read is unaligned-safe.
            let k: K =
                unsafe { std::ptr::read_unaligned(keys.as_ptr().add(i * size_of::<K>()).cast()) };
            out.push((k, values[i * value_len..(i + 1) * value_len].to_vec()));
        }
        if last {
            return Ok(out);
        }
        in_batch = out_batch;
        first = false;
    }
}

/// Deletes `keys` from a hash map in one call; keys already gone are skipped (the
/// kernel stops at the first missing key, so those after it are deleted one more time).
pub fn delete<K: Pod, V>(map: &impl IterableMap<K, V>, keys: &[K]) -> io::Result<()> {
    let fd = fd_of(map);
    let mut rest = keys;
    while !rest.is_empty() {
        let mut attr = BatchAttr {
            keys: rest.as_ptr() as u64,
            count: rest.len() as u32,
            map_fd: fd,
            ..BatchAttr::default()
        };
        let r = bpf(BPF_MAP_DELETE_BATCH, &mut attr);
        let done = attr.count as usize;
        match r {
            Ok(()) => return Ok(()),
            // `done` were deleted; the next one is not in the map: skip it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                rest = rest.get(done + 1..).unwrap_or_default();
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
