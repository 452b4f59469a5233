//! The in-process measurements of `cargo xtask bench`, which drives this program and reads the
//! one JSON line each command prints on standard output:
//!
//! - `limit STORE INDEX`: the restore limit. Every unique non-zero chunk of INDEX is read from
//!   STORE into memory first (not timed); then all cores decode and verify them (digest and
//!   length), writing nothing. `mbps` is the image's size over that time: no restore of the
//!   image can beat it without skipping work a restore must do.
//! - `limit STORE INDEX --write FILE`: the same, and each decoded chunk is written at every
//!   offset the image holds it, into FILE made the image's size (zero chunks left as holes):
//!   what a restore to FILE must do at least, without reading a chunk file or any bookkeeping.
//! - `random STORE INDEX --tasks N --reads M [--warm] [--cache-size BYTES]`: M random 4 KiB
//!   `read_at` calls, 4 KiB aligned, over N concurrent tasks on a two-thread runtime. Warm: every
//!   chunk was read into a cache big enough for all of them before the clock starts. Cold: an
//!   empty cache of the given capacity (default 256 MiB).
//! - `s3-serve ROOT`: an S3 server (s3s over the folder ROOT, a bucket per subfolder, access key
//!   `bench`, secret `bench-secret`) on 127.0.0.1; prints its endpoint and serves until its
//!   standard input closes.
//!
//! STORE is a PBS datastore (a folder with `.chunks`) or a casync store.
//!
//! `cargo run --release -p cairn --example bench_probe -- limit target/bench/data/pbs-datastore
//! target/bench/data/sample.fidx`

#![allow(clippy::print_stdout, clippy::print_stderr)] // a measurement tool speaks on stdout

use std::collections::HashMap;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use cairn_chunk_store::{
    CastrStore, ChunkSource, ChunkStore, EncodedChunk, PbsDatastore, decode_chunk,
};
use cairn_index::{ChunkIndex, Index};
use cairn_reader::{ChunkReader, ReaderOptions, chunk_cache};

#[path = "../../chunk-store/tests/support/s3_server.rs"]
mod s3_server;
use s3_server::serve_s3;

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("limit") if args.len() == 3 => limit(Path::new(&args[1]), Path::new(&args[2]), None),
        Some("limit") if args.len() == 5 && args[3] == "--write" => limit(
            Path::new(&args[1]),
            Path::new(&args[2]),
            Some(Path::new(&args[4])),
        ),
        Some("random") if args.len() >= 3 => random(&args[1..]),
        Some("s3-serve") if args.len() == 2 => s3_serve(Path::new(&args[1])),
        _ => Err(
            "usage: bench_probe limit STORE INDEX [--write FILE] | random STORE INDEX --tasks N --reads M \
                  [--warm] [--cache-size BYTES] | s3-serve ROOT"
                .into(),
        ),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench_probe: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn open_store(path: &Path) -> Result<Arc<dyn ChunkStore>, Failure> {
    Ok(if path.join(".chunks").is_dir() {
        Arc::new(PbsDatastore::open(path)?)
    } else {
        Arc::new(CastrStore::open(path)?)
    })
}

fn open(store: &Path, index: &Path, cache_bytes: u64) -> Result<ChunkReader, Failure> {
    let index: Arc<dyn ChunkIndex> = Arc::new(Index::open(index)?);
    let options = ReaderOptions::default().cache_bytes(cache_bytes);
    let source = ChunkSource::new(open_store(store)?, index.digest_algorithm());
    Ok(ChunkReader::with_source(
        index,
        source,
        chunk_cache(cache_bytes),
        options,
    ))
}

