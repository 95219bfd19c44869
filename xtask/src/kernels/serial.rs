//! Parsing a VM's serial console output into per-test-binary results.

use super::initramfs::{BEGIN, HUNG, HUNG_END, KERNEL, RESULT, SUMMARY};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Failed, with the names of the failing tests (from libtest's `... FAILED` lines).
    Fail {
        tests: Vec<String>,
        exit: String,
    },
    /// Started but never reported (the VM crashed or timed out).
    NoResult,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryResult {
    pub name: String,
    pub verdict: Verdict,
    /// Tests passed, from libtest's `test result:` line.
    pub passed: u32,
    pub failed: u32,
}

/// What one boot showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootReport {
    /// `uname -r` inside the VM.
    pub release: Option<String>,
    pub binaries: Vec<BinaryResult>,
    /// Whether /init got to its summary line (it then powered off).
    pub finished: bool,
}

impl BootReport {
    pub fn ok(&self, expected: usize) -> bool {
        self.finished
            && self.binaries.len() == expected
            && self.binaries.iter().all(|b| b.verdict == Verdict::Pass)
    }
}

/// The text of a marker line: serial lines may carry kernel messages before the marker
/// and a carriage return after it.
fn after_marker<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let i = line.find(marker)?;
    Some(line[i + marker.len()..].trim())
}

pub fn parse(output: &str) -> BootReport {
    let mut r = BootReport::default();
    // libtest's closing `failures:` list (one indented name a line), which stays readable
    // when a test's own output splits its `test NAME ... FAILED` line.
    let mut failures: Option<Vec<String>> = None;
    // The test running in the current binary (named if the binary hangs).
    let mut running = Running::default();
    for raw in output.lines() {
        let line = raw.trim_end_matches('\r');
        running.see(line);
        if line.trim() == "failures:" {
            failures = Some(Vec::new());
            continue;
        }
        if let Some(list) = &mut failures {
            let name = line.strip_prefix("    ").unwrap_or("");
            if !name.is_empty() && !name.contains(char::is_whitespace) {
                list.push(name.to_string());
                continue;
            }
        }
        if let Some(rel) = after_marker(line, KERNEL) {
            r.release = Some(rel.to_string());
        } else if let Some(name) = after_marker(line, BEGIN) {
            r.binaries.push(BinaryResult {
                name: name.to_string(),
                verdict: Verdict::NoResult,
                passed: 0,
                failed: 0,
            });
        } else if let Some(rest) = after_marker(line, RESULT) {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(v)) = (parts.next(), parts.next()) else {
                continue;
            };
            let exit = parts.collect::<Vec<_>>().join(" ");
            if let Some(b) = r.binaries.iter_mut().rev().find(|b| b.name == name) {
                b.verdict = match (v, &b.verdict) {
                    ("PASS", _) => Verdict::Pass,
                    (_, Verdict::Fail { tests, .. }) => Verdict::Fail {
                        tests: tests.clone(),
                        exit,
                    },
                    _ => Verdict::Fail {
                        tests: Vec::new(),
                        exit,
                    },
                };
            }
        } else if line.contains(HUNG) && !line.contains(HUNG_END) {
            if let Some(b) = r.binaries.last_mut() {
                let name = running.name().unwrap_or("?");
                b.verdict = Verdict::Fail {
                    tests: vec![format!("{name} (hung)")],
                    exit: String::new(),
                };
            }
        } else if line.contains(SUMMARY) {
            r.finished = true;
        } else if let Some(b) = r.binaries.last_mut() {
            let l = line.trim();
            if let Some(test) = l
                .strip_prefix("test ")
                .and_then(|t| t.strip_suffix(" ... FAILED"))
            {
                match &mut b.verdict {
                    Verdict::Fail { tests, .. } => tests.push(test.to_string()),
                    v => {
                        *v = Verdict::Fail {
                            tests: vec![test.to_string()],
                            exit: String::new(),
                        }
                    }
                }
            } else if let Some(res) = l.strip_prefix("test result: ") {
                if let Some(list) = failures.take().filter(|l| !l.is_empty()) {
                    b.verdict = Verdict::Fail {
                        tests: list,
                        exit: String::new(),
                    };
                }
                // "FAILED. 3 passed; 1 failed; 0 ignored; ..."
                for part in res.split(';') {
                    let mut w = part.split_whitespace().rev();
                    let (Some(kind), Some(n)) = (w.next(), w.next()) else {
                        continue;
                    };
                    let n = n.parse().unwrap_or(0);
                    match kind {
                        "passed" => b.passed += n,
                        "failed" => b.failed += n,
                        _ => {}
                    }
                }
            }
        }
    }
    // A binary that printed FAILED lines but whose result line never came stays NoResult.
    for b in &mut r.binaries {
        if let Verdict::Fail { exit, .. } = &b.verdict
            && exit.is_empty()
            && !output.contains(&format!("{RESULT} {}", b.name))
        {
            b.verdict = Verdict::NoResult;
        }
    }
    r
}

