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
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use crate::Failure;
use crate::interrupt::Stop;
use crate::output::{Target, TemporaryFile};
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
    let index: Arc<dyn ChunkIndex> = Arc::new(Index::open(index).map_err(Failure::error)?);
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

/// What a restore wrote.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Restored {
    /// The image size.
    pub(crate) size: u64,
    /// Zero chunks left unwritten (holes in a file, untouched on an assumed-zeroed device).
    pub(crate) holes: u64,
}

/// What happens to zero chunks in a positional restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zeros {
    /// Left unwritten: the target reads as zeros there (a new file of the full length, an
    /// assumed-zeroed device).
    Skip,
    /// Written as zeros (a device whose contents are unknown).
    Write,
}

/// The note an interrupted restore leaves: what it left behind.
fn interrupted(what: impl std::fmt::Display) -> Failure {
    Failure::interrupted(what)
}

/// Writes the whole image to the regular file `output` through a temporary file beside it,
/// renamed into place only when complete, so a failed or interrupted restore leaves `output`
/// as it was (absent, or the old file); chunks are fetched in parallel and written where they
/// belong; zero chunks stay holes.
pub(crate) async fn restore_to_file(
    reader: &ChunkReader,
    output: &Path,
    existing: Option<&std::fs::Metadata>,
    fsync: bool,
    bar: &ProgressBar,
    stop: &Stop,
) -> Result<Restored, Failure> {
    let (temporary, file) = TemporaryFile::create(output, existing)?;
    let size = reader.image_size();
    // A file of the full size whose unwritten parts are holes.
    file.set_len(size)
        .map_err(|e| Failure::data(format!("{}: cannot write: {e}", output.display())))?;
    let file = Arc::new(file);
    let holes = write_at_offsets(reader, &file, output, Zeros::Skip, bar, stop).await?;
    if stop.is_stopped() {
        return Err(interrupted(format!(
            "the unfinished image was removed; {} is as it was",
            output.display()
        )));
    }
    temporary.commit(&file, fsync)?;
    Ok(Restored { size, holes })
}

/// Writes the whole image onto the block device `file` (already checked to be large enough),
/// in place, and flushes it.
async fn restore_to_device(
    reader: &ChunkReader,
    file: File,
    path: &Path,
    zeros: Zeros,
    bar: &ProgressBar,
    stop: &Stop,
) -> Result<Restored, Failure> {
    let file = Arc::new(file);
    let holes = write_at_offsets(reader, &file, path, zeros, bar, stop).await?;
    let flushed = {
        let file = Arc::clone(&file);
        tokio::task::spawn_blocking(move || file.sync_all()).await
    };
    flushed
        .map_err(|e| Failure::data(format!("flushing failed: {e}")))?
        .map_err(|e| Failure::data(format!("{}: cannot flush the device: {e}", path.display())))?;
    if stop.is_stopped() {
        return Err(interrupted(format!(
            "{} holds part of the image",
            path.display()
        )));
    }
    Ok(Restored {
        size: reader.image_size(),
        holes,
    })
}

