//! The `cairn` command.
//!
//! Today it has `info`; `backup`, `restore`, `cat`, `read`, `verify` and `demo` arrive with the
//! reader. Exit codes: 0 ok, 1 a data or verification error (one line on stderr naming the file
//! and the problem), 2 a usage error.

mod info;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Reads and inspects deduplicated backup data: PBS datastores and casync stores.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Describe a chunk index (.fidx, .didx, .caibx, .caidx): format, sizes, chunks, dedup.
    Info(info::InfoArgs),
}

/// A failure to report: one line, and the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    /// A data or verification error (exit code 1).
    pub(crate) fn data(message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            code: 1,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => info::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("cairn: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