/// Which console lines `cargo xtask test-kernels` echoes as they arrive: the markers, the
/// failing tests, a kernel panic, each test panic with its message (the lines after
/// `panicked at`, which say why), and /init's dump of a hung binary with the test that was
/// running, so a CI log alone explains a failure.
#[derive(Debug, Default)]
pub struct ConsoleEcho {
    /// Lines of a panic message still to echo.
    message_left: usize,
    /// Inside /init's process dump (between [`HUNG`] and [`HUNG_END`]): lines still to echo.
    dump_left: usize,
    running: Running,
}

impl ConsoleEcho {
    /// Most lines of one panic message echoed (a `{rows:?}` dump can be long).
    const MESSAGE_LINES: usize = 12;
    /// Most lines of one process dump echoed (the serial log keeps all of it).
    const DUMP_LINES: usize = 400;

    /// The text to echo for one console line, if any.
    pub fn line(&mut self, line: &str) -> Option<String> {
        if line.contains(HUNG_END) {
            self.dump_left = 0;
            return Some(line.to_string());
        }
        if line.contains(HUNG) {
            self.dump_left = Self::DUMP_LINES;
            let running = self.running.name().unwrap_or("no test announced");
            return Some(format!("{} (running: {running})", line.trim()));
        }
        if self.dump_left > 0 {
            self.dump_left -= 1;
            return Some(line.to_string());
        }
        self.running.see(line);
        self.wants(line).then(|| line.to_string())
    }

    fn wants(&mut self, line: &str) -> bool {
        if line.contains("panicked at") || kernel_trouble(line) {
            self.message_left = Self::MESSAGE_LINES;
            return true;
        }
        let marker = line.contains("PROCLENS-")
            || line.contains("... FAILED")
            || line.contains("Kernel panic");
        if marker || line.trim().is_empty() || line.starts_with("note: ") {
            self.message_left = 0;
            return marker;
        }
        if self.message_left > 0 {
            self.message_left -= 1;
            return true;
        }
        false
    }
}

/// A kernel message that says the guest kernel itself went wrong (an Oops, a BUG or
/// WARNING splat, an RCU stall, a hung task), which can stall a test as surely as a bug in
/// proclens can.
fn kernel_trouble(line: &str) -> bool {
    const SIGNS: &[&str] = &[
        "] Oops",
        "] BUG:",
        "] WARNING:",
        "] rcu: INFO:",
        "self-detected stall",
        "blocked for more than",
        "] watchdog: BUG:",
    ];
    SIGNS.iter().any(|s| line.contains(s))
}

/// The test libtest announced last (`test NAME ... `, possibly followed on the same line
/// by the test's own output) in the current binary and has not given a verdict for.
#[derive(Debug, Default)]
struct Running(Option<String>);

impl Running {
    fn see(&mut self, line: &str) {
        if line.contains(BEGIN) {
            self.0 = None;
            return;
        }
        let Some((name, after)) = line
            .trim()
            .strip_prefix("test ")
            .and_then(|rest| rest.split_once(" ..."))
        else {
            return;
        };
        let verdict = ["ok", "FAILED", "ignored"]
            .iter()
            .any(|v| after.trim().starts_with(v));
        self.0 = (!verdict).then(|| name.to_string());
    }

