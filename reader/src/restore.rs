//! Restore: the whole image, fetched in parallel through a [`ChunkReader`], written where the
//! caller points and only there.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn_index::{ChunkIndex, Digest};
use futures_util::StreamExt as _;
use futures_util::stream;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

use crate::error::ReaderError;
use crate::output::{Target, TemporaryFile, output_error};
use crate::reader::{ChunkData, ChunkReader, Once};

/// How a restore writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// fsync a restored file before moving it into place, and its folder after (the image then
    /// survives a power loss). A block device is always flushed at the end.
    pub fsync: bool,
    /// On a block device, leave zero chunks unwritten: the device is known to read as zeros
    /// (new, or discarded). Files get holes for them anyway; streams need every byte.
    pub assume_zeroed: bool,
}

impl RestoreOptions {
    /// Sets [`fsync`](RestoreOptions::fsync).
    #[must_use]
    pub fn fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// Sets [`assume_zeroed`](RestoreOptions::assume_zeroed).
    #[must_use]
    pub fn assume_zeroed(mut self, assume_zeroed: bool) -> Self {
        self.assume_zeroed = assume_zeroed;
        self
    }
}

/// What a restore wrote where.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Restored {
    /// Where: the file (symlinks resolved), the device or the stream.
    pub output: PathBuf,
    /// What it was.
    pub kind: OutputKind,
    /// The image's size.
    pub size: u64,
    /// Zero chunks left unwritten (holes in a file, untouched on an assumed-zeroed device).
    pub zero_chunks_skipped: u64,
}

/// What a restore's output turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutputKind {
    /// A regular file, new or replaced whole.
    File,
    /// A block device, written in place.
    BlockDevice,
    /// A FIFO, a character device or a standard descriptor, written in order.
    Stream,
}

/// A callback told how many more bytes of the image are done.
pub type Progress<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// The digests the image holds once: a restore reads them once, so it does not cache them
/// (only chunks it will meet again take cache space, and the rest is freed once written).
fn single_use(index: &dyn ChunkIndex) -> HashSet<Digest> {
    let mut counts: HashMap<Digest, bool> = HashMap::with_capacity(index.chunk_count());
    for chunk in index.chunks() {
        counts
            .entry(chunk.digest)
            .and_modify(|repeated| *repeated = true)
            .or_insert(false);
    }
    counts
        .into_iter()
        .filter_map(|(digest, repeated)| (!repeated).then_some(digest))
        .collect()
}

/// The plaintext of chunk `i` for a restore: uncached if the image holds it once.
async fn restore_chunk(
    reader: &ChunkReader,
    once: &HashSet<Digest>,
    i: usize,
) -> Result<Option<ChunkData>, ReaderError> {
    let single = reader
        .index()
        .chunk(i)
        .is_some_and(|info| once.contains(&info.digest));
    if single {
        let once = reader.chunk_once_then(i, Arc::new).await?;
        Ok(once.map(|once| match once {
            Once::Cached(data) | Once::Done(data) => data,
        }))
    } else {
        reader.chunk(i).await
    }
}

/// Chunks fetched at once by a restore: enough for about 32 MiB in flight, from 8 to 128.
fn restore_concurrency(index: &dyn ChunkIndex) -> usize {
    let chunks = index.chunk_count().max(1) as u64;
    let average = (index.image_size() / chunks).max(1);
    usize::try_from((32 << 20) / average)
        .unwrap_or(128)
        .clamp(8, 128)
}