/// Fetches every chunk (in parallel) and writes it at its offset in `file`; returns the number
/// of zero chunks left unwritten. On a stop, starts nothing more and returns once the writes
/// under way are done.
async fn write_at_offsets(
    reader: &ChunkReader,
    file: &Arc<File>,
    path: &Path,
    zeros: Zeros,
    bar: &ProgressBar,
    stop: &Stop,
) -> Result<u64, Failure> {
    let index = Arc::clone(reader.index());
    let zero_buffer: Arc<[u8]> = {
        let longest = index
            .chunks()
            .filter(|c| reader.is_zero_chunk(c))
            .map(|c| c.len())
            .max()
            .unwrap_or(0);
        if zeros == Zeros::Write {
            vec![0u8; usize::try_from(longest).unwrap_or(0)].into()
        } else {
            Arc::from(Vec::new())
        }
    };
    let jobs = (0..index.chunk_count()).map(|i| {
        let (reader, file, index) = (reader.clone(), Arc::clone(file), Arc::clone(&index));
        let (zero_buffer, stop) = (Arc::clone(&zero_buffer), stop.clone());
        async move {
            let Some(info) = index.chunk(i) else {
                return Ok((0, false));
            };
            if stop.is_stopped() {
                return Ok((0, false));
            }
            let zero = reader.is_zero_chunk(&info);
            if zero && zeros == Zeros::Skip {
                return Ok((info.len(), true));
            }
            let data: Arc<[u8]> = if zero {
                zero_buffer
            } else {
                let fetched = tokio::select! {
                    fetched = reader.chunk(i) => fetched,
                    () = stop.stopped() => return Ok((0, false)),
                };
                let data = fetched.map_err(Failure::error)?.unwrap_or_default();
                Arc::from(data.as_slice())
            };
            let len = usize::try_from(info.len())
                .unwrap_or(usize::MAX)
                .min(data.len());
            tokio::task::spawn_blocking(move || file.write_all_at(&data[..len], info.start))
                .await
                .map_err(|e| Failure::data(format!("writing failed: {e}")))?
                .map_err(|e| Failure::data(format!("cannot write: {e}")))?;
            Ok((info.len(), false))
        }
    });
    let mut done = stream::iter(jobs).buffer_unordered(restore_concurrency(index.as_ref()));
    let mut holes = 0;
    let mut failure: Option<Failure> = None;
    // Every job runs to its end, even after a failure: no write is left running behind us.
    while let Some(written) = done.next().await {
        match written {
            Ok((len, hole)) => {
                holes += u64::from(hole);
                bar.inc(len);
            }
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        Some(failure) => Err(failure.context(path)),
        None => Ok(holes),
    }
}

/// Writes the whole image to `out` in order (standard output, a FIFO, a character device).
async fn write_stream<W: AsyncWrite + Unpin>(
    reader: &ChunkReader,
    mut out: W,
    what: &str,
    bar: &ProgressBar,
    stop: &Stop,
) -> Result<(), Failure> {
    let error = |e: std::io::Error| Failure::data(format!("cannot write to {what}: {e}"));
    let count = reader.index().chunk_count();
    let mut chunks = stream::iter((0..count).map(|i| {
        let reader = reader.clone();
        async move { reader.chunk(i).await }
    }))
    .buffered(restore_concurrency(reader.index().as_ref()));
    loop {
        let next = tokio::select! {
            next = chunks.next() => next,
            () = stop.stopped() => return Err(interrupted(format!("{what} got part of the image"))),
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(Failure::error)?.unwrap_or_default();
        tokio::select! {
            written = out.write_all(&chunk) => written.map_err(error)?,
            () = stop.stopped() => return Err(interrupted(format!("{what} got part of the image"))),
        }
        bar.inc(chunk.len() as u64);
    }
    out.flush().await.map_err(error)
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
    let reader = open_reader(&args.store, &args.index, ReaderOptions::default())?;
    let target = Target::of(&args.output, reader.image_size())?;
    let bar = progress::bytes(reader.image_size(), "restore", quiet);
    let started = Instant::now();
    let restored = match target {
        Target::Stdout => {
            write_stream(&reader, tokio::io::stdout(), "standard output", &bar, stop).await?;
            None
        }
        Target::Stream { path } => {
            let shown = path.display().to_string();
            // Opening a FIFO waits until something opens it for reading.
            let mut options = tokio::fs::OpenOptions::new();
            options.write(true);
            let opened = tokio::select! {
                opened = options.open(&path) => opened,
                () = stop.stopped() => return Err(interrupted(format!("{shown} got nothing"))),
            };
            let out = opened.map_err(|e| Failure::data(format!("{shown}: cannot open: {e}")))?;
            write_stream(&reader, out, &shown, &bar, stop).await?;
            None
        }
        Target::Device { path, file } => {
            let zeros = if args.assume_zeroed {
                Zeros::Skip
            } else {
                Zeros::Write
            };
            Some(restore_to_device(&reader, file, &path, zeros, &bar, stop).await?)
        }
        Target::File { path, existing } => {
            Some(restore_to_file(&reader, &path, existing.as_ref(), args.fsync, &bar, stop).await?)
        }
    };
    bar.finish_and_clear();
    if let (Some(Restored { size, holes }), false) = (restored, quiet) {
        eprintln!(
            "restored {size} bytes to {}: {:.0} MB/s; {} chunks fetched, {holes} zero chunks left unwritten",
            args.output.display(),
            progress::mb_per_s(size, started.elapsed().as_secs_f64()),
            reader.stats().chunks_fetched,
        );
    }
    Ok(())
}

/// Runs `cairn cat`.
pub(crate) async fn run_cat(args: &CatArgs, quiet: bool, stop: &Stop) -> Result<(), Failure> {
    let reader = open_reader(&args.store, &args.index, ReaderOptions::default())?;
    let bar = progress::bytes(reader.image_size(), "cat", quiet);
    write_stream(&reader, tokio::io::stdout(), "standard output", &bar, stop).await?;
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
            .map_err(Failure::error)?;
        if read == 0 {
            break;
        }
        stdout.write_all(&buf[..read]).await.map_err(stdout_error)?;
        at += read as u64;
    }
    stdout.flush().await.map_err(stdout_error)
}