    fn name(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_keeps_markers_and_panic_messages() {
        let mut e = ConsoleEcho::default();
        let shown: Vec<&str> = [
            "[    1.2] random: crng init done",
            "PROCLENS-TEST-BEGIN switch_kinds",
            "test a ... FAILED",
            "thread 'a' (114) panicked at tool/tests/switch_kinds.rs:258:5:",
            "proclens: cannot read the map: Operation not permitted",
            "second line of the message",
            "[   40.1] BUG: kernel NULL pointer dereference, address: 0000000000000008",
            "[   40.1] RIP: 0010:__schedule+0x1/0x2",
            "note: run with `RUST_BACKTRACE=1`",
            "unrelated output",
            "PROCLENS-TEST-RESULT switch_kinds FAIL exit=101",
        ]
        .into_iter()
        .filter(|l| e.line(l).is_some())
        .collect();
        assert_eq!(
            shown,
            [
                "PROCLENS-TEST-BEGIN switch_kinds",
                "test a ... FAILED",
                "thread 'a' (114) panicked at tool/tests/switch_kinds.rs:258:5:",
                "proclens: cannot read the map: Operation not permitted",
                "second line of the message",
                "[   40.1] BUG: kernel NULL pointer dereference, address: 0000000000000008",
                "[   40.1] RIP: 0010:__schedule+0x1/0x2",
                "PROCLENS-TEST-RESULT switch_kinds FAIL exit=101",
            ]
        );
    }

    const OUTPUT: &str = "\
[    0.000000] Linux version 5.10.0-32-cloud-amd64\r
PROCLENS-KERNEL 5.10.0-32-cloud-amd64\r
PROCLENS-TEST-BEGIN switches\r
\r
running 3 tests\r
test __workload_entry ... ok\r
test sleeper_voluntary_switches_match_the_kernel_exactly ... ok\r
test thread_pingpong_voluntary_switches_match_the_kernel_exactly ... ok\r
\r
test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9.12s\r
PROCLENS-TEST-RESULT switches PASS\r
PROCLENS-TEST-BEGIN cli\r
running 2 tests\r
test argument_errors_exit_2_with_one_line ... ok\r
test running_agent_holds_no_capability_and_still_reports ... FAILED\r
test run_holds_no_capability_while_the_command_runs ... proclens: note: something\r
FAILED\r
[   12.345678] random: crng init done\r
failures:\r
\r
---- running_agent_holds_no_capability_and_still_reports stdout ----\r
    some indented output\r
failures:\r
    run_holds_no_capability_while_the_command_runs\r
    running_agent_holds_no_capability_and_still_reports\r
test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out\r
PROCLENS-TEST-RESULT cli FAIL exit=101\r
PROCLENS-TEST-BEGIN switch_kinds\r
running 8 tests\r
test cgroup_filter_selects_only_that_subtree ... ";

    #[test]
    fn parses_results_failures_and_a_crash() {
        let r = parse(OUTPUT);
        assert_eq!(r.release.as_deref(), Some("5.10.0-32-cloud-amd64"));
        assert!(!r.finished);
        assert_eq!(r.binaries.len(), 3);
        assert_eq!(r.binaries[0].name, "switches");
        assert_eq!(r.binaries[0].verdict, Verdict::Pass);
        assert_eq!((r.binaries[0].passed, r.binaries[0].failed), (3, 0));
        assert_eq!(
            r.binaries[1].verdict,
            Verdict::Fail {
                tests: vec![
                    "run_holds_no_capability_while_the_command_runs".into(),
                    "running_agent_holds_no_capability_and_still_reports".into()
                ],
                exit: "exit=101".into()
            }
        );
        assert_eq!((r.binaries[1].passed, r.binaries[1].failed), (1, 2));
        assert_eq!(r.binaries[2].verdict, Verdict::NoResult);
        assert!(!r.ok(3));
    }

    const HUNG_OUTPUT: &str = "\
PROCLENS-TEST-BEGIN switch_kinds\r
running 8 tests\r
test __workload_entry ... ok\r
test run_reports_a_sleep_as_blocked_time ... \r
PROCLENS-HUNG switch_kinds after 300 s\r
pid 1 state S wchan do_wait: /bin/sh /init\r
    [<0>] do_wait+0x1/0x2\r
PROCLENS-HUNG-END\r
PROCLENS-TEST-RESULT switch_kinds FAIL exit=124\r
PROCLENS-TEST-BEGIN cli\r
PROCLENS-TEST-RESULT cli PASS\r
PROCLENS-SUMMARY pass=1 fail=1\r
";

    #[test]
    fn a_hung_binary_names_its_running_test() {
        let r = parse(HUNG_OUTPUT);
        assert!(r.finished);
        assert_eq!(
            r.binaries[0].verdict,
            Verdict::Fail {
                tests: vec!["run_reports_a_sleep_as_blocked_time (hung)".into()],
                exit: "exit=124".into()
            }
        );
        assert_eq!(r.binaries[1].verdict, Verdict::Pass);
        let mut e = ConsoleEcho::default();
        let shown: Vec<String> = HUNG_OUTPUT
            .lines()
            .filter_map(|l| e.line(l.trim_end_matches('\r')))
            .collect();
        assert_eq!(
            shown[1],
            "PROCLENS-HUNG switch_kinds after 300 s (running: run_reports_a_sleep_as_blocked_time)"
        );
        assert!(shown.contains(&"    [<0>] do_wait+0x1/0x2".to_string()));
        assert!(!shown.iter().any(|l| l.contains("__workload_entry")));
    }

    #[test]
    fn a_hung_test_is_named_only_within_its_binary() {
        let out = "\
PROCLENS-TEST-BEGIN cli
test slow_one ... proclens: note: printed before its verdict
PROCLENS-HUNG cli after 300 s
PROCLENS-HUNG-END
PROCLENS-TEST-RESULT cli FAIL exit=124
PROCLENS-TEST-BEGIN zombies
PROCLENS-HUNG zombies after 300 s
PROCLENS-HUNG-END
PROCLENS-TEST-RESULT zombies FAIL exit=124
";
        let r = parse(out);
        let hung = |i: usize| match &r.binaries[i].verdict {
            Verdict::Fail { tests, .. } => tests.clone(),
            v => panic!("{v:?}"),
        };
        assert_eq!(hung(0), ["slow_one (hung)"]);
        assert_eq!(hung(1), ["? (hung)"], "nothing announced in this binary");
    }

    #[test]
    fn a_clean_run_is_ok() {
        let out = "PROCLENS-KERNEL 6.1.0\nPROCLENS-TEST-BEGIN a\nPROCLENS-TEST-RESULT a PASS\n\
                   [ 1.0] x PROCLENS-SUMMARY pass=1 fail=0\n";
        let r = parse(out);
        assert!(r.finished);
        assert!(r.ok(1));
        assert!(!r.ok(2), "a binary that never started is a failure");
    }
}
