//! `cairn verify`: every chunk of one or more indexes present, decodable, of the right digest and
//! length; a report of every bad chunk and the bytes it covers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use cairn_chunk_store::{ChunkSource, CodecError, StoreError, to_hex};
use cairn_index::{ChunkIndex, Digest, Index};
use futures_util::StreamExt as _;
use futures_util::stream;
use serde_json::json;

use crate::Failure;
use crate::interrupt::Stop;
use crate::progress;
use crate::store::StoreSpec;

/// Chunks verified at once.
const VERIFY_CONCURRENCY: usize = 8;

/// Arguments of `cairn verify`.
#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// The store: pbs:PATH, castr:PATH or a PATH.
    #[arg(long, value_parser = StoreSpec::parse)]
    store: StoreSpec,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// The indexes to verify.
    #[arg(required = true)]
    indexes: Vec<PathBuf>,
}

fn kind(error: &StoreError) -> &'static str {
    match error {
        StoreError::Missing { .. } => "missing",
        StoreError::Read { .. } => "unreadable",
        StoreError::LengthMismatch { .. } => "wrong-length",
        // Decoding stopped at the length the index gives: the chunk is longer than that.
        StoreError::Corrupt {
            source:
                CodecError::TooLarge {
                    what: "decoded chunk",
                    ..
                },
            ..
        } => "wrong-length",
        StoreError::DigestMismatch { .. } => "wrong-digest",
        _ => "corrupt",
    }
}

/// Runs `cairn verify`.
pub(crate) async fn run(args: &VerifyArgs, quiet: bool, stop: &Stop) -> Result<(), Failure> {
    let store = args.store.open()?;
    let mut reports = Vec::new();
    let mut bad_total = 0usize;
    for path in &args.indexes {
        let index = Index::open(path).map_err(Failure::error)?;
        let source = ChunkSource::new(Arc::clone(&store), index.digest_algorithm());
        // Every (digest, length) pair is checked: an index that gives one digest two lengths
        // has one of them wrong, and a restore would fail on it.
        let mut unique: HashMap<(Digest, u64), Vec<(u64, u64)>> = HashMap::new();
        for chunk in index.chunks() {
            unique
                .entry((chunk.digest, chunk.len()))
                .or_default()
                .push((chunk.start, chunk.end));
        }
        let bar = progress::bytes(index.image_size(), "verify", quiet || args.json);
        let checks = unique.iter().map(|((digest, len), ranges)| {
            let (source, stop) = (source.clone(), stop.clone());
            let covered: u64 = ranges.iter().map(|(s, e)| e - s).sum();
            async move {
                if stop.is_stopped() {
                    return None;
                }
                let len = usize::try_from(*len).unwrap_or(usize::MAX);
                let error = tokio::select! {
                    read = source.read(digest, len) => read.err(),
                    () = stop.stopped() => return None,
                };
                Some((digest, ranges, covered, error))
            }
        });
        let mut results = stream::iter(checks).buffer_unordered(VERIFY_CONCURRENCY);
        let mut bad = Vec::new();
        while let Some(result) = results.next().await {
            let Some((digest, ranges, covered, error)) = result else {
                continue;
            };
            bar.inc(covered);
            if let Some(error) = error {
                bad.push((*digest, ranges.clone(), error));
            }
        }
        if stop.is_stopped() {
            return Err(Failure::interrupted(format!(
                "{}: verification stopped before it checked every chunk",
                path.display()
            )));
        }
        bar.finish_and_clear();
        bad.sort_by_key(|(_, ranges, _)| ranges.first().copied());
        bad_total += bad.len();
        reports.push((path.clone(), index.chunk_count(), unique.len(), bad));
    }
    if args.json {
        let value = json!({
            "ok": bad_total == 0,
            "indexes": reports.iter().map(|(path, chunks, unique, bad)| json!({
                "index": path.display().to_string(),
                "chunks": chunks,
                "unique_chunks": unique,
                "bad_chunks": bad.iter().map(|(digest, ranges, error)| json!({
                    "digest": to_hex(digest),
                    "problem": kind(error),
                    "error": crate::chain(error),
                    "ranges": ranges.iter().map(|(s, e)| json!([s, e])).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        println!("{value}");
    } else {
        for (path, chunks, unique, bad) in &reports {
            if bad.is_empty() {
                println!("{}: ok ({chunks} chunks, {unique} unique)", path.display());
            } else {
                println!(
                    "{}: {} bad of {unique} unique chunks",
                    path.display(),
                    bad.len()
                );
                // The error names the chunk's digest, its store and where it is.
                for (_, ranges, error) in bad {
                    let spans: Vec<String> =
                        ranges.iter().map(|(s, e)| format!("{s}..{e}")).collect();
                    println!(
                        "  {} (image bytes {}): {}",
                        kind(error),
                        spans.join(", "),
                        crate::chain(error)
                    );
                }
            }
        }
    }
    if bad_total > 0 {
        return Err(Failure::data(format!(
            "verification failed: {bad_total} bad chunks"
        )));
    }
    Ok(())
}
