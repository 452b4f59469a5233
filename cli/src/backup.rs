//! `cairn backup`: cut a file into chunks, store the new ones, write the index.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use cairn_chunk_store::{ChunkSource, ChunkStore, DigestAlgorithm, PutOutcome, SyncLevel};
use cairn_index::{
    AtomicFile, CasyncChunker, CasyncIndexWriter, CasyncParams, Chunker, DynamicIndexWriter,
    FixedChunker, FixedIndexWriter, PbsChunker, ReadChunks,
};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use indicatif::ProgressBar;

use crate::Failure;
use crate::interrupt::Stop;
use crate::progress;
use crate::store::StoreSpec;

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
    /// The store: pbs:PATH, castr:PATH, or a PATH (created if absent: castr for caibx, PBS
    /// otherwise).
    #[arg(long, value_parser = StoreSpec::parse)]
    store: StoreSpec,
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

/// A size such as `4096`, `64K`, `64KiB`, `4M`, `4MiB`, `1G` or `1GiB` (powers of 1024; `T`
/// and `TiB` too).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let shift = match unit {
        "" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "m" | "MiB" => 20,
        "G" | "g" | "GiB" => 30,
        "T" | "t" | "TiB" => 40,
        _ => {
            return Err(format!(
                "`{text}` is not a size (like 4096, 64K, 64KiB, 4M or 1GiB)"
            ));
        }
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size (like 4096, 64K, 64KiB, 4M or 1GiB)"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// How to cut and index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) format: Format,
    pub(crate) chunk_size: Option<u64>,
    pub(crate) digest: DigestArg,
}

/// What a backup did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Summary {
    pub(crate) size: u64,
    pub(crate) chunks: u64,
    pub(crate) unique_chunks: u64,
    pub(crate) unique_bytes: u64,
    pub(crate) new_chunks: u64,
    pub(crate) seconds: f64,
}

impl Summary {
    #[allow(clippy::cast_precision_loss)]
    pub(crate) fn dedup_ratio(&self) -> f64 {
        if self.unique_bytes == 0 {
            1.0
        } else {
            self.size as f64 / self.unique_bytes as f64
        }
    }
}

enum Writer {
    Fixed(FixedIndexWriter<AtomicFile>),
    Dynamic(DynamicIndexWriter<AtomicFile>),
    Casync(CasyncIndexWriter<AtomicFile>),
}

fn usage(message: String) -> Failure {
    Failure::usage(message)
}

fn chunker_and_writer(
    plan: Plan,
    index: &Path,
) -> Result<(Box<dyn Chunker>, Writer, DigestAlgorithm), Failure> {
    let to_usize =
        |n: u64| usize::try_from(n).map_err(|_| usage(format!("chunk size {n} is too large")));
    Ok(match plan.format {
        Format::Fidx => {
            let size = plan.chunk_size.unwrap_or(4 << 20);
            let chunker = FixedChunker::new(to_usize(size)?).map_err(|e| usage(e.to_string()))?;
            let writer = FixedIndexWriter::create(index, size).map_err(Failure::error)?;
            (
                Box::new(chunker),
                Writer::Fixed(writer),
                DigestAlgorithm::Sha256,
            )
        }
        Format::Didx => {
            let avg = plan.chunk_size.unwrap_or(PbsChunker::DEFAULT_AVG as u64);
            let chunker = PbsChunker::new(to_usize(avg)?).map_err(|e| usage(e.to_string()))?;
            let writer = DynamicIndexWriter::create(index).map_err(Failure::error)?;
            (
                Box::new(chunker),
                Writer::Dynamic(writer),
                DigestAlgorithm::Sha256,
            )
        }
        Format::Caibx => {
            let chunker = match plan.chunk_size {
                Some(avg) => {
                    CasyncChunker::with_avg(to_usize(avg)?).map_err(|e| usage(e.to_string()))?
                }
                None => CasyncChunker::default(),
            };
            let (min, avg, max) = chunker.sizes();
            let digest = match plan.digest {
                DigestArg::Sha256 => DigestAlgorithm::Sha256,
                DigestArg::Sha512_256 => DigestAlgorithm::Sha512_256,
            };
            let params = CasyncParams {
                flags: CasyncParams::flags_for(digest),
                min: min as u64,
                avg: avg as u64,
                max: max as u64,
            };
            let writer = CasyncIndexWriter::create(index, params).map_err(Failure::error)?;
            (Box::new(chunker), Writer::Casync(writer), digest)
        }
    })
}

