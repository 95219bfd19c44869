//! The terminal side of the live view: a collector thread sends snapshots over a channel,
//! this thread reads keys and draws. The terminal is restored on every way out: normal
//! quit, an error (guard), a panic (ratatui's hook), and a signal (the collector stops,
//! the channel closes, the loop ends).

use std::{
    sync::mpsc::{self, TryRecvError},
    time::Duration,
};

use anyhow::{Result, anyhow};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use super::Period;
use crate::{
    collect::{
        extras::ExtrasOptions,
        session::{self, RowKinds, Snapshot, idle_rows},
        tracer::Tracer,
    },
    model::selection::Selection,
    render::tui::{Action, App, Key, draw},
};

/// Restores the terminal when dropped.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn key_of(code: KeyCode, mods: KeyModifiers) -> Option<Key> {
    Some(match code {
        KeyCode::Char('c') if mods.contains(KeyModifiers::CONTROL) => Key::CtrlC,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::Tab => Key::Tab,
        _ => return None,
    })
}

/// What the terminal (standard input) has for the view.
#[derive(Debug, PartialEq, Eq)]
enum TtyState {
    Idle,
    Input,
    /// Hung up (window closed, tmux session killed) or unusable.
    Gone,
}

/// Waits up to `timeout` for input on the terminal.
fn wait_for_tty(timeout: Duration) -> TtyState {
    let mut fds = [libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: poll on one valid pollfd.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout.as_millis() as i32) };
    let r = fds[0].revents;
    if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
        TtyState::Idle
    } else if n < 0 || r & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        TtyState::Gone
    } else if r & libc::POLLIN != 0 {
        TtyState::Input
    } else {
        TtyState::Idle
    }
}

/// What the live view shows at start: every `-p` (listed even while they do not switch,
/// as the line view lists them) and `--comm`; `threads` apart or not; the Copies tab
/// when copy paths are accounted.
pub struct View {
    pub selection: Selection,
    pub threads: bool,
    pub has_copies: bool,
}

/// Runs the live view until `q`, a signal, a closed terminal, or `period.count` reports
/// (then exit status 0, as the line view).
pub fn run(tracer: Tracer, extras: ExtrasOptions, period: &Period, view: View) -> Result<()> {
    let (tx, rx) = mpsc::channel::<Snapshot>();
    let (interval_s, count) = (period.interval, period.count);
    let pids = view.selection.pids.clone();
    // Quitting stops the collector at once (not at its next tick), and the programs are
    // detached by its thread, all at once (see `Object`), before the process exits.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let collector = std::thread::Builder::new()
        .name("collector".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let view = session::periodic(
                    tracer,
                    RowKinds::Both,
                    extras,
                    interval_s,
                    count,
                    |mut snap| {
                        let idle = idle_rows(&pids, &snap.rows);
                        snap.rows.extend(idle);
                        tx.send(snap).map_err(|_| anyhow::Error::new(ViewGone))
                    },
                );
                tokio::select! {
                    r = view => r,
                    _ = stopped => Ok(()),
                }
            })
        })?;

    let mut app = App::new(view.threads);
    app.selection = view.selection;
    app.has_copies = view.has_copies;
    let mut terminal = ratatui::init();
    let restore = Restore;
    loop {
        match rx.try_recv() {
            Ok(snap) => {
                app.on_snapshot(&snap);
                continue; // catch up before drawing
            }
            Err(TryRecvError::Empty) => {}
            // The last report (--count), a signal, or the collector failed.
            Err(TryRecvError::Disconnected) => break,
        }
        terminal.draw(|f| draw(f, &app))?;
        // A terminal that went away (window closed, tmux session killed) stays readable
        // with nothing to read, and crossterm's poll then spins without returning
        // (crossterm-rs/crossterm#793): wait on the tty here, leave when it hangs up, and
        // hand crossterm only real input.
        match wait_for_tty(Duration::from_millis(100)) {
            TtyState::Gone => break,
            TtyState::Idle => continue,
            TtyState::Input => {}
        }
        // crossterm reads all pending bytes at once and queues the events: take them all.
        let mut quit = false;
        while !quit && event::poll(Duration::ZERO)? {
            if let Event::Key(k) = event::read()?
                && k.kind == KeyEventKind::Press
            {
                quit =
                    key_of(k.code, k.modifiers).is_some_and(|key| app.on_key(key) == Action::Quit);
            }
        }
        if quit {
            break;
        }
    }
    drop(rx);
    drop(restore);
    let _ = stop.send(());
    // Its error, if any, is the reason the view stopped.
    match collector.join() {
        Ok(Err(e)) if e.downcast_ref::<ViewGone>().is_none() => Err(e),
        Err(_) => Err(anyhow!("the collector thread panicked")),
        _ => Ok(()),
    }
}

/// The collector's stop when the terminal view has ended first: not an error of the run.
#[derive(Debug)]
struct ViewGone;

impl std::fmt::Display for ViewGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the view has gone")
    }
}

impl std::error::Error for ViewGone {}
