//! `cairn demo`: the whole job on a built-in sample, with figures.

use std::fs::File;
use std::io::{BufWriter, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use cairn_chunk_store::{CastrStore, ChunkSource, ChunkStore, PbsDatastore, to_hex};
use cairn_index::{ChunkIndex, Index};
use cairn_reader::{ChunkReader, ReaderOptions, RestoreOptions, restore_to_path};
use sha2::{Digest as _, Sha256};

use crate::Failure;
use crate::backup::{self, DigestArg, Format};
use crate::interrupt::Stop;
use crate::progress::{self, mb_per_s};
use crate::restore;

/// Arguments of `cairn demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// The sample image's size (K, M, G suffixes).
    #[arg(long, value_parser = backup::parse_size, default_value = "256M")]
    size: u64,
    /// Keep the sample, stores, indexes and restored images in this folder (created).
    #[arg(long)]
    keep: Option<PathBuf>,
}

const SEGMENT: usize = 4 << 20;

struct Xorshift(u64);

impl Xorshift {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Writes the deterministic sample: 4 MiB segments that are random (40%), copies of one of
/// eight earlier blocks (30%, so they deduplicate), or zeros (30%). Returns its SHA-256.
fn write_sample(path: &Path, size: u64) -> std::io::Result<[u8; 32]> {
    let mut out = BufWriter::with_capacity(4 << 20, File::create(path)?);
    let mut hasher = Sha256::new();
    let mut blocks = vec![vec![0u8; SEGMENT]; 8];
    for (i, block) in blocks.iter_mut().enumerate() {
        Xorshift(0xb10c_0000 + i as u64).fill(block);
    }
    let mut random = Xorshift(0x5eed_cafe_f00d_d00d);
    let mut segment = vec![0u8; SEGMENT];
    let mut written = 0u64;
    let mut index = 0u64;
    while written < size {
        let choice = (index.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) % 10;
        let piece: &[u8] = match choice {
            0..=3 => {
                random.fill(&mut segment);
                &segment
            }
            4..=6 => &blocks[(index % 8) as usize],
            _ => {
                segment.fill(0);
                &segment
            }
        };
        let take = usize::try_from((size - written).min(SEGMENT as u64)).unwrap_or(SEGMENT);
        out.write_all(&piece[..take])?;
        hasher.update(&piece[..take]);
        written += take as u64;
        index += 1;
    }
    out.flush()?;
    Ok(hasher.finalize().into())
}

fn sha256_of(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// Removes the demo folder unless it is kept.
struct Workspace {
    path: PathBuf,
    keep: bool,
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn io(what: &Path) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| Failure::data(format!("{}: {e}", what.display()))
}

/// Runs blocking file work off the async workers.
async fn off_workers<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Failure::data(format!("a file task failed: {e}")))?
}

/// One store the demo backs the sample up into, and the index it writes there.
struct Target {
    name: &'static str,
    store: Arc<dyn ChunkStore>,
    index: PathBuf,
    format: Format,
}

/// Runs `cairn demo`.
pub(crate) async fn run(args: &DemoArgs, quiet: bool, stop: &Stop) -> Result<(), Failure> {
    let started = Instant::now();
    let workspace = match &args.keep {
        Some(dir) => Workspace {
            path: dir.clone(),
            keep: true,
        },
        None => Workspace {
            path: std::env::temp_dir().join(format!("cairn-demo-{}", std::process::id())),
            keep: false,
        },
    };
    let dir = workspace.path.clone();
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let say = |line: String| {
        if !quiet {
            println!("{line}");
        }
    };
    say(format!("cairn demo in {}", dir.display()));
    let (image, expected) = make_sample(&dir, args.size, &say).await?;
    let targets = stores(&dir)?;
    for target in &targets {
        back_up(target, &image, args.size, quiet, stop, &say).await?;
    }
    for target in &targets {
        restore_and_check(target, &dir, args.size, &expected, quiet, stop, &say).await?;
    }
    random_reads(&targets[0], &say).await?;
    say(format!(
        "done in {:.1} s{}",
        started.elapsed().as_secs_f64(),
        if workspace.keep {
            format!("; files kept in {}", dir.display())
        } else {
            String::new()
        }
    ));
    Ok(())
}

/// Step 1, the sample image, written (and hashed) off the async workers.
async fn make_sample(
    dir: &Path,
    size: u64,
    say: &impl Fn(String),
) -> Result<(PathBuf, [u8; 32]), Failure> {
    let image = dir.join("sample.img");
    let t = Instant::now();
    let path = image.clone();
    let expected = off_workers(move || write_sample(&path, size).map_err(io(&path))).await?;
    say(format!(
        "  sample image      {} MiB (random, repeated and zero regions), sha256 {}…, made in {:.1} s",
        size >> 20,
        &to_hex(&expected)[..16],
        t.elapsed().as_secs_f64()
    ));
    Ok((image, expected))
}

/// The two stores: a PBS datastore (fidx) and a casync store (caibx).
fn stores(dir: &Path) -> Result<[Target; 2], Failure> {
    let pbs: Arc<dyn ChunkStore> =
        Arc::new(PbsDatastore::create(dir.join("pbs-datastore")).map_err(Failure::error)?);
    let castr: Arc<dyn ChunkStore> =
        Arc::new(CastrStore::create(dir.join("store.castr")).map_err(Failure::error)?);
    Ok([
        Target {
            name: "PBS datastore, fidx",
            store: pbs,
            index: dir.join("sample.fidx"),
            format: Format::Fidx,
        },
        Target {
            name: "casync store, caibx",
            store: castr,
            index: dir.join("sample.caibx"),
            format: Format::Caibx,
        },
    ])
}

