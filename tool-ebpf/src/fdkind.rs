//! What an fd of the current task refers to: task_struct->files->fdt->fd[n]->f_inode->i_mode,
//! walked with `bpf_probe_read_kernel` through offsets from the running kernel's BTF (set
//! at load time, see `config`). A fault anywhere on the way, or an fd that is not open,
//! gives `fd_kind::UNKNOWN`.
//!
//! The walk does not take `files->file_lock` or the RCU read lock the kernel's own lookup
//! uses; a concurrent close or fd-table resize can at worst make one call's kind stale or
//! unknown (every read is a checked probe read, never a plain dereference).

use proclens_common::copies::fd_kind;

use crate::{config, task::probe};

/// `FMODE_WRITE` (include/linux/fs.h), stable since the first kernels with BPF.
const FMODE_WRITE: u32 = 0x2;

#[inline(always)]
fn read_at<T>(base: u64, offset: u32) -> Option<T> {
    probe(base, offset).ok()
}

/// The `struct file *` open at `fd` in `task`, if any.
#[inline(always)]
pub(crate) fn file_of(task: u64, fd: i32) -> Option<u64> {
    if fd < 0 {
        return None;
    }
    let files: u64 = read_at(task, config::task_files_off())?;
    if files == 0 {
        return None;
    }
    let fdt: u64 = read_at(files, config::files_fdt_off())?;
    if fdt == 0 {
        return None;
    }
    let max_fds: u32 = read_at(fdt, config::fdt_max_fds_off())?;
    if fd as u32 >= max_fds {
        return None;
    }
    let array: u64 = read_at(fdt, config::fdt_fd_off())?;
    if array == 0 {
        return None;
    }
    // The slot's address, not an offset: 8 * fd may not fit the u32 of an offset.
    let file: u64 = read_at(array + 8 * fd as u64, 0)?;
    if file == 0 { None } else { Some(file) }
}

/// [`fd_kind`] of an open file.
#[inline(always)]
pub(crate) fn kind_of_file(file: u64) -> u8 {
    let Some(inode) = read_at::<u64>(file, config::file_inode_off()) else {
        return fd_kind::UNKNOWN;
    };
    if inode == 0 {
        return fd_kind::UNKNOWN;
    }
    match read_at::<u16>(inode, config::inode_mode_off()) {
        Some(mode) => fd_kind::from_mode(mode),
        None => fd_kind::UNKNOWN,
    }
}

/// [`fd_kind`] of `fd` in `task`.
#[inline(always)]
pub(crate) fn kind(task: u64, fd: i32) -> u8 {
    match file_of(task, fd) {
        Some(file) => kind_of_file(file),
        None => fd_kind::UNKNOWN,
    }
}

/// Whether `file` is open for writing (`f_mode & FMODE_WRITE`).
#[inline(always)]
pub(crate) fn is_writable(file: u64) -> bool {
    read_at::<u32>(file, config::file_mode_off()).is_some_and(|m| m & FMODE_WRITE != 0)
}
