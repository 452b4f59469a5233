//! The `cairn` command.
//!
//! Exit codes: 0 ok, 1 a data or verification error (one line on stderr naming the file, the
//! chunk and the offset), 2 a usage error.

mod backup;
mod demo;
mod info;
mod progress;
mod restore;
mod store;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Reads and writes deduplicated backup data: PBS datastores and casync stores.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, long_about = None)]
struct Cli {
    /// No progress bars or summaries on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Back a file up: cut it into chunks, store the new ones, write the index.
    Backup(backup::BackupArgs),
    /// Restore an image from its index and store (in parallel; zero chunks become holes).
    Restore(restore::RestoreArgs),
    /// Write an image to standard output.
    Cat(restore::CatArgs),
    /// Write a byte range of an image to standard output.
    Read(restore::ReadArgs),
    /// Check every chunk of one or more indexes: present, decodable, right digest and length.
    Verify(verify::VerifyArgs),
    /// Describe a chunk index (.fidx, .didx, .caibx, .caidx): format, sizes, chunks, dedup.
    Info(info::InfoArgs),
    /// Run the whole job on a built-in sample image and print the figures.
    Demo(demo::DemoArgs),
}

/// A failure to report: one line, and the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    /// A data or verification error (exit code 1). The message is the error and its causes.
    pub(crate) fn data(error: impl std::fmt::Display) -> Self {
        Self {
            message: error.to_string(),
            code: 1,
        }
    }

    /// A usage error (exit code 2).
    pub(crate) fn usage(message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            code: 2,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cairn: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let quiet = cli.quiet;
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Backup(args) => backup::run(args, quiet).await,
            Command::Restore(args) => restore::run_restore(args, quiet).await,
            Command::Cat(args) => restore::run_cat(args, quiet).await,
            Command::Read(args) => restore::run_read(args).await,
            Command::Verify(args) => verify::run(args, quiet).await,
            Command::Info(args) => info::run(args),
            Command::Demo(args) => demo::run(args, quiet).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("cairn: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
