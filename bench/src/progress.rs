//! Progress display for long runs: a bar on a terminal, nothing otherwise
//! (phase lines are printed by the scenarios either way).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar on stderr (or nothing when disabled).
pub struct Progress {
    bar: ProgressBar,
    total: Duration,
}

impl Progress {
    /// A bar over `total` wall time; hidden when `enabled` is false or
    /// stderr is not a terminal.
    pub fn new(enabled: bool, label: &str, total: Duration) -> Self {
        let target = if enabled {
            ProgressDrawTarget::stderr_with_hz(5)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(total.as_millis() as u64), target);
        bar.set_style(
            ProgressStyle::with_template("  {prefix} [{bar:20}] {elapsed}/{len_s} {msg}")
                .expect("static template")
                .with_key(
                    "len_s",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{}s", state.len().unwrap_or(0).div_ceil(1000));
                    },
                )
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        Progress { bar, total }
    }

    /// Moves the bar to `elapsed` with a status message.
    pub fn update(&self, elapsed: Duration, message: String) {
        self.bar
            .set_position(elapsed.min(self.total).as_millis() as u64);
        self.bar.set_message(message);
    }

    /// Removes the bar.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}
