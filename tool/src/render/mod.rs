//! Output: plain text lines and NDJSON. Rendering is a pure function of a frame.

pub mod copies;
pub mod forks;
pub mod irq;
pub mod latency;
pub mod prometheus;
pub mod run;
pub mod top;
pub mod tui;
pub mod waits;
pub mod zombies;

/// One interval's report of a line view (`top`, `copies`, `irq`, `forks`): NDJSON or
/// text, each a pure function of the frame.
pub trait Report {
    fn json_lines(&self) -> Vec<String>;
    fn plain_lines(&self) -> Vec<String>;
}

/// Implements [`Report`] for a module's `Frame` with its `json_lines` and `plain_lines`.
macro_rules! report_with {
    ($frame:ty) => {
        impl crate::render::Report for $frame {
            fn json_lines(&self) -> Vec<String> {
                json_lines(self)
            }
            fn plain_lines(&self) -> Vec<String> {
                plain_lines(self)
            }
        }
    };
}
pub(crate) use report_with;
