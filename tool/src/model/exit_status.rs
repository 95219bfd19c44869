//! How a process died, as every view shows it: `exit_code` or `signal` (with
//! `core_dumped`) in JSON, "exit 3" / "signal 11 (core dumped)" in text.

use proclens_common::lifecycle::ExitStatus;
use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct StatusFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<u8>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub core_dumped: bool,
}

impl From<ExitStatus> for StatusFields {
    fn from(s: ExitStatus) -> Self {
        match s {
            ExitStatus::Code(c) => Self {
                exit_code: Some(c),
                signal: None,
                core_dumped: false,
            },
            ExitStatus::Signal {
                signal,
                core_dumped,
            } => Self {
                exit_code: None,
                signal: Some(signal),
                core_dumped,
            },
        }
    }
}

impl StatusFields {
    pub fn text(self) -> String {
        match (self.exit_code, self.signal) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) if self.core_dumped => format!("signal {s} (core dumped)"),
            (None, Some(s)) => format!("signal {s}"),
            (None, None) => "?".into(),
        }
    }
}

/// "exit 3", "signal 9", "signal 11 (core dumped)".
pub fn status_text(s: ExitStatus) -> String {
    StatusFields::from(s).text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields_and_text_name_the_same_death() {
        let killed = ExitStatus::Signal {
            signal: 11,
            core_dumped: true,
        };
        assert_eq!(
            serde_json::to_value(StatusFields::from(killed)).unwrap(),
            serde_json::json!({"signal": 11, "core_dumped": true})
        );
        assert_eq!(status_text(killed), "signal 11 (core dumped)");
        assert_eq!(
            serde_json::to_value(StatusFields::from(ExitStatus::Code(3))).unwrap(),
            serde_json::json!({"exit_code": 3})
        );
        assert_eq!(status_text(ExitStatus::Code(3)), "exit 3");
    }
}
