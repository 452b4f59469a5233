//! The `cairn` command.
//!
//! It has no subcommands yet: `info` arrives with the index issue, and `backup`, `restore`,
//! `cat`, `read`, `verify` and `demo` with the reader issue. Until then it says so and exits
//! with the usage-error code, rather than pretend.

use std::process::ExitCode;

fn main() -> ExitCode {
    let version = env!("CARGO_PKG_VERSION");
    let asked_version = std::env::args()
        .skip(1)
        .any(|a| a == "--version" || a == "-V");
    if asked_version {
        println!("cairn {version}");
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "cairn {version}: no commands are available yet (info, backup, restore, read, verify and \
         demo are planned); see README.md"
    );
    ExitCode::from(2)
}