/// Backs `input` up into `store`, writing `index`: the chunks are stored (at most 16 writes in
/// flight), made durable by the store's [`ChunkStore::sync`], and only then is the index
/// committed, so a crash never leaves an index naming chunks that are not on disk. On an error
/// or a stop, the writes in flight finish (each leaves a whole chunk or nothing) and no index
/// appears.
pub(crate) async fn backup(
    store: Arc<dyn ChunkStore>,
    input: &Path,
    index: &Path,
    plan: Plan,
    bar: &ProgressBar,
    stop: &Stop,
) -> Result<Summary, Failure> {
    let started = Instant::now();
    let (chunker, mut writer, algorithm) = chunker_and_writer(plan, index)?;
    let source = ChunkSource::new(Arc::clone(&store), algorithm);
    let file = std::fs::File::open(input)
        .map_err(|e| Failure::data(format!("{}: cannot read: {e}", input.display())))?;
    // Reading and cutting run on a thread of their own, a few chunks ahead of the writers.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let cutter = tokio::task::spawn_blocking(move || {
        for chunk in ReadChunks::new(std::io::BufReader::with_capacity(1 << 20, file), chunker) {
            let failed = chunk.is_err();
            if sender.blocking_send(chunk).is_err() || failed {
                break;
            }
        }
    });
    let in_flight_limit = 16;
    let mut in_flight = FuturesOrdered::new();
    let mut summary = Summary::default();
    let mut unique: HashMap<[u8; 32], u64> = HashMap::new();
    let mut end = 0u64;
    let mut input_done = false;
    // Taking chunks from the cutter and finishing writes go on side by side, so a slow input
    // never holds back the writes of chunks already cut; FuturesOrdered keeps index order.
    let outcome: Result<(), Failure> = loop {
        let can_take = !input_done && !stop.is_stopped() && in_flight.len() < in_flight_limit;
        tokio::select! {
            next = receiver.recv(), if can_take => match next {
                Some(Ok(chunk)) => {
                    let source = source.clone();
                    let len = chunk.len() as u64;
                    in_flight
                        .push_back(async move { source.write_new(chunk).await.map(|r| (len, r)) });
                }
                Some(Err(e)) => {
                    break Err(Failure::data(format!("{}: cannot read: {e}", input.display())));
                }
                None => input_done = true,
            },
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                let (len, (digest, outcome)) = match done {
                    Ok(done) => done,
                    Err(e) => break Err(Failure::error(e)),
                };
                end += len;
                summary.chunks += 1;
                if outcome == PutOutcome::Inserted {
                    summary.new_chunks += 1;
                }
                unique.entry(digest).or_insert(len);
                bar.inc(len);
                let pushed = match &mut writer {
                    Writer::Fixed(w) => w.push(&digest),
                    Writer::Dynamic(w) => w.push(end, &digest),
                    Writer::Casync(w) => w.push(end, &digest),
                };
                if let Err(e) = pushed {
                    break Err(Failure::error(e));
                }
            },
            // Wakes the loop so that it stops taking input.
            () = stop.stopped(), if can_take => {}
            else => break Ok(()),
        }
    };
    // Whatever ended the loop, the chunk writes under way finish before we return: none is
    // left to be cut off at exit with its temporary file behind.
    while in_flight.next().await.is_some() {}
    outcome?;
    if stop.is_stopped() {
        return Err(Failure::interrupted(format!(
            "no index was written; {} chunks stored so far are complete and reusable",
            summary.new_chunks
        )));
    }
    cutter.await.map_err(|e| {
        Failure::data(format!(
            "{}: the reading thread failed: {e}",
            input.display()
        ))
    })?;
    // The chunks reach stable storage before the index that names them exists.
    store.sync().await.map_err(Failure::error)?;
    if stop.is_stopped() {
        return Err(Failure::interrupted("no index was written"));
    }
    let committed = match writer {
        Writer::Fixed(w) => w.finish(end).and_then(AtomicFile::commit),
        Writer::Dynamic(w) => w.finish().and_then(AtomicFile::commit),
        Writer::Casync(w) => w.finish().and_then(AtomicFile::commit),
    };
    committed.map_err(Failure::error)?;
    summary.size = end;
    summary.unique_chunks = unique.len() as u64;
    summary.unique_bytes = unique.values().sum();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Runs `cairn backup`.
pub(crate) async fn run(args: &BackupArgs, quiet: bool, stop: &Stop) -> Result<(), Failure> {
    let store = args
        .store
        .create(args.format != Format::Caibx, args.sync.level())?;
    let total = std::fs::metadata(&args.input).map(|m| m.len()).unwrap_or(0);
    let bar = progress::bytes(total, "backup", quiet);
    let plan = Plan {
        format: args.format,
        chunk_size: args.chunk_size,
        digest: args.digest,
    };
    let summary = backup(store, &args.input, &args.index, plan, &bar, stop).await?;
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
