//! Progress bars on stderr, only when it is a terminal and `--quiet` was not given.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressStyle};

/// A byte progress bar, hidden when stderr is not a terminal or output is quiet.
pub(crate) fn bytes(total: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// Megabytes (10^6 bytes) per second.
#[allow(clippy::cast_precision_loss)]
pub(crate) fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        0.0
    } else {
        bytes as f64 / 1e6 / seconds
    }
}
