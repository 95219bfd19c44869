//! Real BPF: a 32-bit program on this 64-bit kernel (built with `gcc -m32 -static` from
//! tests/programs/compat32.c) makes its syscalls through the compat ABI, whose numbers
//! differ from the 64-bit ones (3 is read there, close here): each is named from the i386
//! table and flagged, and its copy paths are exact, recvmmsg/sendmmsg included.
mod common;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use common::{Proclens, can_trace, copy_window::path_totals};
use serde_json::Value;

/// The program, built for i386; `None` (with the reason printed) where this machine has
/// no 32-bit toolchain, which under CI is a failure (`cargo xtask setup` installs
/// gcc-multilib).
fn program() -> Option<PathBuf> {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/programs/compat32.c");
    let name = format!("pl32c{}", std::process::id() % 100_000);
    let exe = std::env::temp_dir().join(&name);
    let built = Command::new("gcc")
        .args(["-m32", "-static", "-O2", "-o"])
        .arg(&exe)
        .arg(src)
        .output();
    match built {
        Ok(o) if o.status.success() => Some(exe),
        other => {
            let why = format!("no 32-bit toolchain (gcc -m32 -static): {other:?}");
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
                "{why}"
            );
            eprintln!("skipped: {why}");
            None
        }
    }
}

#[test]
fn a_32_bit_programs_syscalls_are_named_flagged_and_counted() {
    if !can_trace() {
        return;
    }
    let Some(exe) = program() else { return };
    let name = exe.file_name().unwrap().to_str().unwrap().to_string();
    let p = Proclens::spawn(&[
        "copies",
        "--json",
        "--interval",
        "0.3",
        "--syscalls",
        "30",
        "--comm",
        &name,
    ]);
    p.json_until(Duration::from_secs(30), |v| v["type"] == "copies_system");
    let mut child = Command::new(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let pid = child.id();
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "done\n");
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_file(&exe);
    let v: Value = p.json_until(Duration::from_secs(15), |v| {
        v["type"] == "copies" && v["pid"] == pid && v["alive"] == false
    });
    // Exact paths, through the 32-bit read/write and the direct mmsg syscalls.
    assert_eq!(
        path_totals(&v, "read", "other->user"),
        (4_096_000, 1000, 0),
        "{v}"
    );
    assert_eq!(
        path_totals(&v, "write", "user->other"),
        (4_096_000, 1000, 0),
        "{v}"
    );
    assert_eq!(
        path_totals(&v, "sendmmsg", "user->socket"),
        (50_000, 50, 0),
        "{v}"
    );
    assert_eq!(
        path_totals(&v, "recvmmsg", "socket->user"),
        (50_000, 50, 0),
        "{v}"
    );
    // Every syscall of a static 32-bit program is a compat one.
    let total = v["syscalls_total"].as_u64().unwrap();
    assert!(total > 2100, "{v}");
    assert_eq!(v["compat_syscalls_total"], total);
    let top = v["top_syscalls"].as_array().unwrap();
    assert!(top.iter().all(|s| s["abi"] == "i386"), "{top:?}");
    let count = |n: &str| {
        top.iter()
            .find(|s| s["name"] == n)
            .map(|s| s["count_total"].as_u64().unwrap())
    };
    // 1000 reads of /dev/zero and one of stdin; 1000 writes and "ready", "done".
    assert_eq!(count("read"), Some(1001), "{top:?}");
    assert_eq!(count("write"), Some(1002), "{top:?}");
    assert_eq!(
        count("close"),
        None,
        "a 32-bit read named from the 64-bit table"
    );
    assert_eq!(count("sendmmsg"), Some(50));
}
