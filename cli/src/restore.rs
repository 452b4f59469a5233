//! `cairn restore`, `cairn cat` and `cairn read`: the image, or part of it, through the reader.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use cairn_index::{ChunkIndex, Index};
use cairn_reader::{ChunkReader, ReaderOptions};
use futures_util::StreamExt as _;
use futures_util::stream;
use indicatif::ProgressBar;
use tokio::io::AsyncWriteExt as _;

use crate::Failure;
use crate::progress;
use crate::store::StoreSpec;

/// Chunks fetched at once by restore: enough for about 32 MiB in flight, from 8 to 128.
fn restore_concurrency(index: &dyn ChunkIndex) -> usize {
    let chunks = index.chunk_count().max(1) as u64;
    let average = (index.image_size() / chunks).max(1);
    usize::try_from((32 << 20) / average)
        .unwrap_or(128)
        .clamp(8, 128)
}

/// Opens `index` over `store` as a reader.
pub(crate) fn open_reader(
    store: &StoreSpec,
    index: &Path,
    options: ReaderOptions,
) -> Result<ChunkReader, Failure> {
    let index: Arc<dyn ChunkIndex> = Arc::new(Index::open(index).map_err(Failure::data)?);
    let store = store.open()?;
    Ok(ChunkReader::new(index, store, options))
}

/// Arguments of `cairn restore`.
#[derive(Debug, clap::Args)]
pub(crate) struct RestoreArgs {
    /// The store: pbs:PATH, castr:PATH or a PATH.
    #[arg(long, value_parser = StoreSpec::parse)]
    store: StoreSpec,
    /// The index of the image.
    index: PathBuf,
    /// Where to write the image (`-` for standard output).
    output: PathBuf,
    /// fsync the image before moving it into place (survives a power loss, costs time).
    #[arg(long)]
    fsync: bool,
}

/// Arguments of `cairn cat`.
#[derive(Debug, clap::Args)]
pub(crate) struct CatArgs {
    /// The store: pbs:PATH, castr:PATH or a PATH.
    #[arg(long, value_parser = StoreSpec::parse)]
    store: StoreSpec,
    /// The index of the image.
    index: PathBuf,
}

/// Arguments of `cairn read`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReadArgs {
    /// The store: pbs:PATH, castr:PATH or a PATH.
    #[arg(long, value_parser = StoreSpec::parse)]
    store: StoreSpec,
    /// The index of the image.
    index: PathBuf,
    /// The first byte to read.
    #[arg(long, value_parser = crate::backup::parse_size)]
    offset: u64,
    /// How many bytes to read (fewer at the end of the image).
    #[arg(long, value_parser = crate::backup::parse_size)]
    length: u64,
}