/// Step 2, back the sample up into one store.
async fn back_up(
    target: &Target,
    image: &Path,
    size: u64,
    quiet: bool,
    stop: &Stop,
    say: &impl Fn(String),
) -> Result<(), Failure> {
    let bar = progress::bytes(size, "backup", quiet);
    let layout = backup::layout(target.format, None, DigestArg::Sha512_256);
    let source = ChunkSource::new(Arc::clone(&target.store), layout.digest_algorithm());
    let summary = backup::backup(&source, image, &target.index, layout, &bar, stop).await?;
    bar.finish_and_clear();
    say(format!(
        "  backup → {:<20} {:>5.0} MB/s, {} chunks, {} unique, dedup ratio {:.2}",
        target.name,
        mb_per_s(summary.size, summary.seconds),
        summary.chunks,
        summary.unique_chunks,
        summary.dedup_ratio()
    ));
    Ok(())
}

/// Step 3, restore one backup through the reader and compare it with the sample.
async fn restore_and_check(
    target: &Target,
    dir: &Path,
    size: u64,
    expected: &[u8; 32],
    quiet: bool,
    stop: &Stop,
    say: &impl Fn(String),
) -> Result<(), Failure> {
    let index: Arc<dyn ChunkIndex> = Arc::new(Index::open(&target.index).map_err(Failure::error)?);
    let reader = ChunkReader::new(index, Arc::clone(&target.store), ReaderOptions::default());
    let extension = target
        .index
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("img");
    let output = dir.join(format!("restored-{extension}.img"));
    let bar = progress::bytes(size, "restore", quiet);
    let progress = |bytes| bar.inc(bytes);
    let t = Instant::now();
    restore_to_path(
        &reader,
        &output,
        RestoreOptions::default(),
        &progress,
        stop.token(),
    )
    .await
    .map_err(restore::failure)?;
    let seconds = t.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let path = output.clone();
    let actual = off_workers(move || sha256_of(&path).map_err(io(&path))).await?;
    let ok = actual == *expected;
    say(format!(
        "  restore ← {:<20} {:>5.0} MB/s, sha256 {}",
        target.name,
        mb_per_s(size, seconds),
        if ok { "matches" } else { "DIFFERS" }
    ));
    if !ok {
        return Err(Failure::data(format!(
            "{}: restored image differs from the sample (sha256 {})",
            output.display(),
            to_hex(&actual)
        )));
    }
    Ok(())
}

/// Step 4, random reads from many tasks: first cold (concurrent readers of one chunk share
/// its fetch), then on a warm cache.
async fn random_reads(target: &Target, say: &impl Fn(String)) -> Result<(), Failure> {
    let index: Arc<dyn ChunkIndex> = Arc::new(Index::open(&target.index).map_err(Failure::error)?);
    let reader = ChunkReader::new(
        index,
        Arc::clone(&target.store),
        ReaderOptions::default()
            .cache_bytes(1 << 30)
            .readahead_chunks(0),
    );
    let t = Instant::now();
    read_randomly(&reader, 1).await?;
    let cold = t.elapsed().as_secs_f64();
    let cold_stats = reader.stats();
    let t = Instant::now();
    read_randomly(&reader, 2).await?;
    let warm = t.elapsed().as_secs_f64();
    let stats = reader.stats();
    let reads = TASKS * READS_PER_TASK;
    #[allow(clippy::cast_precision_loss)]
    let rate = |seconds: f64| reads as f64 / seconds.max(1e-9);
    say(format!(
        "  random reads      {TASKS} tasks × {READS_PER_TASK} reads of {READ_LEN} B: cold {:.0} reads/s, warm {:.0} reads/s ({:.0} MB/s)",
        rate(cold),
        rate(warm),
        mb_per_s(reads * READ_LEN as u64, warm)
    ));
    let warm_hits = stats.cache.hits - cold_stats.cache.hits;
    let warm_lookups = warm_hits
        + (stats.cache.misses - cold_stats.cache.misses)
        + (stats.cache.coalesced - cold_stats.cache.coalesced);
    #[allow(clippy::cast_precision_loss)]
    let warm_ratio = warm_hits as f64 / warm_lookups.max(1) as f64;
    say(format!(
        "  cache             {} hits, {} misses (fetches), {} coalesced waits, {} zero-chunk reads skipped; warm hit ratio {:.3}",
        stats.cache.hits, stats.cache.misses, stats.cache.coalesced, stats.zero_chunks, warm_ratio
    ));
    Ok(())
}

const TASKS: u64 = 64;
const READS_PER_TASK: u64 = 4000;
const READ_LEN: usize = 4096;

/// [`TASKS`] tasks of [`READS_PER_TASK`] reads each at offsets drawn from `seed`.
async fn read_randomly(reader: &ChunkReader, seed: u64) -> Result<(), Failure> {
    let size = reader.image_size().max(1);
    let handles: Vec<_> = (0..TASKS)
        .map(|t| {
            let reader = reader.clone();
            tokio::spawn(async move {
                let mut state = (seed ^ t).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut buf = vec![0u8; READ_LEN];
                for _ in 0..READS_PER_TASK {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    reader.read_at(&mut buf, state % size).await?;
                }
                Ok::<_, cairn_reader::ReaderError>(())
            })
        })
        .collect();
    for handle in handles {
        handle
            .await
            .map_err(|e| Failure::data(format!("a reader task failed: {e}")))?
            .map_err(Failure::error)?;
    }
    Ok(())
}
