//! The one adapter from the library's [`Progress`] to a terminal: an
//! indicatif bar on stderr when stderr is a terminal, nothing when piped.

use std::io::IsTerminal;
use std::time::Duration;

use imgsearch::progress::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar (or spinner) that shows only on a terminal.
pub struct Bar(ProgressBar);

impl Bar {
    /// A bar that draws once the work names a stage.
    pub fn new() -> Self {
        Self(if std::io::stderr().is_terminal() {
            ProgressBar::new(0)
        } else {
            ProgressBar::hidden()
        })
    }

    /// A spinner with a message, for work that reports no counts.
    pub fn spinner(message: &str) -> Self {
        let bar = Self::new();
        bar.0.set_style(ProgressStyle::default_spinner());
        bar.0.set_message(message.to_string());
        bar.0.enable_steady_tick(Duration::from_millis(120));
        bar
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

impl Progress for Bar {
    fn stage(&self, name: &str, total: Option<u64>) {
        let template = match total {
            Some(_) => "{prefix} [{bar:30}] {pos}/{len} {msg} ({per_sec}, ETA {eta})",
            // The total grows as the work finds more (a streaming walk).
            None => "{prefix} [{bar:30}] {pos}/{len} {msg} ({per_sec})",
        };
        self.0
            .set_style(ProgressStyle::with_template(template).expect("valid template"));
        self.0.set_prefix(name.to_string());
        self.0.set_message("");
        self.0.set_length(total.unwrap_or(0));
        self.0.set_position(0);
        self.0.reset_eta();
    }

    fn grow(&self, n: u64) {
        self.0.inc_length(n);
    }

    fn advance(&self, n: u64) {
        self.0.inc(n);
    }

    fn message(&self, text: &str) {
        self.0.set_message(text.to_string());
    }
}
