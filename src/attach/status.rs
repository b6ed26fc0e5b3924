//! The status line a person watches while attach serves.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crate::actions::Actions;

/// The status line a person watches: rewritten in place on a terminal, printed when it changes
/// (and every few minutes) elsewhere, such as a notebook's cell output or a log file.
pub struct Status {
    terminal: bool,
    last: String,
    printed_at: Instant,
}

impl Status {
    fn new() -> Self {
        Self {
            terminal: std::io::stdout().is_terminal(),
            last: String::new(),
            printed_at: Instant::now(),
        }
    }

    /// `kind` is what the line is about; `detail` the part that changes each second.
    pub fn show(&mut self, actions: &Actions, kind: &str, detail: &str, every: Duration) {
        if self.terminal {
            print!(
                "\r\x1b[K{}",
                crate::actions::mask::redact(&format!("{kind}{detail}"))
            );
            let _ = std::io::Write::flush(&mut std::io::stdout());
            self.last = kind.to_owned();
            return;
        }
        if kind != self.last || self.printed_at.elapsed() >= every {
            actions.info(&format!("{kind}{detail}"));
            self.last = kind.to_owned();
            self.printed_at = Instant::now();
        }
    }

    /// Before a line of its own: a terminal's status line is cleared first.
    pub fn clear(&mut self) {
        if self.terminal {
            print!("\r\x1b[K");
        }
        self.last.clear();
    }
}

impl Default for Status {
    /// On a terminal when standard output is one.
    fn default() -> Self {
        Self::new()
    }
}
