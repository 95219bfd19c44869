//! Wire types shared by the kernel side (`proclens-ebpf`) and userspace (`proclens`).
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of pointers, so the same bytes mean the
//! same thing on both sides of the kernel boundary. Userspace gets `aya::Pod` impls behind
//! the `user` feature; the eBPF side uses the types as they are.
#![no_std]
#![allow(
    clippy::inline_always,
    reason = "the helpers run inside the BPF programs, which are built to inline everything"
)]
#![allow(
    clippy::pub_underscore_fields,
    reason = "the wire types spell out their padding as `_pad` fields that both sides initialise"
)]

pub mod config;
pub mod copies;
pub mod counters;
pub mod event;
pub mod forks;
pub mod irq;
pub mod lifecycle;
pub mod switch;
pub mod waits;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type listed is #[repr(C)], Copy, has no padding the kernel could leave
    // uninitialised in a way that matters to readers (all fields are plain integers), and
    // is valid for any bit pattern.
    unsafe impl aya::Pod for crate::switch::ThreadSwitches {}
    unsafe impl aya::Pod for crate::switch::CpuSwitches {}
    unsafe impl aya::Pod for crate::switch::CpuSlot {}
    unsafe impl aya::Pod for crate::switch::CpuTable {}
    unsafe impl aya::Pod for crate::switch::ThreadSlot {}
    unsafe impl aya::Pod for crate::copies::CopyKey {}
    unsafe impl aya::Pod for crate::copies::CopyStats {}
    unsafe impl aya::Pod for crate::copies::Pairing {}
    unsafe impl aya::Pod for crate::copies::SysKey {}
    unsafe impl aya::Pod for crate::copies::ProcKey {}
    unsafe impl aya::Pod for crate::config::Task {}
    unsafe impl aya::Pod for crate::config::Filter {}
    unsafe impl aya::Pod for crate::config::Switch {}
    unsafe impl aya::Pod for crate::config::Rings {}
    unsafe impl aya::Pod for crate::config::Lifecycle {}
    unsafe impl aya::Pod for crate::config::Copies {}
    unsafe impl aya::Pod for crate::config::Forks {}
    unsafe impl aya::Pod for crate::forks::FaultKey {}
    unsafe impl aya::Pod for crate::forks::ForkTimes {}
    unsafe impl aya::Pod for crate::forks::ForkInflight {}
    unsafe impl aya::Pod for crate::config::Irq {}
    unsafe impl aya::Pod for crate::irq::IrqStats {}
    unsafe impl aya::Pod for crate::irq::Stolen {}
    unsafe impl aya::Pod for crate::irq::CpuIrq {}
    unsafe impl aya::Pod for crate::config::Waits {}
    unsafe impl aya::Pod for crate::waits::BlockStats {}
    unsafe impl aya::Pod for crate::waits::ReadyStats {}
    unsafe impl aya::Pod for crate::waits::ReadyEntry {}
    unsafe impl aya::Pod for crate::waits::EpollKey {}
}