/// Writes the whole image to `output` through a temporary file renamed into place, so a failed
/// restore leaves nothing at `output`; chunks are fetched in parallel and written where they
/// belong; zero chunks stay holes. Returns the size and the number of holes.
pub(crate) async fn restore_to_file(
    reader: &ChunkReader,
    output: &Path,
    fsync: bool,
    bar: &ProgressBar,
) -> Result<(u64, u64), Failure> {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = output.with_file_name(format!(".{name}.cairn-{}.tmp", std::process::id()));
    let result = write_image(reader, &temporary, fsync, bar)
        .await
        .and_then(|written| {
            std::fs::rename(&temporary, output)
                .map(|()| written)
                .map_err(|e| {
                    Failure::data(format!(
                        "{}: cannot move the restored image into place: {e}",
                        output.display()
                    ))
                })
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

async fn write_image(
    reader: &ChunkReader,
    path: &Path,
    fsync: bool,
    bar: &ProgressBar,
) -> Result<(u64, u64), Failure> {
    let io_error =
        |e: std::io::Error| Failure::data(format!("{}: cannot write: {e}", path.display()));
    let file = File::create(path).map_err(io_error)?;
    let size = reader.image_size();
    // A file of the full size whose unwritten parts are holes.
    file.set_len(size).map_err(io_error)?;
    let file = Arc::new(file);
    let index = Arc::clone(reader.index());
    let jobs = (0..index.chunk_count()).map(|i| {
        let (reader, file, index) = (reader.clone(), Arc::clone(&file), Arc::clone(&index));
        async move {
            let Some(info) = index.chunk(i) else {
                return Ok((0, false));
            };
            if reader.is_zero_chunk(&info) {
                return Ok((info.len(), true));
            }
            let data = reader
                .chunk(i)
                .await
                .map_err(Failure::data)?
                .unwrap_or_default();
            tokio::task::spawn_blocking(move || file.write_all_at(&data, info.start))
                .await
                .map_err(|e| Failure::data(format!("writing failed: {e}")))?
                .map_err(|e| Failure::data(format!("cannot write: {e}")))?;
            Ok((info.len(), false))
        }
    });
    let mut done =
        stream::iter(jobs).buffer_unordered(restore_concurrency(reader.index().as_ref()));
    let mut holes = 0;
    while let Some(written) = done.next().await {
        let (len, hole) = written?;
        holes += u64::from(hole);
        bar.inc(len);
    }
    if fsync {
        file.sync_all().map_err(io_error)?;
    }
    Ok((size, holes))
}

/// Writes the whole image to standard output, in order.
async fn image_to_stdout(reader: &ChunkReader, bar: &ProgressBar) -> Result<(), Failure> {
    let mut stdout = tokio::io::stdout();
    let count = reader.index().chunk_count();
    let mut chunks = stream::iter((0..count).map(|i| {
        let reader = reader.clone();
        async move { reader.chunk(i).await }
    }))
    .buffered(restore_concurrency(reader.index().as_ref()));
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(Failure::data)?.unwrap_or_default();
        stdout.write_all(&chunk).await.map_err(stdout_error)?;
        bar.inc(chunk.len() as u64);
    }
    stdout.flush().await.map_err(stdout_error)
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(stdout_error)`
fn stdout_error(e: std::io::Error) -> Failure {
    Failure::data(format!("cannot write to standard output: {e}"))
}

/// Runs `cairn restore`.
pub(crate) async fn run_restore(args: &RestoreArgs, quiet: bool) -> Result<(), Failure> {
    let reader = open_reader(&args.store, &args.index, ReaderOptions::default())?;
    let bar = progress::bytes(reader.image_size(), "restore", quiet);
    let started = Instant::now();
    if args.output.as_os_str() == "-" {
        image_to_stdout(&reader, &bar).await?;
        bar.finish_and_clear();
        return Ok(());
    }
    let (size, holes) = restore_to_file(&reader, &args.output, args.fsync, &bar).await?;
    bar.finish_and_clear();
    if !quiet {
        eprintln!(
            "restored {size} bytes to {}: {:.0} MB/s; {} chunks fetched, {holes} zero chunks left as holes",
            args.output.display(),
            progress::mb_per_s(size, started.elapsed().as_secs_f64()),
            reader.stats().chunks_fetched,
        );
    }
    Ok(())
}

/// Runs `cairn cat`.
pub(crate) async fn run_cat(args: &CatArgs, quiet: bool) -> Result<(), Failure> {
    let reader = open_reader(&args.store, &args.index, ReaderOptions::default())?;
    let bar = progress::bytes(reader.image_size(), "cat", quiet);
    image_to_stdout(&reader, &bar).await?;
    bar.finish_and_clear();
    Ok(())
}

/// Runs `cairn read`.
pub(crate) async fn run_read(args: &ReadArgs) -> Result<(), Failure> {
    let reader = open_reader(&args.store, &args.index, ReaderOptions::default())?;
    let mut stdout = tokio::io::stdout();
    let end = args
        .offset
        .saturating_add(args.length)
        .min(reader.image_size());
    let mut at = args.offset;
    let mut buf = vec![0u8; 4 << 20];
    while at < end {
        let want = usize::try_from((end - at).min(buf.len() as u64)).unwrap_or(buf.len());
        let read = reader
            .read_at(&mut buf[..want], at)
            .await
            .map_err(Failure::data)?;
        if read == 0 {
            break;
        }
        stdout.write_all(&buf[..read]).await.map_err(stdout_error)?;
        at += read as u64;
    }
    stdout.flush().await.map_err(stdout_error)
}
