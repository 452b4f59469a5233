//! `cairn backup`: cut a file into chunks, store the new ones, write the index.

use std::path::{Path, PathBuf};

use cairn_backup::{BackupError, BackupOptions, Layout, Summary};
use cairn_chunk_store::{ChunkSource, DigestAlgorithm, SyncLevel};
use cairn_index::PbsChunker;
use indicatif::ProgressBar;

use crate::Failure;
use crate::interrupt::{Stop, unless_stopped};
use crate::progress;
use crate::store::StoreArgs;

/// The index format a backup writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// PBS fixed index: equal chunks (default 4 MiB).
    Fidx,
    /// PBS dynamic index: PBS's content-defined chunker (default average 4 MiB).
    Didx,
    /// casync blob index: casync's chunker and defaults (16/64/256 KiB).
    Caibx,
}

/// The digest of a casync backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DigestArg {
    /// SHA-256.
    Sha256,
    /// SHA-512/256 (casync's default).
    #[value(name = "sha512-256")]
    Sha512_256,
}

/// How durable a backup's chunks are before its index is committed (PBS's sync levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SyncArg {
    /// No syncs of chunks (fastest; a crash of the machine may leave an index naming chunks
    /// that never reached the disk). The index itself is still fsynced.
    None,
    /// One syncfs of the store's filesystem after the last chunk, before the index appears.
    Filesystem,
    /// fsync every new chunk file and every new prefix folder as it is written.
    File,
}

impl SyncArg {
    pub(crate) fn level(self) -> SyncLevel {
        match self {
            Self::None => SyncLevel::None,
            Self::Filesystem => SyncLevel::Filesystem,
            Self::File => SyncLevel::File,
        }
    }
}

/// Arguments of `cairn backup`.
#[derive(Debug, clap::Args)]
pub(crate) struct BackupArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The index format.
    #[arg(long, value_enum, default_value = "fidx")]
    format: Format,
    /// Chunk size for fidx, average chunk size for didx and caibx (casync's rule: min avg/4,
    /// max 4·avg). Accepts K, M and G suffixes.
    #[arg(long, value_parser = parse_size)]
    chunk_size: Option<u64>,
    /// The digest of a caibx backup.
    #[arg(long, value_enum, default_value = "sha512-256")]
    digest: DigestArg,
    /// How durable the chunks are before the index is committed.
    #[arg(long, value_enum, default_value = "filesystem")]
    sync: SyncArg,
    /// The file to back up.
    input: PathBuf,
    /// The index to write (replaced atomically).
    index: PathBuf,
}

/// A whole number followed by one of `units` (its text and what it multiplies by); `what` and
/// `examples` say what was expected, `too_much` what an overflow is.
fn with_unit(
    text: &str,
    units: &[(&[&str], u64)],
    what: &str,
    examples: &str,
    too_much: &str,
) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let not = || format!("`{text}` is not a {what} (like {examples})");
    let factor = units
        .iter()
        .find(|(names, _)| names.contains(&unit))
        .map(|(_, factor)| *factor)
        .ok_or_else(not)?;
    let value: u64 = digits.parse().map_err(|_| not())?;
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is {too_much}"))
}

/// A size such as `4096`, `64K`, `64KiB`, `4M`, `4MiB`, `1G` or `1GiB` (powers of 1024; `T`
/// and `TiB` too).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    with_unit(
        text,
        &[
            (&[""], 1),
            (&["K", "k", "KiB"], 1 << 10),
            (&["M", "m", "MiB"], 1 << 20),
            (&["G", "g", "GiB"], 1 << 30),
            (&["T", "t", "TiB"], 1 << 40),
        ],
        "size",
        "4096, 64K, 64KiB, 4M or 1GiB",
        "too large",
    )
}

/// A duration as an option takes it: seconds (`30`, `30s`), minutes (`10m`) or hours (`1h`).
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    with_unit(
        text,
        &[(&["", "s"], 1), (&["m"], 60), (&["h"], 3600)],
        "duration",
        "30, 30s, 10m or 1h",
        "too long",
    )
    .map(std::time::Duration::from_secs)
}

