//! `cairn restore`, `cairn cat` and `cairn read`: the image, or part of it, through the reader.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use cairn_index::ChunkIndex;
use cairn_reader::{
    ChunkReader, OutputKind, ReaderError, ReaderOptions, RestoreOptions, chunk_cache,
    restore_to_path, restore_to_writer,
};
use tokio::io::AsyncWriteExt as _;

use crate::Failure;
use crate::interrupt::Stop;
use crate::progress;
use crate::store::StoreArgs;

/// Opens `index` over `store` as a reader (its key first, if it has one).
pub(crate) async fn open_reader(
    store: &StoreArgs,
    index: &Path,
    options: ReaderOptions,
    stop: &Stop,
) -> Result<ChunkReader, Failure> {
    store.load_key(stop).await?;
    let index: Arc<dyn ChunkIndex> = Arc::new(store.open_index(index, stop).await?);
    let source = store.source(store.open()?, index.digest_algorithm())?;
    let cache = chunk_cache(options.cache_bytes);
    Ok(ChunkReader::with_source(index, source, cache, options))
}

/// Arguments of `cairn restore`.
#[derive(Debug, clap::Args)]
pub(crate) struct RestoreArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The chunk cache (repeated chunks are decoded once while they stay in it).
    #[arg(long, value_parser = crate::backup::parse_size, default_value = "256MiB")]
    cache_size: u64,
    /// The index of the image.
    index: PathBuf,
    /// Where to write the image: a file (written beside it and renamed over it when complete,
    /// so an existing file is replaced only by a whole image), a block device or a FIFO or
    /// character device (written in place), or `-` for standard output.
    output: PathBuf,
    /// fsync a restored file before moving it into place, and its folder after (survives a
    /// power loss, costs time). A block device is always flushed at the end.
    #[arg(long)]
    fsync: bool,
    /// On a block device, leave zero chunks unwritten: the device is known to read as zeros
    /// (new, or discarded). Files get holes for them anyway; streams need every byte.
    #[arg(long)]
    assume_zeroed: bool,
}

/// Arguments of `cairn cat`.
#[derive(Debug, clap::Args)]
pub(crate) struct CatArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The chunk cache (repeated chunks are decoded once while they stay in it).
    #[arg(long, value_parser = crate::backup::parse_size, default_value = "256MiB")]
    cache_size: u64,
    /// The index of the image.
    index: PathBuf,
}

/// Arguments of `cairn read`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReadArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The chunk cache (repeated chunks are decoded once while they stay in it).
    #[arg(long, value_parser = crate::backup::parse_size, default_value = "256MiB")]
    cache_size: u64,
    /// The index of the image.
    index: PathBuf,
    /// The first byte to read.
    #[arg(long, value_parser = crate::backup::parse_size)]
    offset: u64,
    /// How many bytes to read (fewer at the end of the image).
    #[arg(long, value_parser = crate::backup::parse_size)]
    length: u64,
}

/// The command's failure for a reader error: cancellation says what was left, an unusable
/// output is a usage error.
pub(crate) fn failure(error: ReaderError) -> Failure {
    match error {
        ReaderError::Cancelled { left } => Failure::interrupted(left),
        ReaderError::OutputKind { .. } => Failure::usage(crate::chain(&error)),
        other => Failure::error(other),
    }
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(stdout_error)`
fn stdout_error(e: std::io::Error) -> Failure {
    Failure::data(format!("cannot write to standard output: {e}"))
}

/// Runs `cairn restore`.
pub(crate) async fn run_restore(
    args: &RestoreArgs,
    quiet: bool,
    stop: &Stop,
) -> Result<(), Failure> {
    let reader = open_reader(
        &args.store,
        &args.index,
        ReaderOptions::default().cache_bytes(args.cache_size),
        stop,
    )
    .await?;
    let bar = progress::bytes(reader.image_size(), "restore", quiet);
    let progress = |bytes| bar.inc(bytes);
    let started = Instant::now();
    if args.output.as_os_str() == "-" {
        let stdout = tokio::io::stdout();
        restore_to_writer(&reader, stdout, "standard output", &progress, stop.token())
            .await
            .map_err(failure)?;
        bar.finish_and_clear();
        return Ok(());
    }
    let options = RestoreOptions::default()
        .fsync(args.fsync)
        .assume_zeroed(args.assume_zeroed);
    let restored = restore_to_path(&reader, &args.output, options, &progress, stop.token())
        .await
        .map_err(failure)?;
    bar.finish_and_clear();
    if !quiet && restored.kind != OutputKind::Stream {
        eprintln!(
            "restored {} bytes to {}: {:.0} MB/s; {} chunks fetched, {} zero chunks left unwritten",
            restored.size,
            args.output.display(),
            progress::mb_per_s(restored.size, started.elapsed().as_secs_f64()),
            reader.stats().chunks_fetched,
            restored.zero_chunks_skipped,
        );
    }
    Ok(())
}

/// Runs `cairn cat`.
pub(crate) async fn run_cat(args: &CatArgs, quiet: bool, stop: &Stop) -> Result<(), Failure> {
    let reader = open_reader(
        &args.store,
        &args.index,
        ReaderOptions::default().cache_bytes(args.cache_size),
        stop,
    )
    .await?;
    let bar = progress::bytes(reader.image_size(), "cat", quiet);
    let progress = |bytes| bar.inc(bytes);
    restore_to_writer(
        &reader,
        tokio::io::stdout(),
        "standard output",
        &progress,
        stop.token(),
    )
    .await
    .map_err(failure)?;
    bar.finish_and_clear();
    Ok(())
}

/// Runs `cairn read`: stops at the first signal, between two reads or inside one.
pub(crate) async fn run_read(args: &ReadArgs, stop: &Stop) -> Result<(), Failure> {
    let reader = open_reader(
        &args.store,
        &args.index,
        ReaderOptions::default().cache_bytes(args.cache_size),
        stop,
    )
    .await?;
    let mut stdout = tokio::io::stdout();
    let end = args
        .offset
        .saturating_add(args.length)
        .min(reader.image_size());
    let mut at = args.offset;
    let mut buf = vec![0u8; 4 << 20];
    let interrupted = |at: u64| {
        Failure::interrupted(format!(
            "standard output got {} of the {} bytes asked for",
            at - args.offset,
            end.saturating_sub(args.offset)
        ))
    };
    while at < end {
        let want = usize::try_from((end - at).min(buf.len() as u64)).unwrap_or(buf.len());
        let read = tokio::select! {
            read = reader.read_at(&mut buf[..want], at) => read.map_err(Failure::error)?,
            () = stop.token().cancelled() => return Err(interrupted(at)),
        };
        if read == 0 {
            break;
        }
        tokio::select! {
            written = stdout.write_all(&buf[..read]) => written.map_err(stdout_error)?,
            () = stop.token().cancelled() => return Err(interrupted(at)),
        }
        at += read as u64;
    }
    stdout.flush().await.map_err(stdout_error)
}
