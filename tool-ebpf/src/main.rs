//! proclens's kernel side: one module per concern, thin probe wrappers around fallible
//! `try_` functions, aggregation in maps, and only lifecycle events to userspace.
#![no_std]
#![no_main]

mod config;
mod copies;
mod faults;
mod fdkind;
mod fds;
mod filter;
mod forks;
mod irq;
mod iter;
mod lifecycle;
mod maps;
mod reaper;
mod switch;
mod syscalls;
mod task;
mod threads;
mod waits;
mod zombie_iter;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // A program that could reach this loop never passes the verifier, which is the point:
    // no code path in an accepted program can panic.
    #[allow(
        clippy::empty_loop,
        reason = "the verifier refuses any path that reaches it"
    )]
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