/// `limit STORE INDEX [--write FILE]`.
fn limit(store_path: &Path, index_path: &Path, output: Option<&Path>) -> Result<(), Failure> {
    let reader = open(store_path, index_path, 0)?;
    let store = open_store(store_path)?;
    let index = Arc::clone(reader.index());
    let algorithm = index.digest_algorithm();
    // Each unique non-zero chunk with its length and every offset it is at.
    let mut at: HashMap<cairn_index::Digest, usize> = HashMap::new();
    let mut zero_chunks = 0u64;
    let mut wanted: Vec<(cairn_index::Digest, usize, Vec<u64>)> = Vec::new();
    for chunk in index.chunks() {
        if reader.is_zero_chunk(&chunk) {
            zero_chunks += 1;
        } else if let Some(&i) = at.get(&chunk.digest) {
            wanted[i].2.push(chunk.start);
        } else {
            at.insert(chunk.digest, wanted.len());
            wanted.push((
                chunk.digest,
                usize::try_from(chunk.len())?,
                vec![chunk.start],
            ));
        }
    }
    let encoded: Vec<(cairn_index::Digest, usize, Vec<u64>, EncodedChunk)> =
        runtime()?.block_on(async {
            let mut encoded = Vec::with_capacity(wanted.len());
            for (digest, len, offsets) in wanted {
                let chunk = store.get(&digest).await?;
                encoded.push((digest, len, offsets, chunk));
            }
            Ok::<_, Failure>(encoded)
        })?;
    let file = match output {
        Some(path) => {
            let file = std::fs::File::create(path)?;
            file.set_len(index.image_size())?;
            Some(file)
        }
        None => None,
    };
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let checked: Result<u64, String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut bytes = 0u64;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((digest, len, offsets, chunk)) = encoded.get(i) else {
                            return Ok(bytes);
                        };
                        let plain = decode_chunk(chunk, *len).map_err(|e| e.to_string())?;
                        if plain.len() != *len || algorithm.digest(&plain) != *digest {
                            return Err(format!("chunk {i} does not verify"));
                        }
                        if let Some(file) = &file {
                            for &offset in offsets {
                                file.write_all_at(&plain, offset)
                                    .map_err(|e| e.to_string())?;
                            }
                        }
                        bytes += plain.len() as u64;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().map_err(|_| "a worker panicked".to_owned())?)
            .sum()
    });
    let unique_bytes = checked?;
    let seconds = started.elapsed().as_secs_f64();
    let image = index.image_size();
    println!(
        "{}",
        serde_json::json!({
            "image_bytes": image,
            "unique_chunks": encoded.len(),
            "unique_bytes": unique_bytes,
            "zero_chunks": zero_chunks,
            "threads": threads,
            "written": output.is_some(),
            "digest": algorithm.name(),
            "seconds": seconds,
            "mbps": image as f64 / seconds / 1e6,
        })
    );
    Ok(())
}

/// `random STORE INDEX --tasks N --reads M [--warm] [--cache-size BYTES]`.
fn random(args: &[String]) -> Result<(), Failure> {
    let (store, index) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let (mut tasks, mut reads, mut warm, mut cache_bytes) =
        (1usize, 100_000usize, false, 256 << 20);
    let mut rest = args[2..].iter();
    while let Some(arg) = rest.next() {
        let mut value = || rest.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--tasks" => tasks = value()?.parse()?,
            "--reads" => reads = value()?.parse()?,
            "--cache-size" => cache_bytes = value()?.parse()?,
            "--warm" => warm = true,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let tasks = tasks.max(1);
    runtime()?.block_on(async move {
        let probe = open(&store, &index, 0)?;
        let image = probe.image_size();
        if warm {
            // Room for every chunk, however often the image repeats one.
            cache_bytes = cache_bytes.max(image + (64 << 20));
        }
        let reader = open(&store, &index, cache_bytes)?;
        if warm {
            for i in 0..reader.index().chunk_count() {
                reader.chunk(i).await?;
            }
        }
        let blocks = (image / 4096).max(1);
        let per_task = reads.div_ceil(tasks);
        let started = Instant::now();
        let mut handles = Vec::with_capacity(tasks);
        for task in 0..tasks {
            let reader = reader.clone();
            handles.push(tokio::spawn(async move {
                let mut state = 0x9e37_79b9_7f4a_7c15u64
                    ^ (task as u64 + 1).wrapping_mul(0xff51_afd7_ed55_8ccd);
                let mut buf = vec![0u8; 4096];
                let mut sum = 0u64;
                for _ in 0..per_task {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let read = reader.read_at(&mut buf, (state % blocks) * 4096).await?;
                    sum = sum.wrapping_add(u64::from(buf[read / 2]));
                }
                Ok::<u64, cairn_reader::ReaderError>(sum)
            }));
        }
        let mut checksum = 0u64;
        for handle in handles {
            checksum = checksum.wrapping_add(handle.await??);
        }
        let seconds = started.elapsed().as_secs_f64();
        let done = per_task * tasks;
        let stats = reader.stats();
        println!(
            "{}",
            serde_json::json!({
                "tasks": tasks,
                "reads": done,
                "warm": warm,
                "cache_bytes": cache_bytes,
                "seconds": seconds,
                "reads_per_s": done as f64 / seconds,
                "chunks_fetched": stats.chunks_fetched,
                "checksum": checksum,
            })
        );
        Ok(())
    })
}

/// `s3-serve ROOT`.
fn s3_serve(root: &Path) -> Result<(), Failure> {
    let runtime = runtime()?;
    let endpoint = runtime.block_on(serve_s3(root, "bench", "bench-secret"))?;
    println!("{endpoint}");
    // Serve until whoever started us closes our standard input.
    let mut sink = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)?;
    Ok(())
}
