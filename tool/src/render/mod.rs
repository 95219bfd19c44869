//! Output: plain text lines and NDJSON. Rendering is a pure function of a frame.

pub mod top;
pub mod zombies;
