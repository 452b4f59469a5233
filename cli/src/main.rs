//! The `cairn` command.
//!
//! Exit codes: 0 ok, 1 a data or verification error (one line on stderr naming the file, the
//! chunk and the offset), 2 a usage error, 130 / 143 / 129 stopped by SIGINT / SIGTERM / SIGHUP
//! (one line; the run's temporary files removed).

mod backup;
mod demo;
mod info;
mod interrupt;
mod key;
mod progress;
mod restore;
mod serve_http;
mod serve_nbd;
mod store;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::interrupt::Stop;

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
    /// Serve images as read-only NBD exports (qemu, qemu-img, nbdcopy, the kernel's nbd).
    ServeNbd(serve_nbd::ServeNbdArgs),
    /// Serve a store's chunks read-only over HTTP, in the casync and PBS layouts.
    ServeHttp(serve_http::ServeHttpArgs),
    /// Make and show PBS encryption key files.
    Key(key::KeyArgs),
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

    /// A data or verification error (exit code 1) from an error value: its message and every
    /// cause's, once each.
    pub(crate) fn error(error: impl std::error::Error) -> Self {
        Self::data(chain(&error))
    }

    /// A usage error (exit code 2).
    pub(crate) fn usage(message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            code: 2,
        }
    }

    /// The failure, said of `path` (when the message does not name it already).
    pub(crate) fn context(mut self, path: &std::path::Path) -> Self {
        let shown = path.display().to_string();
        if !self.message.contains(&shown) {
            self.message = format!("{shown}: {}", self.message);
        }
        self
    }

    /// A command that stopped because a signal asked it to; `what` says what it left behind
    /// (the exit code is the signal's).
    pub(crate) fn interrupted(what: impl std::fmt::Display) -> Self {
        Self {
            message: what.to_string(),
            code: 1,
        }
    }
}

/// `error` and its causes on one line, each level's own message once, joined by `: `.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

async fn run(command: &Command, quiet: bool, stop: &Stop) -> Result<(), Failure> {
    match command {
        Command::Backup(args) => backup::run(args, quiet, stop).await,
        Command::Restore(args) => restore::run_restore(args, quiet, stop).await,
        Command::Cat(args) => restore::run_cat(args, quiet, stop).await,
        Command::Read(args) => restore::run_read(args, stop).await,
        Command::Verify(args) => verify::run(args, quiet, stop).await,
        Command::Info(args) => info::run(args, stop).await,
        Command::Key(args) => key::run(args, quiet, stop).await,
        Command::ServeNbd(args) => serve_nbd::run(args, quiet, stop).await,
        Command::ServeHttp(args) => serve_http::run(args, quiet, stop).await,
        Command::Demo(args) => demo::run(args, quiet, stop).await,
    }
}

/// Runs the command; on a signal, lets it stop cleanly (it sees the signal too), or stops at
/// once on a second one.
async fn run_until_stopped(command: &Command, quiet: bool) -> Result<(), Failure> {
    let stop = Stop::listen()
        .map_err(|e| Failure::data(format!("cannot install the signal handlers: {e}")))?;
    let running = run(command, quiet, &stop);
    tokio::pin!(running);
    let result = tokio::select! {
        result = &mut running => result,
        () = stop.stopped() => tokio::select! {
            result = &mut running => result,
            () = stop.signals(2) => Err(Failure::interrupted(
                "stopped at once by a second signal; temporary files may remain",
            )),
        },
    };
    match (result, stop.signal()) {
        // Whatever the command ended with after a signal (its own note of what it left, or an
        // error the interruption caused), the run was interrupted.
        (Err(failure), Some(signal)) => Err(Failure {
            message: format!("interrupted by {}: {}", signal.name(), failure.message),
            code: signal.exit_code(),
        }),
        (result, _) => result,
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
    let result = runtime.block_on(run_until_stopped(&cli.command, cli.quiet));
    // Every command has finished the work that matters (chunk writes, renames) before it
    // returns; a thread still blocked reading a pipe or writing to one is not waited for.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("cairn: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
