//! Which processes a view shows, by `-p` and `--comm` (the cgroup filter is the kernel's).

/// The processes a view shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only these processes (all when empty).
    pub pids: Vec<u32>,
    /// Only processes whose command name contains this.
    pub comm: Option<String>,
}

impl Selection {
    /// Whether the process `tgid` named `comm` is shown.
    pub fn matches(&self, tgid: u32, comm: &str) -> bool {
        (self.pids.is_empty() || self.pids.contains(&tgid))
            && self
                .comm
                .as_ref()
                .is_none_or(|want| comm.contains(want.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_and_command_both_select() {
        let all = Selection::default();
        assert!(all.matches(1, "init"));
        let s = Selection {
            pids: vec![7, 9],
            comm: Some("ngin".into()),
        };
        assert!(s.matches(9, "nginx"));
        assert!(!s.matches(8, "nginx"), "pid not asked for");
        assert!(!s.matches(7, "sleep"), "name does not contain ngin");
    }
}
