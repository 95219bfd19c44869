//! Key handling: the keys the TUI understands (independent of the terminal library), the
//! filter prompts, and what each key does to the [`App`].

use super::{App, Tab};
use crate::model::selection::Selection;

/// A line being typed at the bottom (`p` pid filter, `/` command filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    Pid(String),
    Comm(String),
}

/// What the event loop should do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Quit,
}

/// Keys the TUI understands, independent of the terminal library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Up,
    Down,
    Enter,
    Esc,
    Backspace,
    Tab,
    CtrlC,
}

impl App {
    pub fn on_key(&mut self, key: Key) -> Action {
        if let Some(prompt) = &mut self.prompt {
            let buf = match prompt {
                Prompt::Pid(b) | Prompt::Comm(b) => b,
            };
            match key {
                Key::Esc => self.prompt = None,
                Key::CtrlC => return Action::Quit,
                Key::Backspace => {
                    buf.pop();
                }
                Key::Char(c) => buf.push(c),
                Key::Enter => {
                    match self.prompt.take() {
                        Some(Prompt::Pid(b)) => {
                            self.selection.pids = b.trim().parse().into_iter().collect();
                        }
                        Some(Prompt::Comm(b)) => {
                            self.selection.comm = Some(b).filter(|b| !b.is_empty());
                        }
                        None => {}
                    }
                    self.selected = 0;
                }
                Key::Up | Key::Down | Key::Tab => {}
            }
            return Action::Continue;
        }
        match key {
            Key::Char('q') | Key::CtrlC => return Action::Quit,
            Key::Up | Key::Char('k') => self.selected = self.selected.saturating_sub(1),
            Key::Down | Key::Char('j') => {
                self.selected = (self.selected + 1).min(self.visible_len().saturating_sub(1));
            }
            Key::Tab => {
                self.tab = self.tab.next();
                self.selected = 0;
            }
            Key::Char(c @ '1'..='3') => {
                self.tab = Tab::ALL[(c as u8 - b'1') as usize];
                self.selected = 0;
            }
            Key::Char('s') => self.sort = self.sort.next(),
            Key::Char('t') => {
                self.threads = !self.threads;
                self.selected = 0;
            }
            Key::Char('p') => self.prompt = Some(Prompt::Pid(String::new())),
            Key::Char('/') => self.prompt = Some(Prompt::Comm(String::new())),
            Key::Esc => self.selection = Selection::default(),
            _ => {}
        }
        Action::Continue
    }
}