/// The layout a backup's FORMAT, chunk size and digest arguments ask for.
pub(crate) fn layout(format: Format, chunk_size: Option<u64>, digest: DigestArg) -> Layout {
    match format {
        Format::Fidx => Layout::Fidx {
            chunk_size: chunk_size.unwrap_or(4 << 20),
        },
        Format::Didx => Layout::Didx {
            average: chunk_size.unwrap_or(PbsChunker::DEFAULT_AVG as u64),
        },
        Format::Caibx => Layout::Caibx {
            average: chunk_size,
            digest: match digest {
                DigestArg::Sha256 => DigestAlgorithm::Sha256,
                DigestArg::Sha512_256 => DigestAlgorithm::Sha512_256,
            },
        },
    }
}

/// Backs `input` up into `store` as `index`, with a progress bar, and says what failed as the
/// command does: sizes no chunker can use are usage errors.
pub(crate) async fn backup(
    source: &ChunkSource,
    input: &Path,
    index: &Path,
    layout: Layout,
    bar: &ProgressBar,
    stop: &Stop,
) -> Result<Summary, Failure> {
    // A FIFO waits for its writer: off this thread, so that a signal ends the wait.
    let file = {
        let input = input.to_path_buf();
        unless_stopped(stop, "nothing was written", move || {
            std::fs::File::open(&input)
                .map_err(|e| Failure::data(format!("{}: cannot read: {e}", input.display())))
        })
        .await?
    };
    let progress = |bytes| bar.inc(bytes);
    let done = cairn_backup::backup_source(
        source,
        file,
        index,
        layout,
        BackupOptions::default(),
        &progress,
        stop.token(),
    )
    .await;
    done.map_err(|error| match error {
        BackupError::Layout(_) => Failure::usage(crate::chain(&error)),
        BackupError::Cancelled { .. } => Failure::interrupted(error),
        BackupError::Input(_) => Failure::error(error).context(input),
        other => Failure::error(other),
    })
}

/// Runs `cairn backup`.
pub(crate) async fn run(args: &BackupArgs, quiet: bool, stop: &Stop) -> Result<(), Failure> {
    let layout = layout(args.format, args.chunk_size, args.digest);
    // Sizes no chunker can use are refused before the store is created.
    layout
        .check()
        .map_err(|error| Failure::usage(crate::chain(&error)))?;
    args.store.load_key(stop).await?;
    if args.store.key()?.is_some() && args.format == Format::Caibx {
        return Err(Failure::usage(
            "--keyfile encrypts PBS backups (fidx, didx); casync has no encrypted format",
        ));
    }
    let store = args
        .store
        .create(args.format != Format::Caibx, args.sync.level())?;
    let source = args.store.source(store, layout.digest_algorithm())?;
    let total = std::fs::metadata(&args.input).map(|m| m.len()).unwrap_or(0);
    let bar = progress::bytes(total, "backup", quiet);
    let summary = backup(&source, &args.input, &args.index, layout, &bar, stop).await?;
    bar.finish_and_clear();
    if !quiet {
        eprintln!(
            "backed up {} ({} bytes) to {}: {} chunks, {} unique, {} new; dedup ratio {:.2}; {:.0} MB/s",
            args.input.display(),
            summary.size,
            args.index.display(),
            summary.chunks,
            summary.unique_chunks,
            summary.new_chunks,
            summary.dedup_ratio(),
            progress::mb_per_s(summary.size, summary.seconds),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(std::time::Duration::from_secs(30)));
        assert_eq!(
            parse_duration("30s"),
            Ok(std::time::Duration::from_secs(30))
        );
        assert_eq!(
            parse_duration("10m"),
            Ok(std::time::Duration::from_secs(600))
        );
        assert_eq!(
            parse_duration(" 1h"),
            Ok(std::time::Duration::from_secs(3600))
        );
        assert_eq!(parse_duration("0"), Ok(std::time::Duration::ZERO));
        assert_eq!(
            parse_duration("5 min"),
            Err("`5 min` is not a duration (like 30, 30s, 10m or 1h)".to_owned())
        );
        assert_eq!(
            parse_duration("h"),
            Err("`h` is not a duration (like 30, 30s, 10m or 1h)".to_owned())
        );
        assert_eq!(
            parse_duration("99999999999999999h"),
            Err("`99999999999999999h` is too long".to_owned())
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("4m"), Ok(4 << 20));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(
            parse_size("x"),
            Err("`x` is not a size (like 4096, 64K, 64KiB, 4M or 1GiB)".to_owned())
        );
        assert_eq!(
            parse_size("4MB"),
            Err("`4MB` is not a size (like 4096, 64K, 64KiB, 4M or 1GiB)".to_owned())
        );
        assert_eq!(
            parse_size("99999999999999999G"),
            Err("`99999999999999999G` is too large".to_owned())
        );
    }
}
