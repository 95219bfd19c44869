//! Booting a kernel with the test initramfs under QEMU's software emulation (TCG: KVM does
//! not work on the machines this runs on) and collecting its serial console.

use std::{
    fs,
    io::{Read as _, Write as _},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

/// What a boot printed, and whether it had to be killed.
pub struct Boot {
    pub output: String,
    pub timed_out: bool,
    pub elapsed: Duration,
}

/// The guest: `vcpus` vCPUs (two by default: the tests pin workloads to CPU 0 and 1;
/// 16 or more make CPUs share proclens's eight event rings) emulated by one host thread,
/// `thread=single`. With one host thread per vCPU (QEMU's default), code that one
/// vCPU patches can still run unpatched on the other: the kernel's text patching of
/// tracepoint static keys (`text_poke_bp`, each time proclens attaches or detaches) then
/// left a stray `int3` in `__schedule`, an Oops, and on 6.1 a guest hung until the boot's
/// time limit. One thread runs the vCPUs in turn and sees every write at once.
/// `oops=panic` (with `panic=-1` and `-no-reboot`) ends a boot at once if the guest kernel
/// still dies, instead of leaving it hung.
pub fn command(vmlinuz: &Path, initrd: &Path, vcpus: u32) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg,thread=single", "-m", "1024", "-smp"])
        .arg(vcpus.to_string())
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 oops=panic",
            "-nographic",
            "-no-reboot",
        ]);
    c
}

/// Boots and returns the serial output; the whole console goes to `log`, and lines that
/// `echo` returns text for are also printed (that text, prefixed with `tag`) as they arrive.
pub fn boot(
    vmlinuz: &Path,
    initrd: &Path,
    vcpus: u32,
    timeout: Duration,
    log: &Path,
    tag: &str,
    mut echo: impl FnMut(&str) -> Option<String>,
) -> Result<Boot> {
    let mut cmd = command(vmlinuz, initrd, vcpus);
    eprintln!("xtask: running {cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let mut log_file = fs::File::create(log)?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    for mut pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let start = Instant::now();
    let deadline = start + timeout;
    let mut output = Vec::new();
    let mut line_start = 0;
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(chunk) => {
                log_file.write_all(&chunk)?;
                output.extend_from_slice(&chunk);
                while let Some(nl) = output[line_start..].iter().position(|&b| b == b'\n') {
                    let line = String::from_utf8_lossy(&output[line_start..line_start + nl]);
                    let line = line.trim_end_matches('\r');
                    if let Some(text) = echo(line) {
                        eprintln!("[{tag}] {}", text.trim());
                    }
                    line_start += nl + 1;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() >= deadline {
                    timed_out = true;
                    let _ = child.kill();
                    break;
                }
            }
        }
    }
    let _ = child.wait();
    Ok(Boot {
        output: String::from_utf8_lossy(&output).into_owned(),
        timed_out,
        elapsed: start.elapsed(),
    })
}
