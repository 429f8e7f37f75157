//! Progress bars and informational lines on stderr.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::infer::Progress;

/// Terminal output settings shared by the commands.
pub struct Ui {
    pub quiet: bool,
}

impl Ui {
    /// An informational line (suppressed by `--quiet`).
    pub fn info(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    /// A result line: the answer a command gives, printed even with `--quiet`.
    pub fn result(&self, line: &str) {
        eprintln!("{line}");
    }

    /// A notice: something the user should know even when things work.
    pub fn notice(&self, line: &str) {
        eprintln!("notice: {line}");
    }

    /// Whether progress is drawn as a live bar (stderr is a terminal and not quiet); when it
    /// is not, long jobs print occasional progress lines instead (for logs).
    pub fn live(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }

    /// A bar over `total` items; hidden when quiet or when stderr is not a terminal.
    pub fn bar(&self, total: u64, what: &str) -> Bar {
        let bar = if !self.live() {
            ProgressBar::hidden()
        } else {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix} {bar:30} {pos}/{len} {per_sec} eta {eta} {msg}",
                )
                .expect("valid template"),
            );
            b.set_prefix(what.to_string());
            b
        };
        Bar(bar)
    }
}

/// A progress bar the library can advance.
pub struct Bar(pub ProgressBar);

impl Progress for Bar {
    fn advance(&self, rows: usize) {
        self.0.inc(rows as u64);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