/// Restores the whole image of `reader` to `path`, and only there:
/// - a **regular file** (new, or existing through any symlinks) gets a temporary file beside it,
///   created exclusively under a random name with the old file's mode and owner, written in
///   parallel with holes for zero chunks, and renamed over it only when complete: a failed or
///   cancelled restore leaves the old file as it was and no temporary;
/// - a **block device** is opened exclusively (a mounted one is refused), checked to hold the
///   image before anything is written, written in place with its zero chunks (unless
///   [`assume_zeroed`](RestoreOptions::assume_zeroed)) and flushed;
/// - a **FIFO or character device** is written in order, in place;
/// - **standard input, output or error named by a path** (`/dev/stdout`, `/dev/fd/1`,
///   `/proc/self/fd/1`, or a symlink to one) is written in order through the descriptor itself,
///   as a writer would be: a file behind it (`>> log`) is written as the shell opened it, never
///   replaced. Other descriptors (`/dev/fd/3`) are opened by path if they are pipes or FIFOs
///   and refused ([`ReaderError::OutputKind`]) if they are files or devices.
///
/// Memory: a chunk the image holds once is not cached (it is written and freed on the thread
/// that verified it: from a local store, one of a restore thread per core); only chunks met
/// again take cache space. The peak is the cache's capacity plus the chunks in flight,
/// about 32 MiB of plaintext (at least 8 chunks) and their encoded bytes while they decode.
///
/// `progress` hears of the bytes done as chunks are written (restore threads tell every
/// 8 MiB). On `cancel`, nothing new starts, the writes under way
/// finish, and the result is [`ReaderError::Cancelled`] saying what was left.
///
/// # Errors
/// [`ReaderError::Chunk`] and the reader's other errors for a chunk that cannot be read;
/// [`ReaderError::Output`], [`ReaderError::OutputKind`] and [`ReaderError::DeviceTooSmall`]
/// for the output; [`ReaderError::Cancelled`].
///
/// ```no_run
/// # async fn example(reader: cairn_reader::ChunkReader) -> Result<(), cairn_reader::ReaderError> {
/// use cairn_reader::{RestoreOptions, restore_to_path};
/// use tokio_util::sync::CancellationToken;
///
/// let done = restore_to_path(
///     &reader,
///     "/dev/vdb".as_ref(),
///     RestoreOptions::default(),
///     &|bytes| eprint!("+{bytes}"),
///     &CancellationToken::new(),
/// )
/// .await?;
/// println!("{} bytes to {}", done.size, done.output.display());
/// # Ok(())
/// # }
/// ```
pub async fn restore_to_path(
    reader: &ChunkReader,
    path: &Path,
    options: RestoreOptions,
    progress: Progress<'_>,
    cancel: &CancellationToken,
) -> Result<Restored, ReaderError> {
    match Target::of(path, reader.image_size())? {
        Target::File { path, existing } => {
            let skipped =
                to_file(reader, &path, existing.as_ref(), options, progress, cancel).await?;
            Ok(Restored {
                output: path,
                kind: OutputKind::File,
                size: reader.image_size(),
                zero_chunks_skipped: skipped,
            })
        }
        Target::Device { path, file } => {
            let zeros = if options.assume_zeroed {
                Zeros::Skip
            } else {
                Zeros::Write
            };
            let skipped = to_device(reader, file, &path, zeros, progress, cancel).await?;
            Ok(Restored {
                output: path,
                kind: OutputKind::BlockDevice,
                size: reader.image_size(),
                zero_chunks_skipped: skipped,
            })
        }
        Target::Descriptor { path, file } => {
            let shown = path.display().to_string();
            let out = tokio::fs::File::from_std(file);
            restore_to_writer(reader, out, &shown, progress, cancel).await?;
            Ok(streamed(reader, path))
        }
        Target::Stream { path } => {
            let shown = path.display().to_string();
            // Opening a FIFO waits until something opens it for reading.
            let mut open = tokio::fs::OpenOptions::new();
            open.write(true);
            let opened = tokio::select! {
                opened = open.open(&path) => opened,
                () = cancel.cancelled() => {
                    return Err(ReaderError::Cancelled { left: format!("{shown} got nothing") });
                }
            };
            let out = opened.map_err(|e| output_error(&path, "open it for writing", e))?;
            restore_to_writer(reader, out, &shown, progress, cancel).await?;
            Ok(streamed(reader, path))
        }
    }
}

/// What a restore written in order to `output` did.
fn streamed(reader: &ChunkReader, output: PathBuf) -> Restored {
    Restored {
        output,
        kind: OutputKind::Stream,
        size: reader.image_size(),
        zero_chunks_skipped: 0,
    }
}

