//! Output: plain text lines and NDJSON. Rendering is a pure function of a frame.

pub mod copies;
pub mod forks;
pub mod irq;
pub mod latency;
pub mod prometheus;
pub mod run;
pub mod top;
pub mod tui;
pub mod zombies;