/// Writes the whole image of `reader` to `out`, in order (standard output, a pipe, a socket);
/// `what` names it in errors. Chunks are fetched ahead in parallel. On `cancel`, stops at once
/// with [`ReaderError::Cancelled`] (`out` then holds part of the image).
///
/// # Errors
/// The reader's errors; [`ReaderError::Output`] if `out` fails; [`ReaderError::Cancelled`].
pub async fn restore_to_writer<W: AsyncWrite + Unpin>(
    reader: &ChunkReader,
    mut out: W,
    what: &str,
    progress: Progress<'_>,
    cancel: &CancellationToken,
) -> Result<(), ReaderError> {
    let error = |e| output_error(Path::new(what), "write to it", e);
    let cancelled = || ReaderError::Cancelled {
        left: format!("{what} got part of the image"),
    };
    let count = reader.index().chunk_count();
    let once = Arc::new(single_use(reader.index().as_ref()));
    let mut chunks = stream::iter((0..count).map(|i| {
        let reader = reader.clone();
        let once = Arc::clone(&once);
        async move { restore_chunk(&reader, &once, i).await }
    }))
    .buffered(restore_concurrency(reader.index().as_ref()));
    loop {
        let next = tokio::select! {
            next = chunks.next() => next,
            () = cancel.cancelled() => return Err(cancelled()),
        };
        let Some(chunk) = next else { break };
        let chunk = chunk?.unwrap_or_default();
        tokio::select! {
            written = out.write_all(&chunk) => written.map_err(error)?,
            () = cancel.cancelled() => return Err(cancelled()),
        }
        progress(chunk.len() as u64);
    }
    out.flush().await.map_err(error)
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

async fn to_file(
    reader: &ChunkReader,
    output: &Path,
    existing: Option<&std::fs::Metadata>,
    options: RestoreOptions,
    progress: Progress<'_>,
    cancel: &CancellationToken,
) -> Result<u64, ReaderError> {
    let (temporary, file) = TemporaryFile::create(output, existing)?;
    // A file of the full size whose unwritten parts are holes.
    file.set_len(reader.image_size())
        .map_err(|e| output_error(output, "size the temporary file", e))?;
    let file = Arc::new(file);
    let skipped = write_at_offsets(reader, &file, output, Zeros::Skip, progress, cancel).await?;
    if cancel.is_cancelled() {
        return Err(ReaderError::Cancelled {
            left: format!(
                "the unfinished image was removed; {} is as it was",
                output.display()
            ),
        });
    }
    temporary.commit(&file, options.fsync)?;
    Ok(skipped)
}

async fn to_device(
    reader: &ChunkReader,
    file: File,
    path: &Path,
    zeros: Zeros,
    progress: Progress<'_>,
    cancel: &CancellationToken,
) -> Result<u64, ReaderError> {
    let file = Arc::new(file);
    let skipped = write_at_offsets(reader, &file, path, zeros, progress, cancel).await;
    let flushed = {
        let file = Arc::clone(&file);
        tokio::task::spawn_blocking(move || file.sync_all()).await
    };
    let skipped = skipped?;
    flushed
        .map_err(|e| ReaderError::Task {
            what: "flush",
            message: e.to_string(),
        })?
        .map_err(|e| output_error(path, "flush the device", e))?;
    if cancel.is_cancelled() {
        return Err(ReaderError::Cancelled {
            left: format!("{} holds part of the image", path.display()),
        });
    }
    Ok(skipped)
}

/// Fetches every chunk (in parallel) and writes it at its offset in `file`; returns the number
/// of zero chunks left unwritten. On a local store, every non-zero chunk is written by one of
/// the restore threads, one per core: a chunk the image holds once is read and verified on that
/// thread from start to end, one met again comes through the cache (fetched once); async jobs
/// write the zeros a device needs. Otherwise async jobs do it all. On a cancel or the first failure, starts nothing more and returns once the
/// writes under way are done, so no write is left running behind the caller.
async fn write_at_offsets(
    reader: &ChunkReader,
    file: &Arc<File>,
    path: &Path,
    zeros: Zeros,
    progress: Progress<'_>,
    cancel: &CancellationToken,
) -> Result<u64, ReaderError> {
    let index = Arc::clone(reader.index());
    let zero_buffer: ChunkData = if zeros == Zeros::Write {
        let longest = index
            .chunks()
            .filter(|c| reader.is_zero_chunk(c))
            .map(|c| c.len())
            .max()
            .unwrap_or(0);
        Arc::new(vec![0u8; usize::try_from(longest).unwrap_or(0)])
    } else {
        Arc::default()
    };
    let path: Arc<Path> = Arc::from(path);
    let once = Arc::new(single_use(index.as_ref()));
    let halt = cancel.child_token();
    let threaded: Arc<[usize]> = if reader.reads_locally() {
        index
            .chunks()
            .filter(|c| !reader.is_zero_chunk(c))
            .map(|c| c.index)
            .collect()
    } else {
        Arc::from([])
    };
    let (mut from_threads, threads) =
        spawn_restore_threads(reader, &threaded, &once, file, &path, &halt);
    // Every write of a chunk read once on an async job runs on the thread that verified it,
    // and holds a clone of `writing`: when all are dropped, no write is left running behind
    // the caller, even one whose fetch was abandoned on a cancel.
    let (writing, mut all_written) = tokio::sync::mpsc::channel::<()>(1);
    let mut by_thread = threaded.iter().copied().peekable();
    let jobs = (0..index.chunk_count())
        .filter(move |&i| {
            let on_thread = by_thread.peek() == Some(&i);
            if on_thread {
                by_thread.next();
            }
            !on_thread
        })
        .map(|i| {
            let (reader, file, index) = (reader.clone(), Arc::clone(file), Arc::clone(&index));
            let once = Arc::clone(&once);
            let (zero_buffer, path) = (Arc::clone(&zero_buffer), Arc::clone(&path));
            let (writing, halt) = (writing.clone(), halt.clone());
            async move {
                let Some(info) = index.chunk(i) else {
                    return Ok((0, false));
                };
                if halt.is_cancelled() {
                    return Ok((0, false));
                }
                let zero = reader.is_zero_chunk(&info);
                if zero && zeros == Zeros::Skip {
                    return Ok((info.len(), true));
                }
                let write_error = |e| output_error(&path, "write", e);
                // The cached chunk itself is written: no copy.
                let data: ChunkData = if zero {
                    zero_buffer
                } else if once.contains(&info.digest) {
                    let (file, stop) = (Arc::clone(&file), halt.clone());
                    let write = move |plaintext: Vec<u8>| {
                        let _writing = writing;
                        if stop.is_cancelled() {
                            return Ok(false);
                        }
                        file.write_all_at(&plaintext, info.start).map(|()| true)
                    };
                    let fetched = tokio::select! {
                        fetched = reader.chunk_once_then(i, write) => fetched,
                        () = halt.cancelled() => return Ok((0, false)),
                    };
                    match fetched? {
                        Some(Once::Done(written)) => {
                            let written = written.map_err(write_error)?;
                            return Ok((if written { info.len() } else { 0 }, false));
                        }
                        Some(Once::Cached(data)) => data,
                        None => Arc::default(),
                    }
                } else {
                    let fetched = tokio::select! {
                        fetched = reader.chunk(i) => fetched,
                        () = halt.cancelled() => return Ok((0, false)),
                    };
                    fetched?.unwrap_or_default()
                };
                let len = usize::try_from(info.len())
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                tokio::task::spawn_blocking(move || file.write_all_at(&data[..len], info.start))
                    .await
                    .map_err(|e| ReaderError::Task {
                        what: "write",
                        message: e.to_string(),
                    })?
                    .map_err(write_error)?;
                Ok((info.len(), false))
            }
        });
    let mut done = stream::iter(jobs).buffer_unordered(restore_concurrency(index.as_ref()));
    let mut skipped = 0;
    let mut failure = None;
    let mut fail = |error: ReaderError| {
        halt.cancel();
        failure.get_or_insert(error);
    };
    let (mut jobs_open, mut threads_open) = (true, true);
    while jobs_open || threads_open {
        tokio::select! {
            written = done.next(), if jobs_open => match written {
                Some(Ok((len, zero))) => {
                    skipped += u64::from(zero);
                    progress(len);
                }
                Some(Err(e)) => fail(e),
                None => jobs_open = false,
            },
            written = from_threads.recv(), if threads_open => match written {
                Some(Ok(len)) => progress(len),
                Some(Err(e)) => fail(e),
                // Every restore thread has ended.
                None => threads_open = false,
            },
        }
    }
    // All have ended; one that panicked reported nothing for the chunks it had left.
    for thread in threads {
        if let Err(join) = thread.await {
            fail(ReaderError::Task {
                what: "restore thread",
                message: join.to_string(),
            });
        }
    }
    drop(done);
    drop(writing);
    // Waits for writes still running on a verifying thread (only after a cancel or failure).
    let _ = all_written.recv().await;
    failure.map_or(Ok(skipped), Err)
}

/// How many bytes a restore thread writes between two progress reports.
const REPORT_BYTES: u64 = 8 << 20;

/// Starts one restore thread per core over the chunks `chunks` (the image's non-zero chunks,
/// by index, from a local store; those in `once` are read uncached). Each reports the bytes it wrote, every
/// [`REPORT_BYTES`] and at its end, or its failure, and stops at a failure or when `halt` is
/// cancelled; the receiver closes when all have ended, and their handles tell whether one
/// panicked.
fn spawn_restore_threads(
    reader: &ChunkReader,
    chunks: &Arc<[usize]>,
    once: &Arc<HashSet<Digest>>,
    file: &Arc<File>,
    path: &Arc<Path>,
    halt: &CancellationToken,
) -> (
    tokio::sync::mpsc::UnboundedReceiver<Result<u64, ReaderError>>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let (report, reports) = tokio::sync::mpsc::unbounded_channel();
    if chunks.is_empty() {
        return (reports, Vec::new());
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(chunks.len());
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::with_capacity(threads);
    let runtime = tokio::runtime::Handle::current();
    for _ in 0..threads {
        let (reader, chunks, next) = (reader.clone(), Arc::clone(chunks), Arc::clone(&next));
        let (file, path, halt) = (Arc::clone(file), Arc::clone(path), halt.clone());
        let (report, once, runtime) = (report.clone(), Arc::clone(once), runtime.clone());
        handles.push(tokio::task::spawn_blocking(move || {
            // Progress goes out every few MiB, not per chunk: each report wakes the restore.
            let mut unreported = 0;
            while !halt.is_cancelled() {
                let Some(&i) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                let Some(info) = reader.index().chunk(i) else {
                    continue;
                };
                // A chunk met again comes through the cache (fetched once, shared); one held
                // once is read and verified right here.
                let data = if once.contains(&info.digest) {
                    reader.chunk_blocking(&info)
                } else {
                    Some(
                        runtime
                            .block_on(reader.chunk(i))
                            .map(Option::unwrap_or_default),
                    )
                };
                let written = match data {
                    Some(Ok(data)) => file
                        .write_all_at(&data, info.start)
                        .map(|()| info.len())
                        .map_err(|e| output_error(&path, "write", e)),
                    Some(Err(error)) => Err(error),
                    None => Err(ReaderError::Task {
                        what: "restore",
                        message: "the store has no blocking read path".to_owned(),
                    }),
                };
                match written {
                    Ok(len) if unreported + len < REPORT_BYTES => unreported += len,
                    Ok(len) => {
                        if report.send(Ok(unreported + len)).is_err() {
                            return;
                        }
                        unreported = 0;
                    }
                    Err(error) => {
                        let _ = report.send(Err(error));
                        return;
                    }
                }
            }
            if unreported > 0 {
                let _ = report.send(Ok(unreported));
            }
        }));
    }
    (reports, handles)
}
